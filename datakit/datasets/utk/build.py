"""build-utk: UTKFace -> balanced race x gender classes, a preset of the generic builder.

Label = race_index * 2 + gender, race_index the position of the race in `races`; the files are
named utk-{split}...; everything else (scan, duplicates, near-duplicates, selection, writers,
atomic install) is datakit.builder's.
"""

from __future__ import annotations

from datakit.builder import build as generic
from datakit.builder.build import BuildOptions, Recipe
from datakit.datasets.utk.names import DEFAULT_RACES, check_races, class_names
from datakit.datasets.utk.source import FEATURE_DOCS, UTKNames
from datakit.errors import DatakitError
from datakit.progress import null_progress

CLASS_BY = ("race", "gender")


def recipe(races=DEFAULT_RACES) -> Recipe:
    races = check_races(races)
    return Recipe(dataset="utk", command="build-utk", stem="utk", source=UTKNames(), class_by=CLASS_BY,
                  class_names=tuple(class_names(races)), class_keys=tuple((r, g) for r in races for g in (0, 1)),
                  feature_docs=FEATURE_DOCS, options={"races": list(races)}, extra={"races": list(races)})


def options(**kw) -> BuildOptions:
    """BuildOptions from keywords; an unknown keyword is named."""
    try:
        return BuildOptions(**kw)
    except TypeError as exc:
        raise DatakitError(f"unknown build option ({exc})") from None


def build(src, out, races=DEFAULT_RACES, progress=null_progress, **kw) -> dict:
    """Build balanced race x gender outputs of the UTKFace folder `src` under `out`; returns the
    manifest. Keywords: datakit.builder.BuildOptions (per_class, size, formats, val_fraction,
    test_fraction, seed, workers, allow_short, overwrite, near_duplicates)."""
    return generic.build(src, out, recipe(races), options(**kw), progress)
