"""`datakit.datasets.cifar` readers: exact against an independent record-by-record parse, any batch size, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from datakit.datasets import cifar
from datakit.datasets.cifar import binary
from datakit.testing import synthetic_cifar
from datakit.errors import DatakitError


def parse_records(path, label_bytes: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Independent reference: pure Python, one record and one pixel at a time, from the format description."""
    data = path.read_bytes()
    size = label_bytes + 3072
    labels, images = [], []
    for start in range(0, len(data), size):
        rec = data[start:start + size]
        labels.append(tuple(rec[:label_bytes]))
        px = rec[label_bytes:]
        images.append([[[px[c * 1024 + row * 32 + col] for c in range(3)] for col in range(32)] for row in range(32)])
    return labels, np.array(images, dtype=np.uint8)


@pytest.fixture(scope="module")
def c10(tmp_path_factory):
    dest = tmp_path_factory.mktemp("c10")
    synthetic_cifar.make_cifar10_dir(dest, train_per_batch=37, test=23, seed=5)  # not 10,000 per batch
    return dest


@pytest.fixture(scope="module")
def c100(tmp_path_factory):
    dest = tmp_path_factory.mktemp("c100")
    synthetic_cifar.make_cifar100_dir(dest, train=41, test=13, seed=6)
    return dest


def test_cifar10_load_equals_record_by_record_parse(c10):
    folder = c10 / "cifar-10-batches-bin"
    for split, files in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]), ("test", ["test_batch.bin"])):
        images, labels = cifar.load(c10, split)
        ref = [parse_records(folder / f, 1) for f in files]
        ref_labels = [lab[0] for r in ref for lab in r[0]]
        ref_images = np.concatenate([r[1] for r in ref])
        assert images.dtype == np.uint8 and images.shape == (len(ref_labels), 32, 32, 3)
        assert labels.dtype == np.int64 and labels.tolist() == ref_labels
        assert np.array_equal(images, ref_images)
    assert len(cifar.load(c10, "train")[1]) == 5 * 37


def test_rgb_order_and_plane_layout(tmp_path):
    """A record whose R plane is 10, G 20, B 30 (and one distinct pixel) reads back as RGB, row-major."""
    folder = tmp_path / "cifar-10-batches-bin"
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=1, test=1)
    planes = np.repeat(np.array([10, 20, 30], np.uint8), 1024)
    planes[0 * 1024 + 2 * 32 + 5] = 200   # R at row 2, column 5
    planes[2 * 1024 + 31 * 32 + 0] = 250  # B at row 31, column 0
    (folder / "test_batch.bin").write_bytes(bytes([7]) + planes.tobytes())
    images, labels = cifar.load(tmp_path, "test")
    assert labels.tolist() == [7]
    assert images[0, 0, 0].tolist() == [10, 20, 30]
    assert images[0, 2, 5].tolist() == [200, 20, 30] and images[0, 31, 0].tolist() == [10, 20, 250]


def test_cifar100_two_labels(c100):
    folder = c100 / "cifar-100-binary"
    for split, name in (("train", "train.bin"), ("test", "test.bin")):
        ref_labels, ref_images = parse_records(folder / name, 2)
        images_f, fine = cifar.load(c100, split)  # fine is the default
        images_c, coarse = cifar.load(c100, split, label_mode="coarse")
        assert fine.tolist() == [lab[1] for lab in ref_labels]
        assert coarse.tolist() == [lab[0] for lab in ref_labels]
        assert np.array_equal(images_f, ref_images) and np.array_equal(images_c, ref_images)
        assert np.array_equal(synthetic_cifar.FINE_TO_COARSE[fine], coarse)
    assert cifar.class_names(c100)[:3] == ["apple", "aquarium_fish", "baby"]
    assert len(cifar.class_names(c100, "coarse")) == 20


def test_dest_or_folder_and_detection(c10, c100):
    a = cifar.load(c10, "test")
    b = cifar.load(c10 / "cifar-10-batches-bin", "test")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert cifar.locate(c100 / "cifar-100-binary")[0].key == "cifar100"
    assert cifar.class_names(c10 / "cifar-10-batches-bin") == synthetic_cifar.CIFAR10_CLASSES
    with pytest.raises(DatakitError, match="does not apply to CIFAR-10"):
        cifar.load(c10, "test", label_mode="coarse")
    assert np.array_equal(cifar.load(c10, "test", label_mode="fine")[1], a[1])
    with pytest.raises(DatakitError, match="split 'val'"):
        cifar.load(c10, "val")


def test_both_data_sets_in_one_dest(tmp_path):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=2, test=2)
    synthetic_cifar.make_cifar100_dir(tmp_path, train=3, test=2)
    with pytest.raises(DatakitError, match="both CIFAR-10 and CIFAR-100"):
        cifar.load(tmp_path)
    assert len(cifar.load(tmp_path, dataset="cifar100")[1]) == 3
    assert len(cifar.load(tmp_path, dataset="cifar10")[1]) == 10


def test_nothing_there(tmp_path):
    with pytest.raises(DatakitError, match="no CIFAR-10 .* or CIFAR-100"):
        cifar.load(tmp_path)


def test_truncated_bin_names_the_file(tmp_path):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=5, test=5)
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatakitError, match=r"data_batch_2\.bin: has 15364 bytes, not a whole number of 3073-byte"):
        cifar.load(tmp_path)
    assert len(cifar.load(tmp_path, "test")[1]) == 5  # the other split is fine
    bad.write_bytes(b"")
    with pytest.raises(DatakitError, match=r"data_batch_2\.bin: is empty"):
        cifar.load(tmp_path)
    bad.unlink()
    with pytest.raises(DatakitError, match="missing data_batch_2.bin"):
        cifar.load(tmp_path)


def test_label_out_of_range_names_file_and_record(tmp_path):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=3, test=4)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[2 * 3073] = 12
    path.write_bytes(bytes(data))
    with pytest.raises(DatakitError, match=r"test_batch\.bin: record 2 has label 12, outside 0\.\.9"):
        cifar.load(tmp_path, "test")


def test_many_records_span_reader_chunks(tmp_path, monkeypatch):
    """Files larger than one thread's chunk, on several threads, still come out in file order."""
    synthetic_cifar.make_cifar100_dir(tmp_path, train=250, test=3, seed=9)
    monkeypatch.setattr(binary, "_CHUNK_RECORDS", 64)
    images, fine = cifar.load(tmp_path, "train", workers=3)
    ref_labels, ref_images = parse_records(tmp_path / "cifar-100-binary" / "train.bin", 2)
    assert fine.tolist() == [lab[1] for lab in ref_labels] and np.array_equal(images, ref_images)
    one = cifar.load(tmp_path, "train", workers=1)
    assert np.array_equal(one[0], images)


def test_numpy_interleave_matches_opencv():
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 256, size=(50, 3073), dtype=np.uint8)[:, 1:]  # strided rows, like a record view
    a = np.empty((50, 1024, 3), np.uint8)
    b = np.empty((50, 1024, 3), np.uint8)
    cifar._interleave(planes, a)
    cifar._interleave_numpy(planes, b)
    assert np.array_equal(a, b)
    assert np.array_equal(a.reshape(50, 32, 32, 3), planes.reshape(50, 3, 32, 32).transpose(0, 2, 3, 1))


def test_class_names_trailing_blank_lines_and_bad_files(tmp_path):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=1, test=1)
    meta = tmp_path / "cifar-10-batches-bin" / "batches.meta.txt"
    assert meta.read_text().endswith("truck\n\n\n")  # like the official file
    assert cifar.class_names(tmp_path) == synthetic_cifar.CIFAR10_CLASSES
    meta.write_text("airplane\nautomobile\n\n")
    with pytest.raises(DatakitError, match=r"batches\.meta\.txt: expected 10 non-empty class names, found 2"):
        cifar.class_names(tmp_path)


def test_tf_records_and_decode_match_the_numpy_reader(c10, c100):
    import tensorflow as tf

    from datakit.datasets.cifar import tfdata

    fmt = cifar.record_format(c10)
    assert fmt["record_bytes"] == 3073 and fmt["label_offsets"] == {"label": 0}
    s, folder = cifar.locate(c10)
    files = cifar.split_files(s, folder, "test")
    raw = list(tfdata.records(files, s).as_numpy_iterator())
    assert len(raw) == 23 and all(len(r) == 3073 for r in raw)
    assert b"".join(raw) == (c10 / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    images, labels = cifar.load(c10, "test")
    decoded = list(tfdata.records(files, s).map(lambda r: tfdata.decode(r, s, 0)).as_numpy_iterator())
    assert np.array_equal(np.stack([d[0] for d in decoded]), images)
    assert [int(d[1]) for d in decoded] == labels.tolist() and decoded[0][1].dtype == np.int32
    # CIFAR-100, coarse labels
    _, coarse = cifar.load(c100, "test", label_mode="coarse")
    s100, folder100 = cifar.locate(c100)
    offset = cifar.record_format(c100)["label_offsets"]["coarse"]
    ds = tfdata.records(cifar.split_files(s100, folder100, "test"), s100).map(lambda r: tfdata.decode(r, s100, offset))
    assert [int(lab) for _, lab in ds.as_numpy_iterator()] == coarse.tolist()
    assert isinstance(ds, tf.data.Dataset)


def test_numpy_decode_of_a_block(c100):
    s, folder = cifar.locate(c100)
    block = np.fromfile(folder / "test.bin", np.uint8).reshape(-1, s.record_bytes)
    images, fine = cifar.decode(block, s, s.label_offsets["fine"])
    assert images.shape == (len(block), 32, 32, 3) and images.dtype == np.uint8
    ref_images, ref_fine = cifar.load(c100, "test")
    assert np.array_equal(images, ref_images) and np.array_equal(fine, ref_fine)


def test_dataset_count_refuses_partial_record(tmp_path):
    from datakit.datasets import open_dataset

    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=2, test=2)
    bad = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    bad.write_bytes(bad.read_bytes() + b"\0")
    ds = open_dataset(tmp_path)
    assert ds.count("train") == 10
    with pytest.raises(DatakitError, match=r"test_batch\.bin: has 6147 bytes"):
        ds.count("test")


def test_spec_holds_the_published_counts():
    assert cifar.CIFAR10.split_records == {"train": 50000, "test": 10000}
    assert cifar.CIFAR100.split_records == {"train": 50000, "test": 10000}
    assert synthetic_cifar.FINE_TO_COARSE is cifar.FINE_TO_COARSE
    assert np.bincount(cifar.FINE_TO_COARSE, minlength=20).tolist() == [5] * 20  # five fine classes per coarse one


def test_synthetic_classes_are_learnable():
    """A nearest-class-mean classifier on the synthetic pictures beats chance by far (CIFAR-10 and -100)."""
    rng = np.random.default_rng(1)
    x, y = synthetic_cifar.cifar10_arrays(1000, rng)
    means = np.stack([x[y == c].reshape(-1, 3072).mean(0) for c in range(10)])
    xt, yt = synthetic_cifar.cifar10_arrays(300, rng)
    pred = ((xt.reshape(-1, 1, 3072).astype(np.float32) - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() > 0.95
    x, fine, coarse = synthetic_cifar.cifar100_arrays(1000, rng)
    means = np.stack([x[fine == c].reshape(-1, 3072).mean(0) for c in range(100)])
    xt, ft, _ = synthetic_cifar.cifar100_arrays(150, rng)
    pred = ((xt.reshape(-1, 1, 3072).astype(np.float32) - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == ft).mean() > 0.8
