"""`datakit build-utk SRC OUT`: UTKFace -> balanced race x gender folders, TFRecord and HDF5 shards."""

from __future__ import annotations

import os

from datakit_cli.common import fraction, int_list, positive_int, str_list

NAME = "build-utk"
HELP = "UTKFace folder -> balanced race x gender class folders, TFRecord and HDF5 shards"
DESCRIPTION = (
    "Read a flat folder of UTKFace files named [age]_[gender]_[race]_[datetime].jpg.chip.jpg, validate "
    "every name and every image considered, drop exact duplicates (and every copy of a picture whose "
    "names disagree on race or gender), group near-identical pictures, take a seeded random sample of "
    "exactly --per-class images per race x gender class, split each class into train/val/test, and write "
    "class folders, TFRecord shards and HDF5 files under OUT with a manifest.json. "
    "Label = race_index * 2 + gender in the order of --races. A preset of `datakit build`."
)


def add_common_arguments(p):
    """The options every build takes (datakit.builder.BuildOptions)."""
    p.add_argument("--per-class", type=positive_int, default=700, metavar="N",
                   help="images per class; a class with fewer valid images fails the run unless --allow-short")
    p.add_argument("--size", type=positive_int, default=200, metavar="S",
                   help="output side in pixels (square); other sizes are resized")
    p.add_argument("--formats", type=str_list, default="folders,tfrecord,hdf5", metavar="LIST",
                   help="comma-separated outputs among folders, tfrecord, hdf5")
    p.add_argument("--val-fraction", type=fraction, default=0.1, metavar="F",
                   help="fraction of each class for validation")
    p.add_argument("--test-fraction", type=fraction, default=0.0, metavar="F",
                   help="fraction of each class for test")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample, the split and the shard order")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes that decode and write (default: all cores; 1 = no worker processes)")
    p.add_argument("--allow-short", action="store_true",
                   help="a class with fewer than N valid images takes all it has instead of failing")
    p.add_argument("--near-duplicates", choices=("group", "drop", "keep"), default="group",
                   help="near-identical pictures (perceptual hash): group keeps each group inside one split, "
                        "drop keeps one picture per group, keep treats them as distinct")
    p.add_argument("--max-pixels", type=positive_int, default=8192 * 8192, metavar="N",
                   help="a picture whose header claims more pixels is skipped (a decompression bomb) before decoding")
    p.add_argument("--overwrite", action="store_true", help="replace a previous complete datakit build in OUT")


def common_options(args) -> dict:
    return dict(per_class=args.per_class, size=args.size, formats=args.formats, val_fraction=args.val_fraction,
                test_fraction=args.test_fraction, seed=args.seed, workers=args.workers,
                allow_short=args.allow_short, overwrite=args.overwrite, near_duplicates=args.near_duplicates,
                max_pixels=args.max_pixels)


def add_arguments(p):
    p.add_argument("src", help="flat folder of UTKFace images (.jpg.chip.jpg or .jpg)")
    p.add_argument("out", help="output folder: new, empty, or a previous datakit build (see --overwrite)")
    p.add_argument("--races", type=int_list, default="0,1,2,3", metavar="LIST",
                   help="comma-separated races, in label order (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others)")
    add_common_arguments(p)


def run(args) -> dict:
    from datakit.builder.report import summary
    from datakit.datasets import utk
    from datakit_cli.common import progress_factory

    manifest = utk.build(args.src, args.out, races=args.races, progress=progress_factory(not args.json),
                         **common_options(args))
    return summary(manifest, args.out)


def class_table(summary: dict) -> str:
    from datakit.textfmt import table

    splits = list(summary["counts"])
    rows = [[name] + [summary["counts"][s].get(name, 0) for s in splits] + [summary["available"].get(name, 0)]
            for name in summary["classes"]]
    return table(rows, ["class"] + splits + ["candidates"])


def render(result: dict) -> str:
    lines = [class_table(result), ""]
    lines.append(f"skipped {result['skipped']} files (reasons in the manifest), ignored {result['ignored']} stray "
                 f"entries, dropped {result['duplicates_dropped']} duplicate copies "
                 f"({result['conflicting_duplicates']} pictures with conflicting labels: no copy used)")
    near = result.get("near_duplicates") or {}
    if near.get("mode", "keep") != "keep":
        lines.append(f"near-duplicates ({near['mode']}): {near['groups']} groups of near-identical pictures "
                     f"kept inside one split{' (one picture each)' if near['mode'] == 'drop' else ''}, "
                     f"{near['conflicting']} groups with conflicting labels dropped")
    lines.append("wrote:")
    lines += [f"  {fmt:<9} {path}" for fmt, path in result["outputs"].items()]
    lines.append(f"  manifest  {result['manifest']}")
    return "\n".join(lines)
