"""UTKFace -> balanced race x gender class folders, TFRecord shards and HDF5 files.

`scan(src)` parses and hashes the folder, `select(scan, ...)` draws the seeded balanced sample,
`build(src, out, ...)` does both and writes every output plus manifest.json.
"""

from datakit.datasets.utk.build import FORMATS, build, is_complete_build
from datakit.datasets.utk.names import RACE_NAMES, Labels, class_names, parse_name
from datakit.datasets.utk.report import class_table, summary
from datakit.datasets.utk.scan import Record, Scan, scan
from datakit.datasets.utk.select import Plan, select

__all__ = ["FORMATS", "Labels", "Plan", "RACE_NAMES", "Record", "Scan", "build", "class_names", "class_table",
           "is_complete_build", "parse_name", "scan", "select", "summary"]
