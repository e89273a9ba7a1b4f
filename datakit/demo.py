"""`datakit demo`: each datakit step on embedded synthetic data, no network.

Each step is a function `step(folder, seed, progress) -> dict` whose dict carries `lines`
(what the step did, for people) plus any figures; later features append their own step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from datakit.progress import null_progress


def _utk_step(folder: Path, seed: int, progress) -> dict:
    from datakit.testing import synthetic
    from datakit.datasets import utk

    src = folder / "utkface-synthetic"
    made = synthetic.make_utk_folder(src, per_cell=40, races=(0, 1, 2, 3), seed=seed, broken=True)
    out = folder / "build"
    manifest = utk.build(src, out, per_class=32, races=(0, 1, 2, 3), size=64, seed=seed,
                         overwrite=True, progress=progress)
    summary = utk.summary(manifest, out)
    lines = [f"synthetic UTKFace folder: {src} ({made['images']} pictures, {made['broken']} broken or stray files)",
             f"build-utk --per-class 32 --size 64 -> {out}"]
    lines += ["  " + line for line in utk.class_table(summary).splitlines()]
    lines.append(f"  skipped {summary['skipped']} files with reasons, ignored {summary['ignored']} stray entries, "
                 f"dropped {summary['duplicates_dropped']} duplicate copies (see manifest.json)")
    lines += [f"  {fmt:<9} {path}" for fmt, path in summary["outputs"].items()]
    return {"source": str(src), "build": str(out), "summary": summary, "lines": lines}


def _cifar_fetch_step(folder: Path, seed: int, progress) -> dict:
    import numpy as np

    from datakit import atomic
    from datakit.datasets import cifar
    from datakit.testing import synthetic_cifar

    archive = folder / "cifar-10-binary.tar.gz"
    made = synthetic_cifar.make_cifar10_tarball(archive, train_per_batch=200, test=200, seed=seed)
    dest = folder / "cifar10"
    atomic.remove(dest)  # a previous demo in the same --out may have used another seed
    got = cifar.fetch("cifar10", dest, from_archive=archive, md5=made["md5"], progress=progress)
    t0 = time.perf_counter()
    again = cifar.fetch("cifar10", dest, from_archive=archive, md5=made["md5"], progress=progress)
    rerun_s = time.perf_counter() - t0
    (train_x, train_y), (test_x, _) = cifar.load(dest, "train"), cifar.load(dest, "test")
    names = cifar.class_names(dest)
    lines = [f"synthetic CIFAR-10 binary archive: {archive} ({made['bytes']} bytes, official layout)",
             f"fetch-cifar10 --from-archive {archive.name} --md5 {made['md5']} --dest {dest}",
             f"  verified and extracted -> {got['folder']} (train {got['counts']['train']}, test {got['counts']['test']})",
             f"  rerun: {'already complete, nothing read or extracted' if not again['fetched'] else 'fetched again'}"
             f" ({rerun_s:.3f} s)",
             f"  cifar.load: train {train_x.shape} {train_x.dtype} labels {train_y.dtype}, test {test_x.shape}",
             "  train images per class: " + ", ".join(f"{n} {c}" for c, n in zip(names, np.bincount(train_y, minlength=10)))]
    return {"folder": got["folder"], "archive": got["archive"], "counts": got["counts"], "lines": lines}


def _preview_step(folder: Path, seed: int, progress) -> dict:
    from datakit import preview

    return preview.demo_step(folder, seed, progress)


def _doctor_step(folder: Path, seed: int, progress) -> dict:
    from datakit import doctor

    return doctor.demo_step(folder, seed, progress)


def _bench_aug_step(folder: Path, seed: int, progress) -> dict:
    from datakit import bench

    return bench.demo_step(folder, seed, progress)


def _train_step(folder: Path, seed: int, progress) -> dict:
    from datakit import train

    return train.demo_step(folder, seed, progress)


STEPS = [
    ("build-utk", _utk_step),
    ("fetch-cifar10", _cifar_fetch_step),
    ("preview", _preview_step),
    ("doctor", _doctor_step),
    ("train", _train_step),
    ("bench-aug", _bench_aug_step),
]


def run(out: str | Path | None = None, seed: int = 0, progress=null_progress) -> dict:
    """Run every step into `out` (a new temporary folder by default, kept for the user to look at)."""
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="datakit-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {"out": str(root), "steps": {}}
    for name, step in STEPS:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        outcome = step(folder, seed, progress)
        outcome["seconds"] = round(time.perf_counter() - t0, 2)
        result["steps"][name] = outcome
    return result


def render(result: dict) -> str:
    lines = [f"datakit demo: outputs under {result['out']}"]
    for name, outcome in result["steps"].items():
        lines.append(f"\n== {name} ({outcome['seconds']} s)")
        lines += outcome["lines"]
    return "\n".join(lines)
