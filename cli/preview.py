"""`datakit preview PATH`: a contact sheet PNG, one row per class, read back from the chosen format."""

from __future__ import annotations

from datakit_cli.common import positive_int

NAME = "preview"
HELP = "contact sheet PNG of a build output or a CIFAR folder: one labelled row per class"
DESCRIPTION = (
    "Read one split of a build-utk output (folders, tfrecord or hdf5) or of a fetched CIFAR-10/100 "
    "folder back exactly as stored, count every record, and draw the first --per-class pictures of each "
    "class in a row labelled with the class name and its count. A wrong label or channel order in that "
    "format shows on the sheet. --augmented shows the same pictures after the training augmentation "
    "(datakit.augment, as the pipelines apply it), rescaled min-max per picture for display."
)


def add_arguments(p):
    p.add_argument("path", help="build output folder (build-utk or build), or a CIFAR folder (holding "
                                "cifar-10-batches-bin/ or "
                                "cifar-100-binary/, or that folder itself)")
    p.add_argument("--split", default="train", help="split to show (train, val, test)")
    p.add_argument("--per-class", type=positive_int, default=8, metavar="N", help="pictures per class")
    p.add_argument("--format", default=None, metavar="FMT",
                   help="build-utk output to read back: folders, tfrecord or hdf5 (None: the first built)")
    p.add_argument("--label-mode", default=None, choices=["fine", "coarse"],
                   help="CIFAR-100 labels (None: fine)")
    p.add_argument("--augmented", action="store_true",
                   help="show the pictures after the training augmentation (needs TensorFlow)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentation draws")
    p.add_argument("--thumb", type=positive_int, default=None, metavar="PX",
                   help="thumbnail side in pixels (None: 96, or 56 above 20 classes)")
    p.add_argument("--palette", action="store_true", help="256-colour PNG: about 4x smaller, colours approximate")
    p.add_argument("-o", "--out", default=None, metavar="PNG",
                   help="output file (None: preview-<split>[-augmented].png in the current folder)")


def run(args) -> dict:
    from datakit import preview
    from datakit_cli.common import progress_factory

    out = args.out or f"preview-{args.split}{'-augmented' if args.augmented else ''}.png"
    return preview.contact_sheet(args.path, out, split=args.split, per_class=args.per_class, fmt=args.format,
                                 augmented=args.augmented, seed=args.seed, thumb=args.thumb,
                                 label_mode=args.label_mode, palette=args.palette,
                                 progress=progress_factory(not args.json))


def render(result: dict) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in result["counts"].items())
    lines = [f"wrote {result['out']} ({result['width']} x {result['height']} px, {result['bytes'] // 1024} KB): "
             f"{result['split']} split of {result['source']} read back from {result['format']}"
             + (", after the training augmentation" if result["augmented"] else ""),
             f"  counts: {counts}"]
    if result["problems"]:
        lines.append(f"  {len(result['problems'])} records could not be read, e.g. {result['problems'][0]} "
                     f"(run datakit doctor)")
    return "\n".join(lines)
