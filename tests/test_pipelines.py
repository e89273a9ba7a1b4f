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


# ------------------------------------------------------------------ PipelineOptions


def test_options_are_checked_in_one_place_and_errors_name_the_parameter():
    from datakit.pipelines import PipelineOptions

    for field, value in (("batch_size", 0), ("batch_size", True), ("threads", -2), ("impl", "turbo"),
                         ("device", "tpu"), ("shuffle", "yes"), ("repeat", None), ("seed", 1.5),
                         ("augment", "flip"), ("processing_mode", "distributed_epoch"), ("jit", 1)):
        with pytest.raises(DatakitError) as exc:
            PipelineOptions(**{field: value})
        assert exc.value.param == field and field in str(exc.value)
    with pytest.raises(DatakitError) as exc:
        PipelineOptions(service="nowhere")
    assert exc.value.param == "service"
    # every constructor goes through the same check: keyword or options=, the same error
    images = np.zeros((8, 8, 8, 3), np.uint8)
    with pytest.raises(DatakitError) as by_keyword:
        pipelines.from_arrays(images, np.zeros(8), batch_size=0)
    with pytest.raises(DatakitError) as by_options:
        pipelines.from_arrays(images, np.zeros(8), options=PipelineOptions(batch_size=1), threads=0)
    assert by_keyword.value.param == "batch_size" and by_options.value.param == "threads"
    with pytest.raises(TypeError, match="bach_size"):
        pipelines.from_arrays(images, np.zeros(8), bach_size=4)


def test_options_object_and_keywords_build_the_same_pipeline():
    from datakit.pipelines import PipelineOptions

    images = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    opts = PipelineOptions(batch_size=8, seed=11, device="cpu", threads=2)
    a = collect(pipelines.from_arrays(images, np.arange(40), options=opts))
    b = collect(pipelines.from_arrays(images, np.arange(40), batch_size=8, seed=11, device="cpu", threads=2))
    c = pipelines.from_arrays(images, np.arange(40), options=opts, batch_size=4)  # a keyword overrides the object
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0])) and len(a[0]) == 5
    assert c.batch_size == 4 and c.steps_per_epoch == 10 and opts.batch_size == 8


def test_jit_is_an_option_not_a_module_global():
    from datakit import augment
    from datakit.pipelines import PipelineOptions

    images = np.random.default_rng(1).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    jit = collect(pipelines.from_arrays(images, np.arange(16), batch_size=8, seed=3, device="cpu"))
    plain = collect(pipelines.from_arrays(images, np.arange(16), options=PipelineOptions(batch_size=8, seed=3,
                                                                                          device="cpu", jit=False)))
    assert augment.JIT is True  # untouched
    for a, b in zip(jit[0], plain[0]):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_cli_names_the_flag_of_a_bad_pipeline_option(cifar10_dir, capsys):
    import json

    from datakit_cli.main import main

    code = main(["train", "cifar10", "--data", str(cifar10_dir), "--steps", "1", "--service", "no-port-here",
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and "--service" in result["error"] and "grpc://HOST:PORT" in result["error"]


def test_local_pipeline_has_no_service_fields(cifar10_dir):
    p = pipelines.cifar10(cifar10_dir, split="test", batch_size=16, device="cpu")
    assert p.service is None and p.processing_mode is None and p.count == 50
    assert "tf.data service" not in p.describe()


# ------------------------------------------------------------------ dataset sources


def test_cifar_tf_decode_matches_the_numpy_reader_record_by_record_and_per_batch(cifar100_dir):
    from datakit.datasets.cifar import tfdata as cifar_tf
    from datakit.datasets.cifar.dataset import CifarDataset

    for mode in ("fine", "coarse"):
        dataset = CifarDataset(cifar100_dir, label_mode=mode)
        images, labels = cifar.load(cifar100_dir, split="test", label_mode=mode)
        files = dataset.files("test")
        offset = cifar_tf.label_offset(dataset.spec, dataset.label_mode)
        one = list(cifar_tf.records(files, dataset.spec).map(
            lambda r: cifar_tf.decode(r, dataset.spec, offset)).as_numpy_iterator())
        np.testing.assert_array_equal(np.stack([x for x, _ in one]), images)
        assert [int(y) for _, y in one] == labels.tolist() and one[0][1].dtype == np.int32
        batched = list(cifar_tf.records(files, dataset.spec).batch(7).map(
            lambda r: cifar_tf.decode(r, dataset.spec, offset)).as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batched]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in batched]), labels)
        src = dataset.tf_source("test")
        assert src.count == len(labels) and src.image_shape == (32, 32, 3) and src.in_memory and src.streams


def test_cifar_streamed_source_gives_the_in_memory_batches(cifar10_dir):
    """The path tf.data service workers run (records streamed from the files, decoded per batch),
    run here: the same evaluation batches as the in-memory path."""
    import dataclasses

    from datakit.datasets.cifar.dataset import CifarDataset

    src = CifarDataset(cifar10_dir).tf_source("test")
    for impl in ("fast", "reference"):
        memory = collect(pipelines.from_source(src, "test", batch_size=16, impl=impl, device="cpu"))
        streamed = collect(pipelines.from_source(dataclasses.replace(src, load=None), "test", batch_size=16,
                                                 impl=impl, device="cpu"))
        for a, b in zip(memory[0] + memory[1], streamed[0] + streamed[1]):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _generic_build(utk_out, dest):
    """A copy of a build whose manifest names another dataset and other class names: what any
    `datakit build` output looks like to the pipelines (a manifest, shards, HDF5)."""
    import json
    import shutil

    shutil.copytree(utk_out, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["dataset"] = "not-utk-at-all"
    manifest["classes"] = [f"kind-{i}" for i in range(len(manifest["classes"]))]
    manifest["counts"] = {split: {new: n for new, n in zip(manifest["classes"], counts.values())}
                          for split, counts in manifest["counts"].items()}
    for key in ("fields", "class_by", "class_keys", "races"):
        manifest.pop(key, None)
    manifest["outputs"].pop("folders", None)
    shutil.rmtree(dest / "folders", ignore_errors=True)
    manifest["files"] = {rel: h for rel, h in manifest.get("files", {}).items() if not rel.startswith("folders/")}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest, manifest


@pytest.mark.parametrize("fmt", ["tfrecord", "hdf5"])
def test_build_reads_any_manifest_driven_build(utk_build, tmp_path, fmt):
    from datakit.datasets.registry import open_dataset

    _, out, _, _ = utk_build
    dest, manifest = _generic_build(out, tmp_path / "generic")
    assert open_dataset(dest).key == "not-utk-at-all"
    val = pipelines.build(dest, split="val", format=fmt, augment=RAW, batch_size=4, device="cpu")
    xs, ys = collect(val)
    counts = np.bincount(np.concatenate(ys), minlength=len(manifest["classes"]))
    assert counts.tolist() == [manifest["counts"]["val"][c] for c in manifest["classes"]]
    assert xs[0].shape[1:] == (manifest["size"], manifest["size"], 3) and val.count == sum(counts)
    same = collect(pipelines.utk(out, split="val", format=fmt, augment=RAW, batch_size=4, device="cpu"))
    np.testing.assert_array_equal(np.concatenate(ys), np.concatenate(same[1]))  # utk is a thin wrapper of build
    train = pipelines.build(dest, format=fmt, batch_size=8, seed=0, device="cpu")
    side = round(0.88 * manifest["size"])  # the dataset's default crop
    assert next(iter(train))[0].shape == (8, side, side, 3) and train.batch_size == 8
    assert pipelines.build(dest, "val", format=fmt, device="cpu").batch_size == 64  # a build's default batch
    with pytest.raises(DatakitError, match="format 'folders' was not built") as exc:
        pipelines.build(dest, format="folders")
    assert exc.value.param == "format"


def test_cifar_partial_record_is_an_error_naming_the_file(tmp_path):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=2, test=2)
    bad = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    bad.write_bytes(bad.read_bytes() + b"\0")
    with pytest.raises(DatakitError, match=r"test_batch\.bin: has 6147 bytes"):
        pipelines.cifar10(tmp_path, split="test", device="cpu")


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_grouped_fast_path_gives_the_batches_of_one_call_per_batch(monkeypatch, drop_remainder):
    """The in-memory fast path runs _GROUP batches per compiled call (the epoch's last group padded):
    the batches, their order and a resume in the middle of a group are those of one call per batch."""
    images = np.random.default_rng(5).integers(0, 255, (87, 32, 32, 3), dtype=np.uint8)  # 21 batches + 3
    labels = np.arange(87)

    def run(group, resume=None, n=30):
        monkeypatch.setattr(pipelines, "_GROUP", group)
        p = pipelines.from_arrays(images, labels, batch_size=4, seed=7, device="cpu", repeat=True,
                                  drop_remainder=drop_remainder, resume=resume)
        return [(x.numpy(), y.numpy()) for x, y in p.take(n)], p

    one, _ = run(1, n=50)
    grouped, _ = run(8, n=50)
    assert len(one) == len(grouped) == 50
    for (a, la), (b, lb) in zip(one, grouped):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    sizes = [len(y) for _, y in grouped]
    assert sizes[:22] == [4] * 21 + ([4] if drop_remainder else [3])
    _, p = run(8, n=11)  # stop inside the second group of epoch 0
    resumed, _ = run(8, resume=p.state(), n=39)
    for (a, la), (b, lb) in zip(one[11:], resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
