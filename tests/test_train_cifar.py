"""`train cifar10` end to end on tiny synthetic CIFAR-format data, through datakit.pipelines.

(The stuck-at-chance flag under random labels is tested in test_train_flag.py.)
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    from datakit.testing.synthetic_cifar import make_cifar10_dir

    dest = tmp_path_factory.mktemp("cifar")
    make_cifar10_dir(dest, train_per_batch=60, test=200, seed=1)
    return dest


@pytest.fixture(scope="module")
def cifar_run(cifar_dir, tmp_path_factory):
    from datakit.train import train_cifar10

    out = tmp_path_factory.mktemp("run") / "out"
    lines = []
    result = train_cifar10(cifar_dir, steps=40, batch_size=32, out=out, check=True, seed=0, log_every=5,
                           log=lines.append)
    return result, out, lines


def _scalars(folder):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    found = {}
    for path in folder.iterdir():
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_learns_synthetic_cifar_and_is_not_flagged(cifar_run):
    result, _, lines = cifar_run
    assert result["test_accuracy"] >= 0.8          # learnable classes, 40 steps of 32
    assert result["test_examples"] == 200          # the whole test split, last partial batch included
    assert result["stuck_at_chance"] is False and result["diagnosis"] == []
    assert result["final_loss"] < 0.5 * np.log(10)
    assert 0.0 <= result["input_wait_fraction"] < 1.0
    assert result["examples_per_sec"] > 0 and result["sec_per_batch"] > 0
    assert result["parameters"] == 1068298 and result["input_shape"] == [24, 24, 3]
    assert result["check"]["passed"] is True and result["check"]["accuracy"] >= 0.95
    assert lines[0].startswith("check: PASS")


def test_writes_model_metrics_history_and_tensorboard(cifar_run, cifar_dir):
    import keras

    from datakit import pipelines

    result, out, _ = cifar_run
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "confusion.png", "history.csv", "metrics.json", "model.keras",
                                                   "tensorboard"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result["test_accuracy"] and metrics["steps"] == 40
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert set(rows[0]) >= {"loss", "cross_entropy", "examples_per_sec", "sec_per_batch", "input_wait_sec"}
    # Total loss includes weight decay: larger than the cross-entropy at the start (the tutorial's ~4.6 vs 2.3).
    assert float(rows[0]["loss"]) > float(rows[0]["cross_entropy"]) + 1.0
    train = _scalars(out / "tensorboard" / "train")
    assert [step for step, _ in train["loss"]] == list(range(5, 41, 5))
    assert _scalars(out / "tensorboard" / "eval")["precision_at_1"] == [(40, pytest.approx(result["test_accuracy"]))]
    # The saved model reproduces precision@1 on the test split.
    model = keras.models.load_model(out / "model.keras")
    hits = n = 0
    for images, labels in pipelines.cifar10(cifar_dir, split="test", batch_size=64):
        hits += int(np.sum(np.argmax(model(images).numpy(), axis=1) == labels.numpy()))
        n += len(labels)
    assert n == 200 and hits / n == pytest.approx(result["test_accuracy"])


def test_cli_json(cifar_dir, tmp_path, capsys):
    from datakit_cli.main import main

    code = main(["train", "cifar10", "--data", str(cifar_dir), "--steps", "5", "--batch", "16", "--out",
                 str(tmp_path / "o"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] is True
    for key in ("test_accuracy", "steps", "examples_per_sec", "input_wait_fraction", "stuck_at_chance",
                "chance", "final_loss", "files"):
        assert key in result
    assert result["steps"] == 5 and result["chance"] == 0.1
    code = main(["train", "cifar10", "--data", str(tmp_path / "missing"), "--steps", "5", "--json"])
    assert code == 1 and "missing" in json.loads(capsys.readouterr().out)["error"]
