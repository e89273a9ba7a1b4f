"""`datakit demo`: every step of datakit on embedded synthetic data, no network."""

from __future__ import annotations

NAME = "demo"
HELP = "run every datakit step on a small synthetic data set (no network, well under a minute)"
DESCRIPTION = (
    "Make a small synthetic UTKFace-style folder (race drives a colour, gender a shape; real UTKFace "
    "names, plus a few broken files), build it with build-utk, and run the other steps on synthetic "
    "data; print what each step did and where its outputs went."
)


def add_arguments(p):
    p.add_argument("--out", default=None,
                   help="folder for the demo's outputs (default: a new temporary folder, kept and printed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of every step")


def run(args) -> dict:
    from datakit import demo
    from datakit_cli.common import progress_factory

    return demo.run(out=args.out, seed=args.seed, progress=progress_factory(not args.json))


def _report_renderers() -> dict:
    """Step name -> the render() of the command whose result the step carries as `report`."""
    from datakit_cli import bench_aug, train

    return {"train": train.render, "train-utk": train.render, "bench-aug": bench_aug.render}


def render(result: dict) -> str:
    renderers = _report_renderers()
    lines = [f"datakit demo: outputs under {result['out']}"]
    for name, outcome in result["steps"].items():
        lines.append(f"\n== {name} ({outcome['seconds']} s)")
        lines += outcome["lines"]
        if "report" in outcome and name in renderers:
            lines += ["  " + line for line in renderers[name](outcome["report"]).splitlines()]
    return "\n".join(lines)
