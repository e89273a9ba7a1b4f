"""`datakit demo`: each datakit step on embedded synthetic data, no network.

demo owns its steps and their folders: each step is a function `step(folder, seed, progress,
**inputs) -> dict` that gets the outputs of earlier steps it needs as explicit paths (`inputs`
names the keys of earlier results, see `STEPS`), and returns a dict carrying `lines` (what the
step did, for people) plus any figures and the paths later steps need; a step whose command has
its own report puts that command's result under `report` (rendered by the CLI).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from datakit.progress import null_progress


def utk_step(folder: Path, seed: int, progress) -> dict:
    from datakit.datasets import utk
    from datakit.testing import synthetic

    src = folder / "utkface-synthetic"
    made = synthetic.make_utk_folder(src, per_cell=40, races=(0, 1, 2, 3), seed=seed, broken=True)
    out = folder / "build"
    manifest = utk.build(src, out, per_class=32, races=(0, 1, 2, 3), size=64, seed=seed,
                         overwrite=True, progress=progress)
    summary = utk.summary(manifest, out)
    lines = [f"synthetic UTKFace folder: {src} ({made['images']} pictures, {made['broken']} broken or stray files)",
             f"build-utk --per-class 32 --size 64 -> {out}"]
    from datakit.textfmt import table

    rows = [[c] + [summary["counts"][s].get(c, 0) for s in summary["counts"]] + [summary["available"].get(c, 0)]
            for c in summary["classes"]]
    lines += ["  " + line for line in table(rows, ["class", *summary["counts"], "candidates"]).splitlines()]
    lines.append(f"  skipped {summary['skipped']} files with reasons, ignored {summary['ignored']} stray entries, "
                 f"dropped {summary['duplicates_dropped']} duplicate copies (see manifest.json)")
    lines += [f"  {fmt:<9} {path}" for fmt, path in summary["outputs"].items()]
    return {"source": str(src), "build": str(out), "summary": summary, "lines": lines}


def cifar_fetch_step(folder: Path, seed: int, progress) -> dict:
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
    return {"folder": got["folder"], "dest": str(dest), "archive": got["archive"], "counts": got["counts"],
            "lines": lines}


def preview_step(folder: Path, seed: int, progress, build: str, cifar: str | None = None) -> dict:
    """Sheets of the build (as stored and augmented) and of the CIFAR-10 folder."""
    from datakit.preview import contact_sheet

    sheet = contact_sheet(build, folder / "preview-train.png", per_class=8, palette=True, progress=progress)
    aug = contact_sheet(build, folder / "preview-train-augmented.png", per_class=8, augmented=True, seed=seed,
                        palette=True, progress=progress)
    lines = [f"preview {build} --palette -o {sheet['out']}",
             f"  {sheet['width']} x {sheet['height']} px, {sheet['bytes'] // 1024} KB: one row per class, "
             f"{sheet['per_class']} pictures each, read back from {sheet['format']}",
             f"preview --augmented -> {aug['out']} (the same pictures after the training augmentation)"]
    result = {"sheet": sheet["out"], "augmented": aug["out"], "lines": lines}
    if cifar is not None:
        c = contact_sheet(cifar, folder / "preview-cifar10-train.png", per_class=8, palette=True, progress=progress)
        lines.append(f"preview {cifar} -> {c['out']} ({len(c['classes'])} classes)")
        result["cifar10"] = c["out"]
    lines.append("  (docs/preview.png in the repository is the first sheet, copied from a demo run)")
    return result


def plant_leak(build: Path, dest: Path) -> str:
    """Copy `build` to `dest` with one train picture copied into val under a second name (folders
    only): what the demo shows doctor catching. Returns the new file's path relative to `dest`."""
    from datakit.atomic import remove

    remove(dest)
    shutil.copytree(build, dest)
    train = sorted((dest / "folders" / "train").rglob("*.jpg"))[0]
    age, gender, race = train.name.split("_")[:3]  # the same labels under a new UTKFace name
    copy = dest / "folders" / "val" / train.parent.name / f"{age}_{gender}_{race}_20991231235959999.jpg.chip.jpg"
    shutil.copyfile(train, copy)
    return copy.relative_to(dest).as_posix()


def _check_lines(checks: list[dict], only: str | None = None) -> list[str]:
    return [f"  {c['status']:<7}  {c['check']:<15}  {c['detail']}" for c in checks if only in (None, c["status"])]


def doctor_step(folder: Path, seed: int, progress, build: str, cifar: str | None = None) -> dict:
    """doctor on the build, on a copy with a planted leak, and on the CIFAR-10 folder."""
    from datakit.doctor import ERROR, doctor

    clean = doctor(build, progress=progress)
    lines = [f"doctor {build}"] + _check_lines(clean["checks"])
    lines.append(f"  {clean['errors']} errors, {clean['warnings']} warnings; read {clean['pictures_read']} "
                 f"records in {clean['seconds']} s")
    planted = plant_leak(Path(build), folder / "leaky-build")
    leaky = doctor(folder / "leaky-build", progress=progress)
    lines.append(f"doctor on a copy with one train picture copied into val as {planted}: exit status "
                 f"{1 if leaky['errors'] else 0}")
    lines += _check_lines(leaky["checks"], only=ERROR)
    result = {"clean": {k: clean[k] for k in ("errors", "warnings", "checks", "seconds")},
              "leaky": {k: leaky[k] for k in ("errors", "warnings", "checks")}, "lines": lines}
    if cifar is not None:
        c = doctor(cifar, progress=progress)
        lines.append(f"doctor {cifar}: {c['errors']} errors, {c['warnings']} warnings "
                     f"(the synthetic set is not the published size, and its pictures are one template per "
                     f"class plus noise, hence near-duplicates)")
        result["cifar10"] = {k: c[k] for k in ("errors", "warnings", "checks")}
    return result


def train_step(folder: Path, seed: int, progress) -> dict:
    """--check plus a short cifar10 run on a small synthetic CIFAR-10 folder."""
    from datakit import train
    from datakit.testing.synthetic_cifar import make_cifar10_dir

    make_cifar10_dir(folder / "data", train_per_batch=40, test=200, seed=seed)
    out = folder / "run"
    result = train.train_cifar10(folder / "data", steps=40, batch_size=32, out=out, check=True, seed=seed,
                                 progress=progress)
    lines = [f"train cifar10 --data {folder / 'data'} --steps 40 --batch 32 --check --out {out}",
             f"  (synthetic CIFAR-10: 200 train, 200 test pictures; the tutorial's net, {result['parameters']} "
             "parameters)"]
    keep = ("test_accuracy", "steps", "examples_per_sec", "input_wait_fraction", "stuck_at_chance", "check", "out")
    # `report`: the whole train result, which the CLI renders as `datakit train` would
    return {**{k: result[k] for k in keep}, "lines": lines, "report": result}


def train_utk_step(folder: Path, seed: int, progress, build: str) -> dict:
    """A short `train utk` of the default model (compact) on the demo's synthetic build, resized on the fly."""
    from datakit import train

    out = folder / "run"
    result = train.train_utk(build, epochs=3, size=48, out=out, seed=seed, progress=progress, restart=True)
    lines = [f"train utk --data {build} --epochs 3 --size 48 --out {out}",
             f"  (the synthetic build above, 64 px pictures resized to 48 px in the pipeline; compact, "
             f"{result['parameters']} parameters; confusion matrix in {out / 'confusion.png'})"]
    keep = ("val_accuracy", "per_class_accuracy", "epochs", "stuck_at_chance", "out")
    return {**{k: result[k] for k in keep}, "lines": lines, "report": result}


def bench_aug_step(folder: Path, seed: int, progress) -> dict:
    from datakit import bench

    result = bench.bench_aug(threads=16, batch=128, steps=5, rounds=1, warmup=3, min_seconds=0.3, images=1024,
                             seed=seed, progress=progress)
    lines = ["bench-aug --threads 16 --batch 128 (a short run; `datakit bench-aug` measures properly)"]
    # `report`: the whole bench result, which the CLI renders as `datakit bench-aug` would
    return {"bench": result, "lines": lines, "report": result}


# (name, step, {parameter: (earlier step, key of its result)}): the paths each step is handed.
STEPS = [
    ("build-utk", utk_step, {}),
    ("fetch-cifar10", cifar_fetch_step, {}),
    ("preview", preview_step, {"build": ("build-utk", "build"), "cifar": ("fetch-cifar10", "dest")}),
    ("doctor", doctor_step, {"build": ("build-utk", "build"), "cifar": ("fetch-cifar10", "dest")}),
    ("train", train_step, {}),
    ("train-utk", train_utk_step, {"build": ("build-utk", "build")}),
    ("bench-aug", bench_aug_step, {}),
]


def run(out: str | Path | None = None, seed: int = 0, progress=null_progress) -> dict:
    """Run every step into `out` (a new temporary folder by default, kept for the user to look at)."""
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="datakit-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {"out": str(root), "steps": {}}
    for name, step, needs in STEPS:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        inputs = {param: result["steps"][step_name][key] for param, (step_name, key) in needs.items()
                  if key in result["steps"].get(step_name, {})}
        t0 = time.perf_counter()
        outcome = step(folder, seed, progress, **inputs)
        outcome["seconds"] = round(time.perf_counter() - t0, 2)
        result["steps"][name] = outcome
    return result
