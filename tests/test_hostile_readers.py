"""Build and CIFAR folders read by doctor, preview, pipelines and train: a hostile manifest, a FIFO in
place of a shard, a record that does not decode: one line naming the file and the reason, no hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datakit import doctor, tfrecord
from datakit.datasets import open_dataset
from datakit.errors import DatakitError

CLI = [sys.executable, "-m", "datakit_cli.main"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    from datakit.datasets import utk
    from datakit.testing import synthetic

    root = tmp_path_factory.mktemp("readers")
    synthetic.make_utk_folder(root / "src", per_cell=6, races=(0, 1), seed=1, size=32)
    utk.build(root / "src", root / "good", races=(0, 1), per_class=6, size=32, val_fraction=0.34, workers=1)
    return root / "good"


def _variant(good: Path, dest: Path, edit) -> Path:
    shutil.copytree(good, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    edit(manifest, dest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize("edit, reason", [
    (lambda m, d: m["outputs"]["tfrecord"].__setitem__("train", ["../../etc/passwd"]), "not inside the build folder"),
    (lambda m, d: m["outputs"]["hdf5"].__setitem__("train", ["/dev/zero"]), "not inside the build folder"),
    (lambda m, d: m["files"].__setitem__("../outside.txt", "0" * 64), "paths inside the build folder"),
    (lambda m, d: m.__setitem__("classes", "white_male"), "classes must be a list"),
    (lambda m, d: m.__setitem__("size", "big"), "size must be a positive integer"),
    (lambda m, d: m["counts"]["train"].__setitem__("white_male", "x"), "counts must map"),
    (lambda m, d: m.__setitem__("splits", None), "splits must be a list"),
], ids=["dotdot", "absolute", "files-outside", "classes-str", "size-str", "count-str", "splits-null"])
def test_a_hostile_manifest_is_refused_before_anything_is_read(good, tmp_path, edit, reason):
    bad = _variant(good, tmp_path / "bad", edit)
    with pytest.raises(DatakitError, match=reason) as err:
        open_dataset(bad)
    assert str(bad / "manifest.json") in str(err.value)
    run = subprocess.run(CLI + ["preview", str(bad), "-o", str(tmp_path / "sheet.png")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if "error" in line] == \
        [f"datakit preview: error: {err.value}"]


def test_a_fifo_in_place_of_a_shard_never_blocks_the_readers(good, tmp_path):
    def fifos(m, d):
        for fmt in ("tfrecord", "hdf5"):
            p = d / m["outputs"][fmt]["train"][0]
            p.unlink()
            os.mkfifo(p)

    bad = _variant(good, tmp_path / "fifo", fifos)
    run = subprocess.run(CLI + ["doctor", str(bad), "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    checks = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    assert checks["files"]["status"] == "error" and "tfrecord/utk-train" in checks["files"]["detail"]
    from datakit import pipelines

    with pytest.raises(DatakitError, match="utk-train.tfrecord-00000-of-00001: missing"):
        pipelines.build(bad, split="train", format="tfrecord", device="cpu")


def test_a_record_that_does_not_decode_is_one_line_from_train(good, tmp_path):
    def garbage(m, d):
        path = d / m["outputs"]["tfrecord"]["train"][0]
        records = list(tfrecord.read_records(path))
        ex = {k: (v[0] if len(v) == 1 else v) for k, v in tfrecord.parse_example(records[0]).items()}
        ex["image/encoded"] = b"not a picture " * 8
        with open(path, "wb") as f:
            f.write(tfrecord.frame(tfrecord.encode_example(ex)))
            for r in records[1:]:
                f.write(tfrecord.frame(r))

    bad = _variant(good, tmp_path / "garbage", garbage)
    result = doctor.doctor(bad)
    decode = {c["check"]: c for c in result["checks"]}["decode"]
    assert decode["status"] == "error" and "utk-train.tfrecord-00000-of-00001#0" in decode["detail"]
    run = subprocess.run(CLI + ["train", "build", "--data", str(bad), "--epochs", "1", "--batch", "4",
                                "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if "datakit train: error" in line]
    assert len(errors) == 1 and "could not read or decode the data" in errors[0] and "{{" not in errors[0]


def test_a_fifo_in_a_cifar_folder_never_blocks(tmp_path):
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar10_dir(tmp_path / "c", train_per_batch=20, test=20, seed=1)
    batch = tmp_path / "c" / "cifar-10-batches-bin" / "data_batch_1.bin"
    batch.unlink()
    os.mkfifo(batch)
    for cmd in (["doctor", str(tmp_path / "c")], ["preview", str(tmp_path / "c"), "-o", str(tmp_path / "s.png")]):
        run = subprocess.run(CLI + cmd, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in run.stderr and run.returncode in (0, 1), run.stderr
