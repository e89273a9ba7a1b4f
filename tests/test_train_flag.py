"""stuck_at_chance must be honest both ways, in both trainers: random labels flagged, true labels not.

The pictures here have a busy random background and a small class marker (colour x bar
orientation) at a random place: learnable, yet a model trained without the labels' information
makes predictions that vary picture by picture, so its held-out accuracy really sits near 1/K.
(With synthetic sets made of a few tight colour clusters a label-blind model gets whole clusters
right or wrong at once, and its accuracy jumps in steps of 1/K.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

MARKER_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def busy_picture(label: int, rng, size: int = 32) -> np.ndarray:
    import cv2

    low = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 20, size=(size, size, 3))
    colour, bar = divmod(label, 2)
    y, x = rng.integers(2, size - 14, size=2)
    img[y:y + 12, x:x + 12] = MARKER_COLOURS[colour]
    if bar:
        img[y + 4:y + 8, x:x + 12] = 0
    else:
        img[y:y + 12, x + 4:x + 8] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def busy_build(tmp_path_factory):
    """A build-utk output of 8 classes x 80 busy pictures (32 px), half of each class for validation."""
    import cv2

    from datakit.datasets import utk
    from datakit.testing.synthetic import utk_name

    src = tmp_path_factory.mktemp("busy-src")
    rng = np.random.default_rng(0)
    for label in range(8):
        race, gender = divmod(label, 2)
        for _ in range(80):
            rgb = busy_picture(label, rng)
            cv2.imwrite(str(src / utk_name(30, gender, race, rng)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = tmp_path_factory.mktemp("busy") / "build"
    utk.build(src, out, per_class=80, size=32, seed=0, val_fraction=0.5, formats=("tfrecord",), workers=2)
    return out


@pytest.mark.parametrize("model,epochs", [("compact", 12), ("small", 6)])
def test_utk_true_labels_learn_and_are_not_flagged(busy_build, model, epochs):
    from datakit.train import train_utk

    result = train_utk(busy_build, model_name=model, epochs=epochs, seed=0)
    assert result["val_accuracy"] >= 0.6
    assert result["stuck_at_chance"] is False and result["diagnosis"] == []
    assert result["final_loss"] < 0.5 * np.log(8)


@pytest.mark.parametrize("model,epochs", [("compact", 8), ("small", 5)])
def test_utk_shuffled_labels_are_flagged(busy_build, capsys, model, epochs):
    from datakit_cli.main import main

    code = main(["train", "utk", "--data", str(busy_build), "--model", model, "--epochs", str(epochs),
                 "--shuffle-labels", "--seed", "1", "--out", str(busy_build.parent / f"shuffled-{model}"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["shuffle_labels"] is True
    assert result["val_accuracy"] <= 1.5 / 8 and result["chance"] == 0.125
    assert abs(result["final_loss"] - np.log(8)) <= 0.1 * np.log(8)
    assert result["stuck_at_chance"] is True
    assert "ln(8) = 2.079" in result["diagnosis"][0]


def test_cifar10_trainer_flags_random_labels_but_not_true_ones():
    from datakit import pipelines
    from datakit.train import train_cifar10

    rng = np.random.default_rng(3)
    labels = np.arange(1200) % 10
    images = np.stack([busy_picture(int(k), rng) for k in labels])
    test_labels = np.arange(500) % 10
    test_images = np.stack([busy_picture(int(k), rng) for k in test_labels])

    def run(shuffle_labels):
        train = pipelines.from_arrays(images, labels, split="train", batch_size=32, seed=0, repeat=True)
        test = pipelines.from_arrays(test_images, test_labels, split="test", batch_size=100)
        return train_cifar10(None, steps=80, batch_size=32, seed=0, shuffle_labels=shuffle_labels,
                             datasets=(train, test))

    control = run(True)
    assert control["test_accuracy"] <= 0.15 and control["stuck_at_chance"] is True
    real = run(False)
    assert real["test_accuracy"] >= 0.4 and real["stuck_at_chance"] is False
