"""doctor: clean builds pass; planted faults are caught by the check meant to catch them."""

from __future__ import annotations

import io
import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import synthetic_build
from PIL import Image

from datakit import doctor, neardup, tfrecord
from datakit.errors import DatakitError



@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A clean 64 px build: 16 pictures per class, 12 train / 4 val, all three formats."""
    return synthetic_build(tmp_path_factory, "doctor", per_cell=16, size=64, val_fraction=0.25, seed=3, src_seed=11)


@pytest.fixture
def copy(build, tmp_path):
    """A private copy of the clean build to plant a fault in."""
    dest = tmp_path / "build"
    shutil.copytree(build, dest)
    return dest


def statuses(result) -> dict:
    return {c["check"]: c["status"] for c in result["checks"]}


def findings(result, check) -> str:
    return "\n".join(result["findings"].get(check, []))


def manifest(root):
    return json.loads((root / "manifest.json").read_text())


# -- fault planting helpers: each edits the build as a bug (or a person) would --------------------

def folder_file(root, split, index=0):
    return sorted((root / "folders" / split).rglob("*.jpg"))[index]


def read_shard(root, split):
    rel = manifest(root)["outputs"]["tfrecord"][split][0]
    return root / rel, [tfrecord.parse_example(r) for r in tfrecord.read_records(root / rel)]


def write_shard(path, examples):
    with open(path, "wb") as f:
        for ex in examples:
            tfrecord.write_record(f, tfrecord.encode_example(ex))


def plain(ex: dict) -> dict:
    """A parsed Example back into encode_example's input form."""
    return {k: (v[0] if len(v) == 1 else v) for k, v in ex.items()}


def h5_path(root, split):
    return root / manifest(root)["outputs"]["hdf5"][split][0]


def h5_append(path, pixels, label, age, gender, race, filename):
    with h5py.File(path, "a") as f:
        n = len(f["images"])
        f["images"].resize(n + 1, axis=0)
        f["images"][n] = pixels
        for key, value in (("labels", label), ("age", age), ("gender", gender), ("race", race)):
            data = np.append(f[key][:], value)
            del f[key]
            f.create_dataset(key, data=data.astype(np.int64))
        names = [x.decode() if isinstance(x, bytes) else x for x in f["filenames"][:]] + [filename]
        del f["filenames"]
        f.create_dataset("filenames", data=np.array(names, dtype=object), dtype=h5py.string_dtype("utf-8"))


def jpeg(pixels, quality=95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def copy_into_val(root, new_name, transform=None):
    """Copy the first train picture into val under `new_name`, consistently in all three formats
    (optionally changed by `transform(pixels) -> pixels`). Returns the original file name."""
    path, examples = read_shard(root, "train")
    ex = plain(examples[0])
    name = ex["image/filename"].decode()
    pixels = np.asarray(Image.open(io.BytesIO(ex["image/encoded"])).convert("RGB"))
    data = ex["image/encoded"]
    if transform is not None:
        pixels = transform(pixels)
        data = jpeg(pixels, quality=80)
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    text = ex["image/class/text"].decode()
    (root / "folders" / "val" / text / new_name).write_bytes(data)
    val_path, val_examples = read_shard(root, "val")
    write_shard(val_path, [plain(e) for e in val_examples]
                + [{**ex, "image/encoded": data, "image/filename": new_name}])
    h5_append(h5_path(root, "val"), pixels, ex["image/class/label"], ex["age"], ex["gender"], ex["race"], new_name)
    return name


def renamed(name: str) -> str:
    """The same UTKFace labels under another time stamp: 'a file copied under a second name'."""
    age, gender, race = name.split("_")[:3]
    return f"{age}_{gender}_{race}_20991231235959999.jpg.chip.jpg"


# -- clean ----------------------------------------------------------------------------------------

def test_clean_build_passes(build):
    result = doctor.doctor(build, workers=2)
    st = statuses(result)
    data_checks = [c for c in st if c != "augment"]
    assert {c: st[c] for c in data_checks} == {c: "ok" for c in data_checks}, result["checks"]
    assert result["errors"] == 0
    assert result["pictures_read"] == 3 * 8 * 16
    table = result["colour"]["train"]
    assert set(table) == set(result["classes"]) and all(row["n"] == 12 for row in table.values())
    # synthetic UTK: race drives the background colour; white (red) is redder than black (green)
    assert table["white_male"]["mean"][0] > table["black_male"]["mean"][0] + 50


def test_cli_json_and_exit_codes(build, copy, capsys):
    from datakit_cli.main import main

    assert main(["doctor", str(build), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert all(set(c) == {"check", "status", "detail"} for c in out["checks"])
    assert {c["status"] for c in out["checks"]} <= {"ok", "warning", "error"}
    copy_into_val(copy, renamed(folder_file(copy, "train").name))
    assert main(["doctor", str(copy), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and any(c["check"] == "leakage" and c["status"] == "error" for c in out["checks"])
    assert main(["doctor", str(copy)]) == 1
    text = capsys.readouterr().out
    assert "error    leakage" in text and "errors" in text


def test_not_a_data_set(tmp_path):
    with pytest.raises(DatakitError, match="neither a build-utk output"):
        doctor.doctor(tmp_path)
    (tmp_path / ".datakit-build").write_text("")
    with pytest.raises(DatakitError, match="incomplete build-utk output"):
        doctor.doctor(tmp_path)


# -- planted faults --------------------------------------------------------------------------------

def test_copy_under_second_name_in_both_splits_is_leakage(copy):
    original = copy_into_val(copy, "33_0_0_20991231235959999.jpg.chip.jpg")
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["leakage"] == "error"
    assert f"train/{original} = val/33_0_0_20991231235959999.jpg.chip.jpg (folders, tfrecord, hdf5)" in findings(
        result, "leakage")
    assert st["formats-agree"] == "ok"  # planted consistently: the formats agree with each other
    assert st["balance"] == "error"  # val holds one more picture than the manifest says
    assert st["files"] == "error"  # and the files no longer match their sha256


def test_near_duplicate_across_splits_is_a_warning(copy):
    brighter = lambda px: np.clip(px.astype(np.int16) + 12, 0, 255).astype(np.uint8)  # noqa: E731
    original = copy_into_val(copy, "new_0_0_1.jpg", transform=brighter)
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["leakage"] == "ok"  # not the same pixels
    assert st["near-duplicates"] == "warning"
    assert f"val/new_0_0_1.jpg ~ train/{original}" in findings(result, "near-duplicates") or \
        f"train/{original} ~ val/new_0_0_1.jpg" in findings(result, "near-duplicates")


def test_exact_duplicate_within_a_split_is_a_warning(copy):
    first = folder_file(copy, "val")
    shutil.copyfile(first, first.with_name(renamed(first.name)))
    result = doctor.doctor(copy, workers=2)
    assert statuses(result)["duplicates"] == "warning"
    assert renamed(first.name) in findings(result, "duplicates")
    assert statuses(result)["formats-agree"] == "error"  # only the folders hold the copy


def test_label_swapped_in_one_format(copy):
    path = h5_path(copy, "train")
    with h5py.File(path, "a") as f:
        labels = f["labels"][:]
        i = int(np.nonzero(labels == 0)[0][0])  # a white_male picture ...
        labels[i] = 4  # ... labelled asian_male in the HDF5 file only
        f["labels"][...] = labels
        name = f["filenames"][i].decode()
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["formats-agree"] == "error"
    assert f"train/{name}: label white_male in folders, asian_male in hdf5" in findings(result, "formats-agree")
    assert st["labels"] == "error"
    assert "labelled asian_male but the file name says white_male" in findings(result, "labels")


def test_label_swapped_in_every_format(copy):
    """A wrong label written consistently everywhere: the formats agree, but the file name (and,
    for classes that differ in colour, the colour statistics) still give it away."""
    path, examples = read_shard(copy, "train")
    ex = next(plain(e) for e in examples if e["image/class/label"][0] == 0)  # white_male
    name = ex["image/filename"].decode()
    swapped = [plain(e) for e in examples]
    for e in swapped:
        if e["image/filename"] == name.encode():
            e["image/class/label"], e["image/class/text"] = 4, b"asian_male"
    write_shard(path, swapped)
    with h5py.File(h5_path(copy, "train"), "a") as f:
        names = [x.decode() for x in f["filenames"][:]]
        labels = f["labels"][:]
        labels[names.index(name)] = 4
        f["labels"][...] = labels
    src = copy / "folders" / "train" / "white_male" / name
    src.rename(copy / "folders" / "train" / "asian_male" / name)
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["formats-agree"] == "ok"
    assert st["labels"] == "error"
    labels_found = findings(result, "labels")
    for fmt in ("folders", "tfrecord", "hdf5"):
        assert f"{fmt}: " in labels_found
    assert "labelled asian_male but the file name says white_male" in labels_found
    assert st["colour-outliers"] == "warning"
    # white_male and white_female share the colour (gender is the shape): either is the nearest class
    assert f"{name}: labelled asian_male, colours of white_" in findings(result, "colour-outliers")


def test_truncated_tfrecord_shard(copy):
    path, _ = read_shard(copy, "train")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["decode"] == "error"
    assert "truncated record" in findings(result, "decode")
    assert st["balance"] == "error" and st["formats-agree"] == "error" and st["files"] == "error"


def test_garbage_appended_to_tfrecord_shard(copy):
    path, _ = read_shard(copy, "val")
    with open(path, "ab") as f:
        f.write(b"this is not a TFRecord frame" * 10)
    result = doctor.doctor(copy, workers=2)
    assert statuses(result)["decode"] == "error"
    assert "corrupt record length checksum" in findings(result, "decode")
    assert statuses(result)["balance"] == "ok"  # every record before the garbage was read


def test_corrupt_hdf5_file(copy):
    path = h5_path(copy, "val")
    data = path.read_bytes()
    path.write_bytes(data[:2048])
    result = doctor.doctor(copy, workers=2)
    assert statuses(result)["decode"] == "error"
    assert "hdf5/utk-val.h5: cannot open HDF5" in findings(result, "decode")


def test_truncated_and_garbled_folder_jpegs(copy):
    a, b = folder_file(copy, "train", 0), folder_file(copy, "train", 1)
    a.write_bytes(a.read_bytes()[:300])
    b.write_bytes(b"not a jpeg at all")
    result = doctor.doctor(copy, workers=2)
    found = findings(result, "decode")
    assert statuses(result)["decode"] == "error"
    assert a.name in found and b.name in found and "not an image" in found


def test_class_short_of_its_count(copy):
    victim = sorted((copy / "folders" / "train" / "black_female").iterdir())[0]
    victim.unlink()
    result = doctor.doctor(copy, workers=2)
    st = statuses(result)
    assert st["balance"] == "error"
    assert "folders train: black_female 11 (manifest 12)" in findings(result, "balance")
    assert st["files"] == "error" and f"{victim.name}: missing" in findings(result, "files")
    assert st["formats-agree"] == "error"


def test_channel_order_swapped_in_one_format(copy):
    with h5py.File(h5_path(copy, "val"), "a") as f:
        images = f["images"][:]
        f["images"][...] = images[..., ::-1]  # BGR written as if it were RGB
    result = doctor.doctor(copy, workers=2)
    assert statuses(result)["formats-agree"] == "error"
    assert "pixels differ between folders and hdf5" in findings(result, "formats-agree")


def test_short_class_in_the_manifest_is_a_warning(tmp_path):
    from datakit.testing import synthetic
    from datakit.datasets import utk

    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=12, races=(0, 1), seed=5, size=32)
    for p in sorted(src.glob("*_1_1_*"))[:4]:  # black_female: 8 pictures instead of 12
        p.unlink()
    out = tmp_path / "out"
    utk.build(src, out, per_class=12, races=(0, 1), size=32, formats=("hdf5",), val_fraction=0.25,
              allow_short=True, seed=1, workers=1)
    result = doctor.doctor(out, workers=1)
    assert statuses(result)["balance"] == "warning"
    assert "black_female" in findings(result, "balance")
    assert result["errors"] == 0


# -- CIFAR -------------------------------------------------------------------------------------------

@pytest.fixture
def cifar10(tmp_path):
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=40, test=40, seed=2)
    return tmp_path / "cifar-10-batches-bin"


def test_cifar10_clean_and_faults(cifar10):
    clean = doctor.doctor(cifar10, workers=1)
    assert clean["errors"] == 0 and clean["pictures_read"] == 240
    st = statuses(clean)
    assert st["files"] == "warning"  # 40 records per file, not the published 10000
    assert st["labels"] == st["leakage"] == st["decode"] == st["balance"] == "ok"

    record = 3073
    test = cifar10 / "test_batch.bin"
    data = bytearray(test.read_bytes())
    data[5 * record] = 12  # label 12 in a 10-class set
    data[6 * record:7 * record] = (cifar10 / "data_batch_3.bin").read_bytes()[:record]  # a train record in test
    test.write_bytes(bytes(data))
    batch = cifar10 / "data_batch_5.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    result = doctor.doctor(cifar10, workers=1)
    st = statuses(result)
    assert st["labels"] == "error" and "test_batch.bin#5: label 12 outside 0..9" in findings(result, "labels")
    assert st["leakage"] == "error"
    assert "train/data_batch_3.bin#0 = test/test_batch.bin#6" in findings(result, "leakage")
    assert st["files"] == "error" and st["decode"] == "error"
    assert "data_batch_5.bin" in findings(result, "decode")


def test_cifar100_fine_label_outside_its_coarse_class(tmp_path):
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar100_dir(tmp_path, train=200, test=100, seed=4)
    folder = tmp_path / "cifar-100-binary"
    assert doctor.doctor(folder, workers=1)["errors"] == 0
    train = folder / "train.bin"
    data = bytearray(train.read_bytes())
    fine = data[1]
    data[1] = (fine + 1) % 100 if synthetic_cifar.FINE_TO_COARSE[(fine + 1) % 100] != data[0] else (fine + 2) % 100
    train.write_bytes(bytes(data))
    result = doctor.doctor(tmp_path, workers=1)
    assert statuses(result)["labels"] == "error"
    assert "train.bin#0: fine label" in findings(result, "labels")
    coarse = doctor.doctor(tmp_path, label_mode="coarse", workers=1)
    assert coarse["classes"][0] == "aquatic_mammals" and statuses(coarse)["labels"] == "error"


# -- pieces ------------------------------------------------------------------------------------------

def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=400, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    b = rng.integers(0, 2**63, size=900, dtype=np.int64).astype(np.uint64)
    for k in range(60):  # plant pairs 0..8 bits apart
        flips = rng.choice(64, size=k % 9, replace=False)
        b[k * 7] = a[k * 5] ^ np.uint64(sum(1 << int(f) for f in flips))
    for max_bits in (0, 3, 6):
        got = {(i, int(j)) for i, js in neardup.near_pairs(a, b, max_bits) for j in js}
        dist = np.bitwise_count(a[:, None] ^ b[None, :])
        want = {(int(i), int(j)) for i, j in zip(*np.nonzero(dist <= max_bits))}
        assert got == want and want


def test_augment_note():
    from datakit.augment import Augment

    assert doctor.augment_check(Augment(crop=24)).status == "warning"
    assert "no effect" in doctor.augment_check(Augment(crop=24)).detail
    assert doctor.augment_check(Augment(crop=24, brightness=None)).status == "ok"
    assert doctor.augment_check(Augment(crop=24, standardize=False)).status == "ok"


def test_measure_tells_channel_order_and_content():
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    same = doctor.measure(px.copy())
    assert same.digest == doctor.measure(px).digest and same.phash == doctor.measure(px).phash
    swapped = doctor.measure(np.ascontiguousarray(px[..., ::-1]))
    assert swapped.digest != same.digest
    assert np.allclose(swapped.mean, same.mean[::-1])


def test_sharded_outputs(tmp_path, monkeypatch):
    """Several TFRecord shards and HDF5 files per split are all read and checked."""
    from datakit.testing import synthetic
    from datakit.datasets import utk
    from datakit.builder import writers

    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=10, races=(2, 3), seed=8, size=32)
    monkeypatch.setattr(writers, "TFRECORD_SHARD_BYTES", 8000)
    out = tmp_path / "out"
    m = utk.build(src, out, per_class=10, races=(2, 3), size=32, val_fraction=0.2, seed=1, workers=1,
                  hdf5_shard_bytes=32 * 32 * 3 * 7)
    assert len(m["outputs"]["tfrecord"]["train"]) > 1 and len(m["outputs"]["hdf5"]["train"]) > 1
    result = doctor.doctor(out, workers=2)
    assert result["errors"] == 0 and result["pictures_read"] == 3 * 40
    last = out / m["outputs"]["hdf5"]["train"][-1]
    last.unlink()
    result = doctor.doctor(out, workers=2)
    assert statuses(result)["decode"] == "error" and f"{m['outputs']['hdf5']['train'][-1]}: missing file" in \
        findings(result, "decode")


def _moments(n, mean, within_std, image_mean_std):
    """Per-class running sums as Scan keeps them (sums of picture means, of their squares, of picture
    mean squares) for n pictures: std `within_std` inside each, picture means spread by `image_mean_std`."""
    mean, within, spread = (np.asarray(v, float) for v in (mean, within_std, image_mean_std))
    return np.stack([n * mean, n * (mean ** 2 + spread ** 2), n * (within ** 2 + mean ** 2 + spread ** 2)])


def test_colour_stats_rules():
    from types import SimpleNamespace

    classes = [f"c{k}" for k in range(6)]
    src = SimpleNamespace(formats=["hdf5"], classes=classes, splits=["train", "val"])

    def scan_of(train_means, val_means):
        sums, counts = {}, {}
        for split, means, n in (("train", train_means, 200), ("val", val_means, 50)):
            sums[("hdf5", split)] = np.stack([_moments(n, m, [40, 40, 40], [12, 12, 12]) for m in means])
            counts[("hdf5", split)] = np.full(len(classes), n)
        return SimpleNamespace(sums=sums, counts=counts)

    usual = [[120 + 8 * k, 110 + 5 * k, 100 - 4 * k] for k in range(6)]
    clean = scan_of(usual, usual)
    check = doctor._colour_stats(src, clean, doctor.colour_table(src, clean))
    assert check.status == "ok"
    blue = [m if k != 3 else [m[2], m[1], m[0] + 150] for k, m in enumerate(usual)]  # c3 far bluer than all
    scan = scan_of(blue, blue)
    check = doctor._colour_stats(src, scan, doctor.colour_table(src, scan))
    assert check.status == "warning" and check.items == ["c3: mean R 88 far outside the other classes (120..160)"]
    shifted = [m if k != 1 else [m[0] + 30, m[1], m[2]] for k, m in enumerate(usual)]  # c1 redder in val only
    scan = scan_of(usual, shifted)
    check = doctor._colour_stats(src, scan, doctor.colour_table(src, scan))
    assert check.status == "warning" and "c1: mean R" in check.detail and "beyond 5 standard errors" in check.detail
    table = doctor.colour_table(src, clean)
    row = table["train"]["c2"]
    assert row["mean"] == [136.0, 120.0, 92.0] and row["image_mean_std"] == [12.0] * 3
    assert row["std"] == [41.8] * 3  # pixels of the class: sqrt(40^2 + 12^2)
