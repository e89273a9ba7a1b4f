"""UTKFace -> balanced race x gender class folders, TFRecord shards and HDF5 files.

`build(src, out, ...)` is the build-utk preset of the generic builder (datakit.builder); `scan` and
`select` expose its first two steps with UTKFace's label rule.
"""

from datakit.builder.build import FORMATS, is_complete_build
from datakit.builder.report import summary
from datakit.builder.scan import Record, Scan
from datakit.builder.select import Plan
from datakit.datasets.utk.build import CLASS_BY, build, recipe
from datakit.datasets.utk.names import DEFAULT_RACES, RACE_NAMES, Labels, class_names, parse_name
from datakit.datasets.utk.source import UTKNames


def scan(src, workers=None, progress=None, executor=None) -> Scan:
    """Parse and hash every file of the flat UTKFace folder `src` (no picture decoded)."""
    from datakit.builder.scan import scan as _scan
    from datakit.progress import null_progress

    return _scan(src, UTKNames(), CLASS_BY, workers=workers, progress=progress or null_progress, executor=executor)


def select(found: Scan, races=DEFAULT_RACES, **kw) -> Plan:
    """The seeded balanced plan of a scan (datakit.builder.select with UTKFace's classes)."""
    from datakit.builder.select import select as _select

    return _select(found, recipe(races).classes(found), **kw)


__all__ = ["FORMATS", "Labels", "Plan", "RACE_NAMES", "Record", "Scan", "build", "class_names",
           "is_complete_build", "parse_name", "recipe", "scan", "select", "summary"]
