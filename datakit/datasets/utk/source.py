"""UTKFace as a label source of the generic builder: a flat folder whose names carry the labels."""

from __future__ import annotations

import os
from pathlib import Path

from datakit.builder.classes import Field
from datakit.builder.scan import Listing
from datakit.datasets.utk.names import NameError_, looks_like_image_name, parse_name

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
    without them is skipped with the reason; anything else is ignored with the reason."""

    fields = FIELDS
    declared: dict = {}

    def list(self, src: Path) -> Listing:
        found = Listing()
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            if entry.is_dir():
                found.ignored.append({"file": entry.name, "reason": "subfolder (SRC must be a flat folder)"})
            elif not entry.is_file():
                found.ignored.append({"file": entry.name, "reason": "not a regular file"})
            elif not looks_like_image_name(entry.name):
                found.ignored.append({"file": entry.name, "reason": "not a picture name (.jpg/.jpeg/.png)"})
            else:
                try:
                    lab = parse_name(entry.name)
                except NameError_ as exc:
                    found.skipped.append({"file": entry.name, "reason": f"bad name: {exc}"})
                    continue
                found.named.append((entry.name, {"age": lab.age, "gender": lab.gender, "race": lab.race},
                                    entry.name))
        return found
