"""UTKFace file names: `[age]_[gender]_[race]_[datetime].jpg.chip.jpg` -> labels.

Only the three leading fields carry labels; the rest of the name varies in the real dump
(longer or shorter timestamps, a stray space, `...357jpg.chip.jpg` without the dot), so it is
accepted as it comes. A label field is ASCII digits only (`int()` would also read "٣٠", Arabic-Indic
30). Classes are race x gender: label = race_index * 2 + gender, with
race_index the position of the race in the requested `races`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RACE_NAMES = ("white", "black", "asian", "indian", "others")
GENDER_NAMES = ("male", "female")
DEFAULT_RACES = (0, 1, 2, 3)
MAX_AGE = 120

# Leading fields: digits separated by underscores, tolerating spaces around them.
_LEADING = re.compile(r"^\s*(?P<age>[^_]*?)\s*_\s*(?P<gender>[^_]*?)\s*_\s*(?P<race>[^_.]*?)\s*(?P<sep>[_.]|$)")
_IMAGE_SUFFIXES = ("jpg", "jpeg", "png")
# The common, canonical name: ASCII digits, no spaces. Whatever it matches, the lenient path below
# reads the same way; everything else goes there.
_CANONICAL = re.compile(r"([0-9]{1,3})_([01])_([0-4])_")


class NameError_(ValueError):
    """The name does not carry valid UTKFace labels; the message is the reason."""


@dataclass(frozen=True)
class Labels:
    age: int
    gender: int
    race: int


def looks_like_image_name(name: str) -> bool:
    """Files that should be UTKFace pictures; anything else in the folder is a stray file."""
    low = name.strip().lower()
    return not low.startswith(".") and low.endswith(_IMAGE_SUFFIXES)


def _field(name: str, text: str, lo: int, hi: int) -> int:
    if text == "":
        raise NameError_(f"missing {name} field")
    if not (text.isascii() and text.isdigit()):  # int() also reads Arabic-Indic and other digits
        hint = " (only ASCII digits 0-9 count)" if text.isdigit() else ""
        raise NameError_(f"{name} field {text!r} is not a number{hint}")
    if len(text.lstrip("0")) > len(str(hi)):  # before int(): Python refuses to read 4,300+ digits
        raise NameError_(f"{name} {text[:12]}{'...' if len(text) > 12 else ''} outside {lo}-{hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise NameError_(f"{name} {value} outside {lo}-{hi}")
    return value


def parse_name(name: str) -> Labels:
    """Labels from a UTKFace file name; raises NameError_ with the reason when they are not valid."""
    fast = _CANONICAL.match(name)
    if fast is not None and int(fast.group(1)) <= MAX_AGE:
        return Labels(age=int(fast.group(1)), gender=int(fast.group(2)), race=int(fast.group(3)))
    m = _LEADING.match(name)
    if not m:
        raise NameError_("name does not start with age_gender_race_ (missing field)")
    race_text = m.group("race")
    if m.group("sep") != "_" or len(race_text) > 2:
        # e.g. 39_1_20170116174525125.jpg.chip.jpg: the race field is missing and the
        # timestamp sits in its place.
        raise NameError_(f"missing field: expected age_gender_race_datetime, third field is {race_text!r}")
    age = _field("age", m.group("age"), 0, MAX_AGE)
    gender = _field("gender", m.group("gender"), 0, 1)
    race = _field("race", race_text, 0, len(RACE_NAMES) - 1)
    return Labels(age=age, gender=gender, race=race)


def class_names(races: tuple[int, ...] | list[int] = DEFAULT_RACES) -> list[str]:
    """Class names in label order: label = races.index(race) * 2 + gender."""
    return [f"{RACE_NAMES[r]}_{g}" for r in races for g in GENDER_NAMES]


def label_of(labels: Labels, races: tuple[int, ...] | list[int]) -> int:
    return list(races).index(labels.race) * 2 + labels.gender


def check_races(races) -> tuple[int, ...]:
    from datakit.errors import DatakitError

    races = tuple(int(r) for r in races)
    if not races:
        raise DatakitError("races: at least one race is needed", param="races")
    bad = [r for r in races if not 0 <= r < len(RACE_NAMES)]
    if bad:
        raise DatakitError(f"races: {bad} outside 0-4 (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others)", param="races")
    if len(set(races)) != len(races):
        raise DatakitError(f"races: repeated race in {list(races)}", param="races")
    return races
