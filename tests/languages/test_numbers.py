"""Numbers read the Indian way: the case table the issue asks for (each expected string was
produced by num2words 0.5.14 / indic-numtowords 1.1.0 and checked by reading it)."""

import pytest

from bot.languages.numbers import cardinal, digit_words, normalise_for_speech

EN = [
    ("Your outstanding is ₹1,50,000", "Your outstanding is one lakh fifty thousand rupees"),
    ("Rs. 1500 only", "one thousand five hundred rupees only"),
    ("Rs 1500", "one thousand five hundred rupees"),
    ("1,50,000 rupees", "one lakh fifty thousand rupees"),
    ("INR 150,000", "one lakh fifty thousand rupees"),
    ("₹1", "one rupee"),
    ("₹5 lakh", "five lakh rupees"),
    (
        "Pay Rs. 2,499.50 by 15/03/2026",
        "Pay two thousand four hundred and ninety-nine rupees and fifty paise by fifteenth "
        "March twenty twenty-six",
    ),
    (
        "₹1,23,45,678",
        "one crore twenty-three lakh forty-five thousand six hundred and seventy-eight rupees",
    ),
    (
        "Call +91 98765 43210",
        "Call plus nine one, nine eight seven six five, four three two one zero",
    ),
    ("Call 9876543210 now", "Call nine eight seven six five, four three two one zero now"),
    ("Order A123 ships tomorrow.", "Order A one two three ships tomorrow."),
    ("Vehicle KA01AB1234", "Vehicle KA zero one AB one two three four"),
    ("Toll free 1800 123 4567", "Toll free one eight hundred, one two three, four five six seven"),
    ("call 080 2345 6789", "call zero eight zero, two three four five, six seven eight nine"),
    ("Your OTP is 482913", "Your OTP is four eight two nine one three"),
    ("PIN: 1234", "PIN: one two three four"),
    ("on 2026-05-12 at 10:30", "on twelfth May twenty twenty-six at ten thirty"),
    ("12/05/2026", "twelfth May twenty twenty-six"),
    ("at 5 PM", "at five P M"),
    ("at 10:05 am", "at ten oh five A M"),
    ("at 9:00", "at nine o'clock"),
    ("3 EMI left", "three EMI left"),
    ("order 12345678", "order one two three four five six seven eight"),
    ("18% GST", "eighteen percent GST"),
    ("the 1st of May", "the first of May"),
    ("2.5 kg", "two point five kg"),
    ("no numbers here", "no numbers here"),
]

HI = [
    ("आपका बकाया ₹1,50,000 है", "आपका बकाया एक लाख पचास हज़ार रुपये है"),
    ("1500 रुपये", "एक हज़ार पाँच सौ रुपये"),
    ("Rs. 1500", "एक हज़ार पाँच सौ रुपये"),
    (
        "₹2,499.50 का भुगतान 15/03/2026 तक करें",
        "दो हज़ार चार सौ निन्यानवे रुपये और पचास पैसे का भुगतान पंद्रह मार्च दो हज़ार छब्बीस तक करें",
    ),
    ("₹2 करोड़", "दो करोड़ रुपये"),
    ("मेरा नंबर 98765 43210 है", "मेरा नंबर नौ आठ सात छः पाँच, चार तीन दो एक शून्य है"),
    ("+91 9876543210 पर", "प्लस नौ एक, नौ आठ सात छः पाँच, चार तीन दो एक शून्य पर"),
    ("1800-209-1234", "एक आठ शून्य शून्य, दो शून्य नौ, एक दो तीन चार"),
    ("आपका ओटीपी 4821 है", "आपका ओटीपी चार आठ दो एक है"),
    ("PIN 560001", "PIN पाँच छः शून्य शून्य शून्य एक"),
    ("10:30 बजे आइए", "साढ़े दस बजे आइए"),
    ("1:30 बजे", "डेढ़ बजे"),
    ("2:30", "ढाई बजे"),
    ("10:15", "दस बजकर पंद्रह मिनट"),
    ("शाम 5 PM", "शाम पाँच बजे"),
    ("5 PM", "शाम पाँच बजे"),
    ("9 am", "सुबह नौ बजे"),
    ("3 EMI बाकी हैं", "तीन EMI बाकी हैं"),
    ("१२३ रुपये", "एक सौ तेईस रुपये"),
    ("12/05/2026", "बारह मई दो हज़ार छब्बीस"),
    ("2026-05-12", "बारह मई दो हज़ार छब्बीस"),
    ("18% ब्याज", "अट्ठारह प्रतिशत ब्याज"),
    ("2.5 किलो", "दो दशमलव पाँच किलो"),
]


@pytest.mark.parametrize(("text", "spoken"), EN)
def test_indian_english(text, spoken):
    assert normalise_for_speech(text, "en-IN") == spoken


@pytest.mark.parametrize(("text", "spoken"), HI)
def test_hindi(text, spoken):
    assert normalise_for_speech(text, "hi-IN") == spoken


def test_the_table_is_as_large_as_the_issue_asks():
    assert len(EN) + len(HI) >= 30


def test_languages_without_reviewed_words_pass_through():
    assert normalise_for_speech("₹1,50,000", "ta-IN") == "₹1,50,000"


def test_no_digit_is_left_for_the_voice():
    for text, _ in EN + HI:
        assert not any(c.isdigit() for c in normalise_for_speech(text, "hi-IN")), text


def test_an_impossible_date_is_read_as_numbers():
    assert normalise_for_speech("45/13/2026", "en-IN") == (
        "forty-five/thirteen/two thousand and twenty-six"
    )


def test_building_blocks():
    assert cardinal(100000000, "en-IN") == "ten crore"
    assert cardinal(12345678, "hi-IN") == "एक करोड़ तेईस लाख पैंतालीस हज़ार छः सौ अठहत्तर"
    assert digit_words("907", "en-IN") == "nine zero seven"
    assert digit_words("907", "hi-IN") == "नौ शून्य सात"
