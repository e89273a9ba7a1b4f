"""Checkpoints and resume of `datakit train`: a real kill -9 and a SIGTERM of training subprocesses end,
after resuming, with the uninterrupted run's weights, history and test accuracy (op determinism, CPU);
--restart, foreign and corrupt checkpoints, --ema, the build trainer's epochs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

STEPS, EVERY = 120, 20
EXACT = ("step", "loss", "cross_entropy", "batch_accuracy", "learning_rate")  # timing columns differ


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    from datakit.testing.synthetic_cifar import make_cifar10_dir

    dest = tmp_path_factory.mktemp("cifar")
    make_cifar10_dir(dest, train_per_batch=60, test=100, seed=1)
    return dest


def _argv(data, out, *extra):
    return [sys.executable, "-m", "datakit_cli.main", "train", "cifar10", "--data", str(data), "--steps", str(STEPS),
            "--batch", "16", "--checkpoint-every", str(EVERY), "--seed", "3", "--deterministic", "--out", str(out),
            "--json", *extra]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _steps(out):
    folder = out / "checkpoints"
    return sorted(int(p.name[5:]) for p in folder.glob("ckpt-*")) if folder.is_dir() else []


def _start_and_wait(argv, out, after: int):
    """Start a training subprocess; return it once a checkpoint beyond step `after` exists."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 120
    while not [s for s in _steps(out) if s > after]:
        assert proc.poll() is None, "the run ended before its checkpoint could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def _history(out):
    with open(out / "history.csv") as f:
        return [{k: row[k] for k in EXACT} for row in csv.DictReader(f)]


def _weights(out):
    import keras

    import datakit.models  # noqa: F401 - registers LocalResponseNorm

    return keras.models.load_model(out / "model.keras").get_weights()


@pytest.fixture(scope="module")
def runs(cifar_dir, tmp_path_factory):
    """An uninterrupted run, and one killed (kill -9) after its first checkpoint, resumed, stopped with
    SIGTERM after a later checkpoint, and resumed to the end."""
    root = tmp_path_factory.mktemp("runs")
    whole = subprocess.run(_argv(cifar_dir, root / "whole"), capture_output=True, env=_env(), timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = root / "cut"
    proc = _start_and_wait(_argv(cifar_dir, out), out, 0)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    killed_at = _steps(out)[-1]
    assert not (out / "metrics.json").exists()
    proc = _start_and_wait(_argv(cifar_dir, out), out, killed_at)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    termed = json.loads(stdout)
    assert proc.returncode == 0
    last = subprocess.run(_argv(cifar_dir, out), capture_output=True, env=_env(), timeout=300)
    assert last.returncode == 0, last.stderr[-2000:]
    return {"whole": json.loads(whole.stdout), "killed_at": killed_at, "termed": termed,
            "last": json.loads(last.stdout), "whole_out": root / "whole", "out": out}


def test_killed_and_stopped_run_ends_like_an_uninterrupted_one(runs):
    whole, last = runs["whole"], runs["last"]
    assert whole["resumed_from_step"] is None
    assert all(np.array_equal(a, b) for a, b in zip(_weights(runs["whole_out"]), _weights(runs["out"])))
    assert _history(runs["out"]) == _history(runs["whole_out"])
    assert last["test_accuracy"] == whole["test_accuracy"] and last["test_loss"] == whole["test_loss"]
    assert last["steps"] == whole["steps"] == STEPS


def test_sigterm_writes_a_checkpoint_and_exits_0(runs):
    termed = runs["termed"]
    assert termed["ok"] is True and termed["interrupted"] == "SIGTERM"
    assert termed["resumed_from_step"] == runs["killed_at"] and termed["steps"] > runs["killed_at"]
    assert termed["checkpoint"].endswith(f"ckpt-{termed['steps']:09d}")
    assert runs["last"]["resumed_from_step"] == termed["steps"]   # the checkpoint SIGTERM wrote


def test_history_has_one_row_per_step_and_metrics_name_the_resume(runs):
    steps = [int(row["step"]) for row in _history(runs["out"])]
    assert steps == list(range(1, STEPS + 1))
    metrics = json.loads((runs["out"] / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == runs["termed"]["steps"]
    assert len(_steps(runs["out"])) == 2 and _steps(runs["out"])[-1] == STEPS   # the last two kept


# ----------------------------------------------------------------------------- in-process runs


def _cli(capsys, *argv):
    from datakit_cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _cifar(data, out, steps, *extra):
    return ("train", "cifar10", "--data", str(data), "--steps", str(steps), "--batch", "16", "--checkpoint-every", "4",
            "--out", str(out), "--json", *extra)


def test_restart_foreign_and_corrupt_checkpoints(cifar_dir, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    code, first, _ = _cli(capsys, *_cifar(cifar_dir, out, 8))
    assert code == 0 and first["resumed_from_step"] is None and _steps(out) == [4, 8]
    # another batch size, seed or model: refused by name, nothing touched
    code, refused, _ = _cli(capsys, *_cifar(cifar_dir, out, 8), "--batch", "8")
    assert code == 1 and refused["error"] == (f"checkpoint in {out} was made with batch size 16, here 8; "
                                              "pass --restart or another --out")
    code, refused, _ = _cli(capsys, *_cifar(cifar_dir, out, 8), "--ema", "0.99")
    assert code == 1 and "--ema off, here 0.99" in refused["error"]
    # the newest checkpoint cut short: the one before it is used, with a warning
    data = next((out / "checkpoints" / "ckpt-000000008").glob("tensors.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    code, resumed, _ = _cli(capsys, *_cifar(cifar_dir, out, 12))
    assert code == 0 and resumed["resumed_from_step"] == 4 and resumed["steps"] == 12
    assert "ckpt-000000008 is unreadable (tensors.data-00000-of-00001 is cut or altered); falling back" in caplog.text
    assert [int(r["step"]) for r in _history(out)] == list(range(1, 13))
    # --restart: starts over, removing only datakit's checkpoints
    (out / "checkpoints" / "notes.txt").write_text("mine")
    code, again, _ = _cli(capsys, *_cifar(cifar_dir, out, 4), "--restart")
    assert code == 0 and again["resumed_from_step"] is None and _steps(out) == [4]
    assert (out / "checkpoints" / "notes.txt").read_text() == "mine"
    assert [int(r["step"]) for r in _history(out)] == [1, 2, 3, 4]


def test_ema_reports_raw_and_averaged_accuracy(cifar_dir, tmp_path, capsys):
    out = tmp_path / "ema"
    code, result, _ = _cli(capsys, *_cifar(cifar_dir, out, 6), "--ema", "0.9999")
    assert code == 0 and result["ema_decay"] == 0.9999
    assert 0 <= result["test_accuracy"] <= 1 and 0 <= result["test_accuracy_ema"] <= 1
    assert result["test_loss_ema"] != result["test_loss"]       # other weights
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy_ema"] == result["test_accuracy_ema"] and (out / "model_ema.keras").is_file()
    code, resumed, _ = _cli(capsys, *_cifar(cifar_dir, out, 8), "--ema", "0.9999")
    assert code == 0 and resumed["resumed_from_step"] == 6 and "test_accuracy_ema" in resumed


def test_build_trainer_stopped_mid_epoch_resumes_its_epochs(tmp_path):
    """SIGTERM in the middle of epoch 2 of the build trainer: the checkpoint holds the epoch's partial sums
    and the best weights; the resumed run has one history row per epoch and ends like an uninterrupted one."""
    from datakit import pipelines
    from datakit.train import train_build

    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = (rng.integers(0, 60, (64, 16, 16, 3)) + labels[:, None, None, None] * 60).astype(np.uint8)

    def data(stop_at=None):
        train = pipelines.from_arrays(images, labels, split="train", batch_size=8, seed=0, crop=None)
        val = pipelines.from_arrays(images[:16], labels[:16], split="val", batch_size=16, crop=None)
        if stop_at is None:
            return train, val, 4, 1 / 255

        class Signalling:  # raises SIGTERM after `stop_at` batches, like `kill -TERM` would
            state, count, dataset = train.state, train.count, train.dataset

            def __iter__(self):
                for batch in train:  # the signal arrives while batch `stop_at` trains
                    if train.state()["epoch"] * train.steps_per_epoch + train.state()["batch"] == stop_at:
                        signal.raise_signal(signal.SIGTERM)
                    yield batch

        return Signalling(), val, 4, 1 / 255

    kw = dict(epochs=3, batch_size=8, patience=5, seed=0, checkpoint_every="1000")
    whole = train_build(None, datasets=data(), out=tmp_path / "whole", **kw)
    stopped = train_build(None, datasets=data(stop_at=11), out=tmp_path / "cut", **kw)
    assert stopped["interrupted"] == "SIGTERM" and stopped["steps"] == 11 and stopped["epochs"] == 1
    resumed = train_build(None, datasets=data(), out=tmp_path / "cut", **kw)
    assert resumed["resumed_from_step"] == 11 and resumed["steps"] == whole["steps"] == 24
    with open(tmp_path / "cut" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["val_accuracy"] == pytest.approx(whole["val_accuracy"], abs=0.07)
