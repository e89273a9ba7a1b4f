"""`datakit build SRC OUT`: any labelled picture folder -> balanced class folders, TFRecord and HDF5 shards."""

from __future__ import annotations

from datakit_cli import build_utk
from datakit_cli.common import str_list

NAME = "build"
HELP = "any labelled picture folder (class folders, a name pattern, a CSV) -> balanced class folders, TFRecord, HDF5"
DESCRIPTION = (
    "Labels come from --labels folders (SRC/<class>/<picture>), --labels pattern (named fields of each file "
    "name: --pattern '{age:int}_{gender:0..1}_{race:0..4}_*'), or --labels csv (--csv FILE --file-column C "
    "--label-columns A,B). A class is one field or a combination (--class-by race,gender), named in label "
    "order by --class-names; --where race=0..3 keeps only those values. Then everything build-utk does: "
    "exact and near duplicates, a seeded sample of exactly --per-class pictures per class, stratified "
    "train/val/test, class folders, TFRecord shards, HDF5 files and manifest.json under OUT."
)


def _names(text: str) -> list[str]:
    if text.startswith("@"):
        from pathlib import Path

        return [line.strip() for line in Path(text[1:]).read_text(encoding="utf-8").splitlines() if line.strip()]
    return str_list(text)


def add_arguments(p):
    p.add_argument("src", help="the labelled picture folder")
    p.add_argument("out", help="output folder: new, empty, or a previous datakit build (see --overwrite)")
    p.add_argument("--labels", choices=("folders", "pattern", "csv"), default="folders",
                   help="where the labels come from")
    p.add_argument("--pattern", metavar="PATTERN",
                   help="--labels pattern: fields of the file name: {f} text, {f:int} digits, {f:LO..HI}, "
                        "{f:a,b} allowed values; * any text")
    p.add_argument("--csv", metavar="FILE", help="--labels csv: the CSV file (header row)")
    p.add_argument("--file-column", metavar="C", help="--labels csv: the column naming each picture (path under SRC)")
    p.add_argument("--label-columns", type=str_list, metavar="A,B", help="--labels csv: the label columns")
    p.add_argument("--class-by", type=str_list, metavar="F,G",
                   help="the label fields that make the class (default: the only field)")
    p.add_argument("--class-names", metavar="A,B,...|@FILE",
                   help="class names in label order (comma-separated, or @FILE with one name per line)")
    p.add_argument("--where", action="append", metavar="FIELD=VALUES", default=[],
                   help="keep pictures whose FIELD is in VALUES (LO..HI or a,b,c); repeatable")
    p.add_argument("--name", default="data", help="file stem of the TFRecord and HDF5 files")
    build_utk.add_common_arguments(p)


def run(args) -> dict:
    from datakit.builder.report import summary
    from datakit.datasets import folder
    from datakit.errors import DatakitError
    from datakit_cli.common import progress_factory

    try:
        names = _names(args.class_names) if args.class_names else None
    except OSError as exc:
        raise DatakitError(f"{args.class_names[1:]}: cannot read the class names file ({exc.strerror or exc})",
                           param="class_names") from None
    manifest = folder.build(
        args.src, args.out, labels=args.labels, pattern=args.pattern, csv=args.csv, file_column=args.file_column,
        label_columns=args.label_columns, class_by=args.class_by, class_names=names, where=args.where,
        name=args.name, progress=progress_factory(not args.json), **build_utk.common_options(args))
    return summary(manifest, args.out)


render = build_utk.render
