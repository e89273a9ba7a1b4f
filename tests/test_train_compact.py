"""The compact model and what came with it: shapes and parameter counts, --size in every format,
the one-cycle schedule, label smoothing's reported loss, the confusion matrix (file and --json),
and the per-epoch time and estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, synthetic_build



@pytest.fixture(scope="module")
def build80(tmp_path_factory):
    """build-utk of 16 synthetic pictures per class at 80 px, every format, a quarter for validation."""
    return synthetic_build(tmp_path_factory, "utk80", per_cell=16, size=80, val_fraction=0.25, seed=0, src_seed=5)


cli = run_cli


@pytest.mark.parametrize("side", [64, 96, 200])
def test_compact_shapes_and_parameters(side):
    from datakit import models

    model = models.compact((side, side, 3), 8, rescale=1 / 255)
    assert model.output_shape == (None, 8)
    assert model.count_params() < 2_000_000
    # GAP: the parameter count does not depend on the input size (only convolutions and one 8-way layer)
    assert model.count_params() == models.compact((32, 32, 3), 8).count_params()
    dense = [w for layer in model.layers if layer.name == "probabilities" for w in layer.get_weights()]
    assert sum(w.size for w in dense) == models.COMPACT_WIDTHS[-1] * 8 + 8
    probs = model(np.full((2, side, side, 3), 128, np.float32), training=False).numpy()
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers)


def test_small_keeps_its_giant_dense_layer():
    """`small` stays the seed's answer (for comparison): nearly all its weights in one dense layer."""
    from datakit import models

    model = models.small((200, 200, 3), 8, rescale=1 / 255)
    dense = model.get_layer("dense").count_params()
    assert dense == 25 * 25 * 64 * 512 + 512 and dense / model.count_params() > 0.99
    assert models.compact((200, 200, 3), 8).count_params() * 20 < model.count_params()


def test_the_cli_does_not_load_tensorflow_for_its_help_or_builds():
    """The recipes table feeds `train`'s help; reading it must not import Keras (build-utk's memory and start-up)."""
    import subprocess
    import sys

    code = ("import sys, datakit_cli.main as m; m.build_parser(); "
            "import datakit.recipes; print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_cycle_schedule_rises_then_falls_to_zero():
    from datakit.schedules import OneCycle

    sched = OneCycle(0.1, total_steps=100, warmup_steps=10)
    lrs = [float(sched(s)) for s in range(0, 101, 5)]
    assert lrs[0] == 0 and lrs[2] == pytest.approx(0.1) and lrs[-1] == 0
    assert lrs[:3] == sorted(lrs[:3]) and lrs[2:] == sorted(lrs[2:], reverse=True)
    assert OneCycle.from_config(sched.get_config()).get_config() == sched.get_config()


def test_label_smoothing_reports_the_plain_cross_entropy():
    """The gradient follows the smoothed loss; the cross-entropy the diagnosis reads is against the true labels."""
    import keras
    import tensorflow as tf

    from datakit.train import make_steps

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = tf.random.uniform((16, 4))
    y = tf.constant(np.arange(16) % 3, tf.int32)
    before = model(x).numpy()
    plain = float(keras.losses.SparseCategoricalCrossentropy()(y, before))
    smoothed = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(tf.one_hot(y, 3), before))
    step, _ = make_steps(model, keras.optimizers.SGD(0.0), False, label_smoothing=0.1)
    total, ce, _ = step(x, y)
    assert float(ce) == pytest.approx(plain, rel=1e-5)
    assert float(total) == pytest.approx(smoothed, rel=1e-5) and float(total) != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("fmt", ["tfrecord", "hdf5", "folders"])
def test_size_resizes_in_every_format(build80, fmt):
    """--size S: the pipeline resizes (then crops 0.88), whatever the format; the formats agree."""
    from datakit.train import build_data

    data = build_data(build80, fmt, 16, True, 0, "compact", size=50)
    images, _ = next(iter(data.eval))
    assert images.shape[1:] == (44, 44, 3)           # round(0.88 * 50)
    train_images, _ = next(iter(data.train))
    assert train_images.shape[1:] == (44, 44, 3)
    assert data.classes == json.loads((build80 / "manifest.json").read_text())["classes"]
    ref = build_data(build80, "hdf5", 16, True, 0, "compact", size=50)
    a, la = (np.concatenate(v) for v in zip(*[(x.numpy(), y.numpy()) for x, y in data.eval]))
    b, lb = (np.concatenate(v) for v in zip(*[(x.numpy(), y.numpy()) for x, y in ref.eval]))
    assert a.shape == b.shape and sorted(la) == sorted(lb)
    # Each format's val picture is one of the HDF5 arrays' (the same decoded pixels; the order may differ),
    # resized alike: the closest HDF5 picture is within JPEG-decoder noise, and of the same class.
    dist = np.abs(a[:, None].astype(np.float32) - b[None].astype(np.float32)).mean(axis=(2, 3, 4))
    nearest = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 2.0 and np.array_equal(la, lb[nearest])
    assert len(set(nearest)) == len(nearest)


def test_default_size_never_upsamples(build80):
    from datakit.train import build_data, open_build, train_size

    dataset = open_build(build80)
    assert train_size("compact", dataset, None) == 64 and train_size("small", dataset, None) is None
    assert train_size("small", dataset, 100) == 100
    assert train_size("compact", type("Build", (), {"size": 48})(), None) is None  # a 48 px build stays 48 px
    data = build_data(build80, "tfrecord", 16, True, 0, "small")
    assert next(iter(data.eval))[0].shape[1:] == (70, 70, 3)  # the build's 80 px, cropped 0.88


def test_cli_size_confusion_matrix_and_pace(build80, tmp_path, capsys):
    import cv2

    out = tmp_path / "run"
    code, text, err = cli(capsys, "train", "utk", "--data", str(build80), "--size", "40", "--epochs", "2",
                          "--format", "folders", "--out", str(out))
    result = json.loads((out / "metrics.json").read_text())   # everything --json prints
    assert "per-class accuracy: white_male" in text and "s/epoch); " in text
    assert code == 0 and result["model"] == "compact" and result["input_shape"] == [35, 35, 3]
    assert result["optimizer"] == "sgd" and result["schedule"] == "one-cycle" and result["label_smoothing"] == 0.1
    assert result["batch_size"] == 64 and result["max_epochs"] == 2 and result["seconds"] > 0
    conf = result["confusion"]
    counts = np.array(conf["counts"])
    assert counts.shape == (8, 8) and counts.sum() == 32              # every val picture once
    assert conf["classes"] == json.loads((build80 / "manifest.json").read_text())["classes"]
    assert np.trace(counts) / counts.sum() == pytest.approx(result["val_accuracy"])   # the kept (best) weights
    assert list(result["per_class_accuracy"]) == conf["classes"]
    assert result["per_class_accuracy"][conf["classes"][0]] == pytest.approx(counts[0, 0] / counts[0].sum())
    png = cv2.imread(str(out / "confusion.png"))
    assert png is not None and png.shape[0] > 8 * 40 and png.shape[1] > 8 * 40
    assert result["files"]["confusion"] == str(out / "confusion.png")
    assert "epoch 1/2:" in err and "s/epoch, about" in err and "left" in err


def test_confusion_png_is_written_atomically_and_reads_any_class_count(tmp_path):
    import cv2

    from datakit.confusion import per_class_accuracy, write_png

    counts = np.arange(100 * 100).reshape(100, 100) % 7
    path = write_png(counts, [f"class{i}" for i in range(100)], tmp_path / "c.png", "cifar100")
    assert cv2.imread(str(path)) is not None and sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]
    acc = per_class_accuracy(np.array([[3, 1], [0, 0]]), ["a", "b"])
    assert acc == {"a": 0.75, "b": None}
