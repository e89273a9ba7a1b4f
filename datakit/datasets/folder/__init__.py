"""Any labelled picture folder -> balanced class folders, TFRecord shards and HDF5 files.

Labels come from class folders (`labels="folders"`), named fields of the file name
(`labels="pattern"`) or a CSV (`labels="csv"`); classes are one field or a combination
(`class_by`), named in label order (`class_names`), filtered on field values (`where`). Everything
else is the generic builder's (datakit.builder): `build(src, out, ...)` returns the manifest.
"""

from __future__ import annotations

from datakit.builder import build as generic
from datakit.builder.build import BuildOptions, Recipe
from datakit.builder.classes import parse_allowed
from datakit.datasets.folder.sources import ClassFolders, CsvLabels, NamePattern
from datakit.errors import DatakitError
from datakit.progress import null_progress

LABELS = ("folders", "pattern", "csv")


def label_source(labels: str, pattern: str | None = None, csv: str | None = None, file_column: str | None = None,
                 label_columns=None):
    if labels == "folders":
        return ClassFolders()
    if labels == "pattern":
        if not pattern:
            raise DatakitError("labels='pattern' needs pattern=, e.g. '{age:int}_{gender:0..1}_{race:0..4}_*'",
                               param="pattern")
        return NamePattern(pattern)
    if labels == "csv":
        if not csv or not file_column or not label_columns:
            raise DatakitError("labels='csv' needs csv=, file_column= and label_columns=",
                               param=("csv", "file_column", "label_columns"))
        return CsvLabels(csv, file_column, label_columns)
    raise DatakitError(f"labels={labels!r}: must be one of {', '.join(LABELS)}", param="labels")


def parse_where(where) -> tuple:
    """{"race": "0..3"} or ["race=0..3", ...] -> ((field, Allowed), ...)."""
    items = where.items() if isinstance(where, dict) else [w.split("=", 1) if "=" in w else (w, "") for w in where or ()]
    out = []
    for name, text in items:
        name = name.strip()
        if not name or not str(text).strip():
            raise DatakitError(f"where: {name}={text} is not FIELD=VALUES (e.g. race=0..3 or gender=Male,Female)",
                               param="where")
        out.append((name, text if not isinstance(text, str) else parse_allowed(text, f"where {name}", "where")))
    return tuple(out)


def recipe(labels: str = "folders", pattern=None, csv=None, file_column=None, label_columns=None, class_by=None,
           class_names=None, where=None, name: str = "data") -> Recipe:
    source = label_source(labels, pattern, csv, file_column, label_columns)
    fields = [f.name for f in source.fields]
    if class_by is None:
        if len(fields) != 1:
            raise DatakitError(f"class_by: the labels have several fields ({', '.join(fields)}); name the ones "
                               "that make the class", param="class_by")
        class_by = fields
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DatakitError(f"name={name!r}: a file stem of lower-case letters, digits and _", param="name")
    return Recipe(dataset="folder", command="build", stem=name, source=source, class_by=tuple(class_by),
                  class_names=tuple(class_names) if class_names else None, where=parse_where(where),
                  options={**source.describe(), "class_by": list(class_by), "name": name,
                           "where": {k: v.describe() for k, v in parse_where(where)}})


def build(src, out, labels: str = "folders", pattern=None, csv=None, file_column=None, label_columns=None,
          class_by=None, class_names=None, where=None, name: str = "data", progress=null_progress, **kw) -> dict:
    """Build balanced outputs of the labelled folder `src` under `out`; returns the manifest.
    Keywords: datakit.builder.BuildOptions (per_class, size, formats, val_fraction, test_fraction,
    seed, workers, allow_short, overwrite, near_duplicates)."""
    r = recipe(labels, pattern, csv, file_column, label_columns, class_by, class_names, where, name)
    try:
        options = BuildOptions(**kw)
    except TypeError as exc:
        raise DatakitError(f"unknown build option ({exc})") from None
    return generic.build(src, out, r, options, progress)


__all__ = ["LABELS", "build", "label_source", "parse_where", "recipe"]
