"""`datakit doctor PATH`: data checks with one line each (ok / warning / error); exit 1 on any error."""

from __future__ import annotations

from datakit_cli.common import positive_int

NAME = "doctor"
HELP = "check a build output or a CIFAR folder: balance, duplicates and leakage, decoding, labels, formats"
DESCRIPTION = (
    "Read every record of every split in every built format and check: files against the manifest's "
    "sha256, that every record decodes, shapes, labels (in range; for UTKFace also against the file name "
    "and the stored race/gender), class balance against the manifest, that the formats hold the same "
    "pictures with the same labels, exact duplicates within a split and across splits (leakage), "
    "near-duplicates across splits (perceptual hash), per-class colour statistics and pictures that look "
    "like another class, and the training augmentation config. One line per check; with --json a list of "
    "{check, status, detail}. Exits 1 when any check is an error."
)


def add_arguments(p):
    p.add_argument("path", help="build output folder (build-utk or build), or a CIFAR folder (holding "
                                "cifar-10-batches-bin/ or "
                                "cifar-100-binary/, or that folder itself)")
    p.add_argument("--label-mode", default=None, choices=["fine", "coarse"],
                   help="CIFAR-100 labels to check balance and colours by (None: fine)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="decode threads (None: all cores)")
    p.add_argument("--stats", action="store_true", help="also print the per-class colour table")


def run(args) -> dict:
    from datakit import doctor
    from datakit_cli.common import progress_factory

    result = doctor.doctor(args.path, label_mode=args.label_mode, workers=args.workers,
                           progress=progress_factory(not args.json))
    result["_exit_code"] = 1 if result["errors"] else 0
    if not args.json:
        result["_stats"] = args.stats  # only `render` reads it; never part of the JSON object
    return result


def render(result: dict) -> str:
    stats = result.pop("_stats", False)
    width = max(len(c["check"]) for c in result["checks"])
    lines = [f"datakit doctor: {result['kind']} {result['path']}"]
    lines += check_lines(result["checks"], width)
    if stats:
        from datakit.textfmt import table

        for split, rows in result["colour"].items():
            lines.append(f"\nper-class colour, {split} ({result['formats'][0]}): mean R G B | pixel std R G B")
            body = [[name, r["n"], " ".join(f"{v:5.1f}" for v in r["mean"]), " ".join(f"{v:5.1f}" for v in r["std"])]
                    for name, r in rows.items()]
            lines += ["  " + line for line in table(body, ["class", "n", "mean RGB", "std RGB"]).splitlines()]
    lines.append(f"{result['errors']} errors, {result['warnings']} warnings; read {result['pictures_read']} "
                 f"records in {result['seconds']} s")
    return "\n".join(lines)


def check_lines(checks: list[dict], width: int = 15) -> list[str]:
    """One line per check: status, name, detail."""
    return [f"  {c['status']:<7}  {c['check']:<{width}}  {c['detail']}" for c in checks]
