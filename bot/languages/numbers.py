"""Numbers read the Indian way, before every TTS, cloud or offline.

Offline voices drop ``₹`` and read a mobile number as crores (indian-languages.md §4), and no
cloud voice is known to group a phone number the way an Indian caller expects, so text is
rewritten in words first: amounts in lakh and crore, phone numbers digit by digit in the groups
people say them in (98765 43210 -> "nine eight seven six five, four three two one zero"),
OTPs and PINs digit by digit, dates and times, and the remaining numbers as words.

Words come from maintained libraries: ``num2words`` ``lang="en_IN"`` (lakh/crore) for English
and ``indic-numtowords`` for Hindi (num2words has no Hindi). num2words' own currency mode is
not used: on en_IN it defaults to euros and reads an int as paise, so rupees and paise are
read as two cardinals here. Only the words around the numbers (rupees/रुपये, month names,
"बजे") are ours. Languages without reviewed words here (ta, te, bn, mr, kn) pass through
unchanged: Sarvam's and Cartesia's voices normalise those themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from indic_numtowords import num2words as indic_words
from num2words import num2words

# Between a word character (Latin or Devanagari, matras included: Python's \b splits
# Devanagari words at their vowel signs) and anything else.
_W = r"A-Za-z0-9\u0900-\u0963\u0966-\u097F"
_START = rf"(?<![{_W}])"
_END = rf"(?![{_W}])"
_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")

EN_MONTHS = (
    "January February March April May June July August September October November December"
).split()
HI_MONTHS = "जनवरी फ़रवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर".split()

# An amount: Indian (1,50,000) or Western (150,000) grouping, or none, and up to 2 decimals.
_AMOUNT = r"(?P<amt>\d{1,3}(?:,\d{2,3})+|\d+)(?P<dec>\.\d{1,2})?"
_SCALE = r"(?:\s?(?P<scale>lakhs?|crores?|लाख|करोड़))?"
_RUPEE_BEFORE = re.compile(rf"(?:₹|{_START}(?:Rs\.?|INR|रु\.?))\s?{_AMOUNT}{_SCALE}{_END}")
_RUPEE_AFTER = re.compile(
    rf"{_START}{_AMOUNT}{_SCALE}\s?(?:rupees?|rs\.?|रुपये|रुपए|रुपया){_END}", re.IGNORECASE
)
_OTP = re.compile(
    rf"{_START}(?P<key>OTP|PIN|code|passcode|ओटीपी|पिन|कोड)(?P<gap>[^\d\n]{{0,15}}?)"
    rf"(?P<digits>\d{{4,6}}){_END}",
    re.IGNORECASE,
)
# +91 98765 43210, 098765-43210, 9876543210: a 10-digit mobile starts with 6-9.
_MOBILE = re.compile(
    rf"(?<![\d+])(?P<cc>\+91[\s-]?|0)?(?P<a>[6-9]\d{{4}})[\s-]?(?P<b>\d{{5}}){_END}"
)
# 080 2345 6789, 011-23456789: an STD code with 0, then the subscriber number as written.
_LANDLINE = re.compile(
    rf"(?<![\d+])(?P<std>0\d{{2,4}})[\s-](?P<a>\d{{3,4}})[\s-]?(?P<b>\d{{4}}){_END}"
)
_TOLL_FREE = re.compile(rf"(?<!\d)1800[\s-]?(?P<a>\d{{3}})[\s-]?(?P<b>\d{{3,4}}){_END}")
_DATE_DMY = re.compile(r"(?<!\d)(?P<d>\d{1,2})[/.-](?P<m>\d{1,2})[/.-](?P<y>\d{4})(?!\d)")
_DATE_ISO = re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)")
_MERIDIEM = r"\s?(?P<mer>[ap]\.?m\.?)"
# A Hindi part of the day already written before the time ("शाम 5 PM") is not said twice.
_DAYPART = r"(?:(?P<part>सुबह|दोपहर|शाम|रात)\s)?"
_TIME = re.compile(
    rf"{_DAYPART}(?<!\d)(?P<h>\d{{1,2}}):(?P<min>\d{{2}})(?:{_MERIDIEM})?(?:\s?बजे)?{_END}",
    re.IGNORECASE,
)
_HOUR = re.compile(rf"{_DAYPART}(?<!\d)(?P<h>\d{{1,2}}){_MERIDIEM}{_END}(?:\s?बजे)?", re.IGNORECASE)
_ORDINAL = re.compile(r"(?<!\d)(?P<n>\d+)(?:st|nd|rd|th)" + _END, re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\d,.])(?P<n>\d+(?:\.\d+)?)\s?%")
# A code mixing letters and digits (an order "A123", a vehicle "KA01AB1234"): read as written,
# its digits one by one ("A one two three"), never as a number glued to a letter.
_CODE = re.compile(r"(?<!\w)(?=[^\W\d_]*\d)(?=\d*[^\W\d_])[^\W_]+(?!\w)")
_CODE_PART = re.compile(r"\d+|[^\W\d_]+")
_LONG_DIGITS = re.compile(r"(?<![\d,.])\d{7,}(?![\d,])")
_NUMBER = re.compile(r"(?<![\d,.])(?P<int>\d{1,3}(?:,\d{2,3})+|\d+)(?P<dec>\.\d+)?(?![\d,])")


def cardinal(n: int, language: str) -> str:
    """``n`` in words: lakh and crore in both languages, no commas (they would be pauses)."""
    if language == "hi-IN":
        return indic_words(n, lang="hi")
    return num2words(n, lang="en_IN").replace(",", "")


def digit_words(digits: str, language: str) -> str:
    """Each digit as a word: "4821" -> "four eight two one" / "चार आठ दो एक"."""
    return " ".join(cardinal(int(c), language) for c in digits if c.isdigit())


def _code(code: str, language: str) -> str:
    parts = _CODE_PART.findall(code)
    return " ".join(digit_words(p, language) if p[0].isdigit() else p for p in parts)


def _decimal(fraction: str, language: str) -> str:
    point = "दशमलव" if language == "hi-IN" else "point"
    return f"{point} {digit_words(fraction, language)}"


def _number(integer: str, fraction: str | None, language: str) -> str:
    words = cardinal(int(integer.replace(",", "")), language)
    return f"{words} {_decimal(fraction.lstrip('.'), language)}" if fraction else words


def _money(m: re.Match, language: str) -> str:
    rupees = int(m["amt"].replace(",", ""))
    scale = m["scale"]
    hindi = language == "hi-IN"
    if scale:  # "₹5 lakh", "₹1.5 crore": the scale word stays, the number is read as is
        number = _number(m["amt"], m["dec"], language)
        word = {"lakh": "लाख", "crore": "करोड़"}.get(scale.lower().rstrip("s"), scale)
        return f"{number} {word if hindi else scale.lower().rstrip('s')} " + (
            "रुपये" if hindi else "rupees"
        )
    words = cardinal(rupees, language) + (" रुपये" if hindi else " rupees")
    if rupees == 1 and not hindi:
        words = words[:-1]
    paise = int(m["dec"][1:].ljust(2, "0")) if m["dec"] else 0
    if paise:
        joiner, unit = ("और", "पैसे") if hindi else ("and", "paise")
        words += f" {joiner} {cardinal(paise, language)} {unit}"
    return words


def _phone(groups: list[str], language: str) -> str:
    return ", ".join(digit_words(g, language) for g in groups if g)


def _mobile(m: re.Match, language: str) -> str:
    cc = (m["cc"] or "").strip(" -")
    prefix = ""
    if cc == "+91":
        prefix = ("प्लस " if language == "hi-IN" else "plus ") + digit_words("91", language)
    elif cc == "0":
        prefix = digit_words("0", language)
    return ", ".join(p for p in (prefix, _phone([m["a"], m["b"]], language)) if p)


def _toll_free(m: re.Match, language: str) -> str:
    # "one eight hundred" is how Indian English says 1800; Hindi reads it digit by digit.
    head = digit_words("1800", language) if language == "hi-IN" else "one eight hundred"
    return ", ".join([head, digit_words(m["a"], language), digit_words(m["b"], language)])


def _date(m: re.Match, language: str) -> str:
    day, month, year = int(m["d"]), int(m["m"]), int(m["y"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)  # not a date; the plain-number pass reads its parts
    if language == "hi-IN":
        return f"{cardinal(day, language)} {HI_MONTHS[month - 1]} {cardinal(year, language)}"
    ordinal = num2words(day, lang="en_IN", to="ordinal")
    return f"{ordinal} {EN_MONTHS[month - 1]} {num2words(year, lang='en_IN', to='year')}"


def _hindi_daypart(hour24: int) -> str:
    if 4 <= hour24 < 12:
        return "सुबह"
    if 12 <= hour24 < 16:
        return "दोपहर"
    if 16 <= hour24 < 19:
        return "शाम"
    return "रात"


def _clock(
    hour: int, minute: int, meridiem: str | None, language: str, part: str | None = None
) -> str | None:
    if not (0 <= minute < 60) or not (0 <= hour < 24) or (meridiem and not 1 <= hour <= 12):
        return None
    mer = meridiem.lower().replace(".", "") if meridiem else None
    if language == "hi-IN":
        hour24 = hour % 12 + (12 if mer == "pm" else 0) if mer else hour
        spoken = hour24 % 12 or 12
        if minute == 0:
            words = f"{cardinal(spoken, language)} बजे"
        elif minute == 30 and spoken in (1, 2):
            words = ("डेढ़" if spoken == 1 else "ढाई") + " बजे"
        elif minute == 30:
            words = f"साढ़े {cardinal(spoken, language)} बजे"
        else:
            words = f"{cardinal(spoken, language)} बजकर {cardinal(minute, language)} मिनट"
        if part or mer:
            return f"{part or _hindi_daypart(hour24)} {words}"
        return words
    words = cardinal(hour, language)
    if minute == 0:
        words += "" if mer else " o'clock"
    elif minute < 10:
        words += f" oh {cardinal(minute, language)}"
    else:
        words += f" {cardinal(minute, language)}"
    words = f"{words} {'A M' if mer == 'am' else 'P M'}" if mer else words
    return f"{part} {words}" if part else words


def _time(m: re.Match, language: str) -> str:
    minute = int(m["min"]) if "min" in m.groupdict() else 0
    spoken = _clock(int(m["h"]), minute, m["mer"], language, m["part"])
    return m.group(0) if spoken is None else spoken


def _otp(m: re.Match, language: str) -> str:
    return f"{m['key']}{m['gap']}{digit_words(m['digits'], language)}"


def _ordinal(m: re.Match, language: str) -> str:
    if language == "hi-IN":
        return cardinal(int(m["n"]), language)
    return num2words(int(m["n"]), lang="en_IN", to="ordinal")


def _percent(m: re.Match, language: str) -> str:
    integer, _, fraction = m["n"].partition(".")
    return f"{_number(integer, fraction or None, language)} " + (
        "प्रतिशत" if language == "hi-IN" else "percent"
    )


# In this order: money before phone numbers (₹9876543210 is an amount), phone numbers and
# OTPs before dates and times, and plain numbers last.
_RULES: tuple[tuple[re.Pattern, Callable[[re.Match, str], str]], ...] = (
    (_RUPEE_BEFORE, _money),
    (_RUPEE_AFTER, _money),
    (_OTP, _otp),
    (_TOLL_FREE, _toll_free),
    (_MOBILE, _mobile),
    (_LANDLINE, lambda m, lang: _phone([m["std"], m["a"], m["b"]], lang)),
    (_DATE_DMY, _date),
    (_DATE_ISO, _date),
    (_TIME, _time),
    (_HOUR, _time),
    (_PERCENT, _percent),
    (_ORDINAL, _ordinal),
    (_CODE, lambda m, lang: _code(m.group(0), lang)),
    # Seven digits or more without grouping are ids (order, account): digit by digit.
    (_LONG_DIGITS, lambda m, lang: digit_words(m.group(0), lang)),
    (_NUMBER, lambda m, lang: _number(m["int"], m["dec"], lang)),
)

SPOKEN_NUMBER_LANGUAGES = ("en-IN", "hi-IN")
_ANY_DIGIT = re.compile(r"\d")  # Unicode digits: Devanagari ones too


def normalise_for_speech(text: str, language: str) -> str:
    """``text`` with its numbers written as ``language`` speaks them (a full tag)."""
    # It runs on every sentence the bot says: one regex scan when there is nothing to read.
    if language not in SPOKEN_NUMBER_LANGUAGES or not _ANY_DIGIT.search(text):
        return text
    text = text.translate(_DEVANAGARI_DIGITS)
    for pattern, read in _RULES:
        text = pattern.sub(lambda m, read=read: read(m, language), text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()
