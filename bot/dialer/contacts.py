"""Call lists: the campaign CSV and the do-not-call (DND) file.

Numbers are normalised to ``+91`` followed by the 10-digit national number. Accepted forms:
``+91XXXXXXXXXX``, ``91XXXXXXXXXX``, ``0091XXXXXXXXXX``, ``0XXXXXXXXXX`` (trunk prefix) and a
bare ``XXXXXXXXXX``; spaces, dots, dashes and brackets are ignored. Validation of the national
number:

* mobiles start with 6, 7, 8 or 9;
* geographic landlines (STD code + subscriber number, 10 digits) start with 1-5
  (Delhi is 11, Mumbai 22, Hyderabad 40; Bengaluru's 80 and Ahmedabad's 79 look like mobiles
  and are accepted as such);
* refused: the toll-free and shared-cost series (1800, 1860), the telemarketing and service
  series (140, 1600: those are callers, never callees), anything starting with 0, and
  numbers of another country (an Indian Exotel account dials Indian numbers).

A row with a bad number is reported with its line in the file (the header is line 1) and is
never dialled.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PHONE_COLUMN = "phone"
_SEPARATORS = re.compile(r"[\s().\-]")
_REFUSED_SERIES = {
    "1800": "a toll-free number",
    "1860": "a shared-cost number",
    "1600": "a service-call series number (1600xx), which only places calls",
    "140": "a telemarketing series number (140xx), which only places calls",
}


class InvalidNumber(ValueError):
    """A phone number that cannot be dialled; the message says why."""


def normalise_phone(raw: str) -> str:
    """``raw`` as ``+91XXXXXXXXXX``, or :class:`InvalidNumber` saying what is wrong."""
    text = _SEPARATORS.sub("", raw or "")
    if not text:
        raise InvalidNumber("no number")
    if text.startswith("+"):
        if not text.startswith("+91"):
            raise InvalidNumber(f"{raw!r} is not an Indian number (+91)")
        national = text[3:]
    elif text.startswith("0091"):
        national = text[4:]
    elif len(text) == 12 and text.startswith("91"):
        national = text[2:]
    elif len(text) == 11 and text.startswith("0"):
        national = text[1:]
    else:
        national = text
    if not national.isdigit():
        raise InvalidNumber(f"{raw!r} has characters other than digits")
    if len(national) != 10:
        raise InvalidNumber(f"{raw!r} has {len(national)} digits after +91; 10 are needed")
    for prefix, what in _REFUSED_SERIES.items():
        if national.startswith(prefix):
            raise InvalidNumber(f"{raw!r} is {what}")
    if national[0] == "0":
        raise InvalidNumber(f"{raw!r}: a national number cannot start with 0")
    return "+91" + national


@dataclass(frozen=True)
class Contact:
    """One dialable row: its position among the good rows, its file line, number and variables."""

    index: int
    line: int
    phone: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BadRow:
    """A row that will not be dialled, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ContactList:
    """The good rows of a call list and the rows refused."""

    contacts: list[Contact]
    bad_rows: list[BadRow]


class ContactFileError(ValueError):
    """The file as a whole cannot be used (missing ``phone`` column, unreadable)."""


def load_contacts(source: str | Path | io.TextIOBase) -> ContactList:
    """Read a campaign CSV from a path or an open text file.

    Columns other than ``phone`` become the contact's variables (empty cells stay empty
    strings). A number repeated in the file is dialled once: later rows are reported bad.
    """
    text = _read(source)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in (reader.fieldnames or [])]
    if PHONE_COLUMN not in header:
        raise ContactFileError(
            f"the CSV needs a {PHONE_COLUMN!r} column in its header line; found {header or 'none'}"
        )
    reader.fieldnames = header
    contacts: list[Contact] = []
    bad: list[BadRow] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num  # the line the row ended on: header = 1, first row = 2
        if None in row:
            bad.append(
                BadRow(line, f"{len(header) + len(row[None])} cells, header has {len(header)}")
            )
            continue
        try:
            phone = normalise_phone(row.get(PHONE_COLUMN) or "")
        except InvalidNumber as exc:
            bad.append(BadRow(line, str(exc)))
            continue
        if phone in seen:
            bad.append(BadRow(line, f"{phone} repeats line {seen[phone]}; it is dialled once"))
            continue
        seen[phone] = line
        variables = {
            key: (value or "").strip() for key, value in row.items() if key != PHONE_COLUMN
        }
        contacts.append(Contact(len(contacts), line, phone, variables))
    return ContactList(contacts, bad)


class DndFileError(ValueError):
    """A DND file has entries that are not numbers; dialling with a damaged list is refused."""


def load_dnd(source: str | Path | io.TextIOBase) -> frozenset[str]:
    """Numbers not to call: one per line, ``#`` starts a comment, blank lines ignored.

    An entry that is not a valid number is an error (with its line numbers), not a skip: a typo
    in a DND list is a person who asked not to be called.
    """
    numbers: set[str] = set()
    problems: list[str] = []
    for line_no, line in enumerate(_read(source).splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            numbers.add(normalise_phone(entry))
        except InvalidNumber as exc:
            problems.append(f"line {line_no}: {exc}")
    if problems:
        raise DndFileError("the DND file has entries that are not numbers: " + "; ".join(problems))
    return frozenset(numbers)


def describe_bad_rows(bad_rows: Iterable[BadRow]) -> list[str]:
    """One human line per refused row, for the CLI."""
    return [str(row) for row in bad_rows]


def _read(source: str | Path | io.TextIOBase) -> str:
    if isinstance(source, io.TextIOBase):
        return source.read()
    try:
        return Path(source).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ContactFileError(f"cannot read {source}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ContactFileError(f"{source} is not UTF-8 text: {exc}") from exc
