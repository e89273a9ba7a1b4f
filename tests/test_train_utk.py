"""`train utk` / `train build` on a tiny synthetic build-utk output, through datakit.pipelines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run_cli, synthetic_build

from datakit_cli.main import main



@pytest.fixture(scope="module")
def build48(tmp_path_factory):
    """build-utk of 24 synthetic pictures per class at 48 px, every format, a quarter for validation."""
    return synthetic_build(tmp_path_factory, "utk", per_cell=24, size=48, val_fraction=0.25, seed=0, src_seed=2)


cli = run_cli


def test_json_keys_outputs_check_and_best_weights(build48, tmp_path, capsys):
    import keras

    from datakit import pipelines
    from datakit.train import utk_augment

    out = tmp_path / "run"
    code, result, _ = cli(capsys, "train", "utk", "--data", str(build48), "--format", "hdf5", "--epochs", "3",
                          "--check", "--out", str(out), "--json")
    assert code == 0 and result["ok"] is True
    for key in ("val_accuracy", "train_accuracy", "epochs", "stuck_at_chance", "chance", "best_epoch",
                "input_wait_fraction", "examples_per_sec", "final_loss"):
        assert key in result
    assert result["chance"] == 0.125 and result["num_classes"] == 8
    assert result["check"]["passed"] is True
    assert result["input_shape"] == [42, 42, 3]               # the mild crop: 0.88 of 48 px
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "confusion.png", "history.csv", "metrics.json", "model.keras",
                                                   "tensorboard"]
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["epochs"] and set(rows[0]) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    best = max(range(len(rows)), key=lambda i: (float(rows[i]["val_accuracy"]), -i))
    assert result["best_epoch"] == best + 1
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == result["best_epoch"]
    # model.keras holds the best epoch's weights: it reproduces the reported val_accuracy.
    model = keras.models.load_model(out / "model.keras")
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)
    _, val_aug, _ = utk_augment("small", True)
    hits = n = 0
    for images, labels in pipelines.utk(build48, split="val", format="hdf5", batch_size=50, augment=val_aug):
        hits += int(np.sum(np.argmax(model(images).numpy(), axis=1) == labels.numpy()))
        n += len(labels)
    assert n == 48 and hits / n == pytest.approx(result["val_accuracy"])


def test_pipeline_scaling_small_gets_0_255_and_rescales(build48):
    """The pipeline delivers plain 0..255 pixels (standardize off); `small` scales them to [0, 1]."""
    from datakit import pipelines
    from datakit.train import utk_augment

    train_aug, val_aug, rescale = utk_augment("small", True)
    assert train_aug.flip and not train_aug.standardize and train_aug.brightness is None
    assert val_aug.center_crop and not val_aug.flip
    images, _ = next(iter(pipelines.utk(build48, split="val", batch_size=16, augment=val_aug)))
    assert float(images.numpy().max()) > 100 and float(images.numpy().min()) >= 0
    assert rescale == pytest.approx(1 / 255)
    bad_train, _, bad_rescale = utk_augment("seed-bad", True)
    assert bad_train.crop is None and not bad_train.flip and bad_rescale is None


def test_folders_without_augmentation(build48, capsys):
    code, result, _ = cli(capsys, "train", "utk", "--data", str(build48), "--format", "folders", "--epochs", "1",
                          "--no-augment", "--out", str(build48.parent / "folders-run"), "--json")
    assert code == 0 and result["format"] == "folders" and result["epochs"] == 1
    assert result["input_shape"] == [48, 48, 3] and result["augment"] is False


def test_seed_bad_refuses_too_small_images(build48, capsys, tmp_path):
    code, result, err = cli(capsys, "train", "utk", "--data", str(build48), "--model", "seed-bad",
                            "--out", str(tmp_path / "never"), "--json")
    assert code == 1 and result["ok"] is False
    assert "too small" in result["error"] and "94x94" in result["error"] and "48x48" in result["error"]
    assert not (tmp_path / "never").exists()  # refused before anything was written
    code, text, err = cli(capsys, "train", "utk", "--data", str(build48), "--model", "seed-bad")
    assert code == 1 and "datakit train: error: model seed-bad" in err


def test_missing_build_and_bad_options(tmp_path, capsys):
    code, result, _ = cli(capsys, "train", "utk", "--data", str(tmp_path), "--json")
    assert code == 1 and "manifest.json" in result["error"]
    with pytest.raises(SystemExit):
        main(["train", "utk", "--data", str(tmp_path), "--epochs", "0"])
    with pytest.raises(SystemExit):
        main(["train", "mnist"])


def test_early_stop_halves_lr_and_restores_best():
    """A validation set whose accuracy cannot change: best at epoch 1, lr halved after 2 flat epochs,
    stop after 3, epoch-1 weights restored."""
    import keras
    import tensorflow as tf

    from datakit import models
    from datakit.train import build_hyp, fit

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train = tf.data.Dataset.from_tensor_slices((rng.uniform(size=(32, 8, 8, 3)).astype(np.float32),
                                                rng.integers(0, 2, 32).astype(np.int32))).batch(8)
    same = np.zeros((2, 8, 8, 3), np.float32)   # two identical pictures, labels 0 and 1: always 50%
    val = tf.data.Dataset.from_tensor_slices((same, np.array([0, 1], np.int32))).batch(2)
    model = models.small((8, 8, 3), 2)
    seen = {}

    def log(line):  # called at the end of every epoch: keep epoch 1's weights
        if line.startswith("epoch 1/"):
            seen["epoch 1"] = [w.copy() for w in model.get_weights()]

    hyp = build_hyp("small", epochs=10, batch_size=8, patience=3)
    assert hyp.lr_patience == 2 and hyp.lr_factor == 0.5
    result = fit(model, keras.optimizers.Adam(1e-2), train, val, hyp, log=log)
    history = result["history"]
    assert [h["val_accuracy"] for h in history] == [0.5] * 4
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])
    assert result["best"]["epoch"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), seen["epoch 1"]))
    assert not all(np.array_equal(a, b) for a, b in zip(result["last_weights"], seen["epoch 1"]))
