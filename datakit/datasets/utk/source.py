"""UTKFace as a label source of the generic builder: a flat folder whose names carry the labels."""

from __future__ import annotations

from pathlib import Path

from datakit.builder.classes import Field
from datakit.builder.scan import Listing, list_flat
from datakit.datasets.utk.names import looks_like_image_name, parse_name

FIELDS = (Field("age"), Field("gender"), Field("race"))
FEATURE_DOCS = {
    "image/class/label": "race_index * 2 + gender",
    "image/class/text": "class name, e.g. white_female",
    "image/filename": "original UTKFace file name",
    "age": "0-120",
    "gender": "0 male, 1 female",
    "race": "0 White, 1 Black, 2 Asian, 3 Indian, 4 Others",
}


class UTKNames:
    """Every entry of SRC: a picture name with valid leading fields is a candidate; a picture name
    without them, or one that is not valid UTF-8 or holds a control character, is skipped with the
    reason; anything else (subfolders, FIFOs, sockets, devices, symbolic links that do not end at a
    regular file inside SRC, other names) is ignored with the reason. See datakit.builder.scan."""

    fields = FIELDS
    declared: dict = {}

    def list(self, src: Path) -> Listing:
        return list_flat(src, looks_like_image_name, ".jpg/.jpeg/.png", _labels)


def _labels(name: str) -> dict:
    lab = parse_name(name)  # NameError_ is a ValueError: Listing.offer skips the name with its reason
    return {"age": lab.age, "gender": lab.gender, "race": lab.race}
