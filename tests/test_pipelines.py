"""datakit.pipelines: CIFAR and build-utk pipelines, seeds, epochs, options, device choice."""

from __future__ import annotations

import logging

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from datakit.datasets import cifar
from datakit import pipelines  # noqa: E402
from datakit.testing import synthetic_cifar
from datakit.augment import Augment  # noqa: E402
from datakit.errors import DatakitError  # noqa: E402

RAW = Augment(crop=None, flip=False, brightness=None, contrast=None, standardize=False)


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar10")
    synthetic_cifar.make_cifar10_dir(dest, train_per_batch=40, test=50, seed=1)
    return dest


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar100")
    synthetic_cifar.make_cifar100_dir(dest, train=120, test=30, seed=2)
    return dest


def collect(p):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in p])
    return xs, ys


def centre_standardized(images: np.ndarray, crop: int) -> np.ndarray:
    """The evaluation chain by hand in float64: centre crop, per-image standardization."""
    o = (images.shape[1] - crop) // 2
    x = images[:, o:o + crop, o:o + crop, :].astype(np.float64)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    sd = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(x[0].size))
    return (x - m) / sd


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_cifar10_test_split_is_deterministic_centre_crops(cifar10_dir, impl):
    images, labels = cifar.load(cifar10_dir, split="test")
    p = pipelines.cifar10(cifar10_dir, split="test", batch_size=16, impl=impl, device="cpu")
    xs, ys = collect(p)
    assert [len(y) for y in ys] == [16, 16, 16, 2] and len(p) == 4  # the last partial batch is kept
    assert int(p.dataset.cardinality()) == 4
    assert all(x.dtype == np.float32 and x.shape[1:] == (24, 24, 3) for x in xs)
    assert all(y.dtype == np.int32 for y in ys)
    np.testing.assert_array_equal(np.concatenate(ys), labels)  # file order
    np.testing.assert_allclose(np.concatenate(xs), centre_standardized(images, 24), atol=1e-4)
    xs2, _ = collect(pipelines.cifar10(cifar10_dir, split="test", batch_size=16, impl=impl, device="cpu"))
    assert all(np.array_equal(a, b) for a, b in zip(xs, xs2))


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_cifar10_train_batches_and_seeds(cifar10_dir, impl):
    p = pipelines.cifar10(cifar10_dir, batch_size=32, impl=impl, seed=7, threads=4, device="cpu")
    assert p.device == "cpu" and p.impl == impl and len(p) == 200 // 32
    xs, ys = collect(p)
    assert len(xs) == 6 and all(x.shape == (32, 24, 24, 3) and x.dtype == np.float32 for x in xs)
    assert all(y.shape == (32,) and y.dtype == np.int32 for y in ys)
    np.testing.assert_allclose(np.stack(xs).mean(axis=(2, 3, 4)), 0, atol=1e-4)  # standardized
    again, ys2 = collect(pipelines.cifar10(cifar10_dir, batch_size=32, impl=impl, seed=7, threads=1, device="cpu"))
    assert all(np.array_equal(a, b) for a, b in zip(xs, again))  # same seed, other thread count
    assert all(np.array_equal(a, b) for a, b in zip(ys, ys2))
    other, _ = collect(pipelines.cifar10(cifar10_dir, batch_size=32, impl=impl, seed=8, device="cpu"))
    assert not np.array_equal(np.stack(xs), np.stack(other))
    opts = p.dataset.options()
    assert opts.threading.private_threadpool_size == 4 and opts.deterministic


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_each_epoch_is_a_permutation_and_epochs_differ(impl):
    n = 96
    images = np.zeros((n, 8, 8, 3), np.uint8)
    images[:, :, :, 0] = np.arange(n)[:, None, None]  # the image knows its index
    p = pipelines.from_arrays(images, np.arange(n) % 10, augment=RAW, impl=impl, batch_size=16, seed=3,
                              repeat=True, device="cpu")
    batches = [(x.numpy()[:, 0, 0, 0].astype(int), y.numpy()) for x, y in p.take(3 * n // 16)]
    epochs = np.concatenate([b[0] for b in batches]).reshape(3, n)
    for e in epochs:
        assert sorted(e) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], np.arange(n))
    for ids, labels in batches:  # labels travel with their images
        np.testing.assert_array_equal(labels, ids % 10)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_each_pass_reshuffles_and_redraws_yet_seeds_reproduce(impl):
    """Keras iterates `dataset` afresh every epoch: each pass must differ, and the sequence of passes
    must be the same for the same seed."""
    images = np.repeat(np.arange(32, dtype=np.uint8)[:, None, None, None] * 7, 32, axis=1).repeat(32, axis=2)
    images = np.repeat(images, 3, axis=3)
    images[:, ::2, ::3, 1] = 250  # texture, so that crops and flips differ

    def make(seed):
        return pipelines.from_arrays(images, np.arange(32), impl=impl, batch_size=8, seed=seed, device="cpu")

    p, q = make(4), make(4)
    a1, a2 = collect(p), collect(p)
    b1, b2 = collect(q), collect(q)
    d1 = collect(make(4).dataset)
    for x, y in ((a1, b1), (a2, b2)):
        assert all(np.array_equal(u, v) for u, v in zip(x[0], y[0]))
        assert all(np.array_equal(u, v) for u, v in zip(x[1], y[1]))
    assert not np.array_equal(np.concatenate(a1[1]), np.concatenate(a2[1]))  # another order
    assert not np.allclose(np.concatenate(a1[0]), np.concatenate(a2[0]))
    assert all(np.array_equal(u, v) for u, v in zip(a1[0], d1[0]))  # iterating == iterating .dataset


def test_drop_remainder_and_no_shuffle():
    images = np.zeros((50, 8, 8, 3), np.uint8)
    images[:, :, :, 0] = np.arange(50)[:, None, None]
    for impl in ("fast", "reference"):
        p = pipelines.from_arrays(images, np.zeros(50), augment=RAW, impl=impl, batch_size=16, device="cpu")
        assert [len(y) for _, y in p] == [16, 16, 16]  # train: full batches only
        p = pipelines.from_arrays(images, np.zeros(50), augment=RAW, impl=impl, batch_size=16, shuffle=False,
                                  drop_remainder=False, device="cpu")
        order = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in p]).astype(int)
        np.testing.assert_array_equal(order, np.arange(50))


def test_cifar100_label_modes(cifar100_dir):
    for mode, classes in (("fine", 100), ("coarse", 20)):
        _, labels = cifar.load(cifar100_dir, split="test", label_mode=mode)
        p = pipelines.cifar100(cifar100_dir, split="test", batch_size=8, label_mode=mode, device="cpu")
        got = np.concatenate([y.numpy() for _, y in p])
        np.testing.assert_array_equal(got, labels)
        assert got.max() < classes
    x, y = next(iter(pipelines.cifar100(cifar100_dir, batch_size=8, seed=0, device="cpu")))
    assert x.shape == (8, 24, 24, 3) and y.dtype == tf.int32


def test_bad_arguments(cifar10_dir, tmp_path):
    with pytest.raises(DatakitError, match="needs service="):  # service= itself: tests/test_service.py
        pipelines.cifar10(cifar10_dir, processing_mode="distributed_epoch")
    with pytest.raises(DatakitError, match="impl"):
        pipelines.cifar10(cifar10_dir, impl="turbo")
    with pytest.raises(DatakitError, match="split"):
        pipelines.cifar10(cifar10_dir, split="val")
    with pytest.raises(DatakitError, match="fewer than one batch"):
        pipelines.cifar10(cifar10_dir, batch_size=512)
    with pytest.raises(DatakitError, match="does not fit"):
        pipelines.cifar10(cifar10_dir, augment=Augment(crop=40))
    with pytest.raises(DatakitError, match="no CIFAR-10"):
        pipelines.cifar10(tmp_path)
    with pytest.raises(DatakitError, match="uint8"):
        pipelines.from_arrays(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4))


# ------------------------------------------------------------------ devices


def test_device_choice(monkeypatch, caplog):
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: [])
    assert pipelines.resolve_device("auto") == "cpu"
    assert pipelines.resolve_device("cpu") == "cpu"
    with pytest.raises(DatakitError, match="sees no GPU"):
        pipelines.resolve_device("gpu")
    with pytest.raises(DatakitError, match="device must be"):
        pipelines.resolve_device("tpu")
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: ["GPU:0"])
    assert pipelines.resolve_device("auto") == "gpu"
    assert pipelines.resolve_device("gpu") == "gpu"
    assert pipelines.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: [])
    with caplog.at_level(logging.INFO, logger="datakit.pipelines"):
        p = pipelines.from_arrays(np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8), batch_size=4, device="auto")
    assert p.device == "cpu"
    assert "device=cpu" in caplog.text and "augmentation on the CPU" in p.describe()


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_gpu_branch_logic_on_a_stand_in_device(monkeypatch, cifar10_dir, impl):
    """The GPU code path (prefetch_to_device, fast augmentation applied on the device tensors) run
    with /CPU:0 standing in for the GPU: it must give the same batches as the CPU path."""
    cpu = collect(pipelines.cifar10(cifar10_dir, batch_size=32, impl=impl, seed=5, device="cpu"))
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: ["stand-in"])
    monkeypatch.setattr(pipelines, "GPU_NAME", "/CPU:0")
    p = pipelines.cifar10(cifar10_dir, batch_size=32, impl=impl, seed=5, device="auto")
    assert p.device == "gpu"
    assert ("on the GPU" if impl == "fast" else "prefetched to the GPU") in p.describe()
    assert (p._device_stream is not None) == (impl == "fast")
    gpu = collect(p)
    assert len(gpu[0]) == len(cpu[0])
    for a, b in zip(gpu[0], cpu[0]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(gpu[1], cpu[1]):
        np.testing.assert_array_equal(a, b)


def test_utk_gpu_branch_logic_on_a_stand_in_device(monkeypatch, utk_build):
    _, out, _, _ = utk_build
    cpu = collect(pipelines.utk(out, format="tfrecord", batch_size=8, seed=2, device="cpu"))
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: ["stand-in"])
    monkeypatch.setattr(pipelines, "GPU_NAME", "/CPU:0")
    gpu = collect(pipelines.utk(out, format="tfrecord", batch_size=8, seed=2))
    for a, b in zip(gpu[0], cpu[0]):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------ UTK (build-utk outputs)


@pytest.mark.parametrize("fmt", ["tfrecord", "hdf5", "folders"])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_utk_formats(utk_build, fmt, impl):
    _, out, manifest, _ = utk_build
    side = manifest["size"]
    crop = round(0.88 * side)
    n_train = sum(manifest["counts"]["train"].values())
    p = pipelines.utk(out, split="train", format=fmt, batch_size=8, impl=impl, seed=1, device="cpu")
    assert len(p) == n_train // 8
    xs, ys = collect(p)
    assert len(xs) == n_train // 8
    assert all(x.shape == (8, crop, crop, 3) and x.dtype == np.float32 for x in xs)
    labels = np.concatenate(ys)
    assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < len(manifest["classes"])
    np.testing.assert_allclose(np.concatenate(xs).mean(axis=(1, 2, 3)), 0, atol=1e-4)
    # validation: one pass, every picture once, labels as counted by the manifest
    val = pipelines.utk(out, split="val", format=fmt, batch_size=8, impl=impl, device="cpu")
    vx, vy = collect(val)
    counts = np.bincount(np.concatenate(vy), minlength=len(manifest["classes"]))
    assert counts.tolist() == [manifest["counts"]["val"][c] for c in manifest["classes"]]


def test_utk_formats_agree_and_decode_jpegs(utk_build):
    """The val split read raw (no augmentation) from each format: the same pictures, label for label."""
    _, out, manifest, _ = utk_build
    got = {}
    for fmt in ("tfrecord", "folders", "hdf5"):
        xs, ys = collect(pipelines.utk(out, split="val", format=fmt, batch_size=4, augment=RAW, device="cpu"))
        x, y = np.concatenate(xs), np.concatenate(ys)
        order = np.lexsort((x.reshape(len(x), -1).mean(axis=1), y))
        got[fmt] = (x[order], y[order])
        assert x.shape[1:] == (manifest["size"], manifest["size"], 3)
    np.testing.assert_array_equal(got["tfrecord"][1], got["folders"][1])
    np.testing.assert_array_equal(got["tfrecord"][0], got["folders"][0])  # the same JPEG bytes
    np.testing.assert_array_equal(got["hdf5"][1], got["folders"][1])
    assert np.abs(got["hdf5"][0] - got["folders"][0]).mean() < 2.0  # decoded by the builder vs by TF


def test_utk_resize_and_errors(utk_build, tmp_path):
    _, out, _, _ = utk_build
    x, _ = next(iter(pipelines.utk(out, split="val", format="tfrecord", size=32, batch_size=4, device="cpu")))
    assert x.shape == (4, 28, 28, 3)
    x, _ = next(iter(pipelines.utk(out, split="val", format="hdf5", size=32, batch_size=4, device="cpu")))
    assert x.shape == (4, 28, 28, 3)
    with pytest.raises(DatakitError, match="manifest.json"):
        pipelines.utk(tmp_path)
    with pytest.raises(DatakitError, match="no split 'holdout'"):
        pipelines.utk(out, split="holdout")
    with pytest.raises(DatakitError, match="format must be"):
        pipelines.utk(out, format="parquet")
