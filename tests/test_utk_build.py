"""build-utk end to end on a nasty synthetic folder: counts, labels and pixels in every format."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from datakit import tfrecord
from datakit.datasets import utk
from datakit.datasets.utk.names import class_names, label_of, parse_name

CLASSES = class_names((0, 1, 2, 3))


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _tfrecord_rows(out: Path, manifest: dict, split: str) -> list[dict]:
    rows = []
    for rel in manifest["outputs"]["tfrecord"][split]:
        rows += [tfrecord.parse_example(r) for r in tfrecord.read_records(out / rel)]
    return rows


def test_exact_counts_and_stratified_splits(utk_build):
    src, out, manifest, _ = utk_build
    assert manifest["classes"] == CLASSES
    assert manifest["splits"] == ["train", "val", "test"]
    for name in CLASSES:
        per_split = {s: manifest["counts"][s][name] for s in manifest["splits"]}
        assert per_split == {"train": 7, "val": 2, "test": 1}
    for split in manifest["splits"]:
        for name in CLASSES:
            files = list((out / "folders" / split / name).iterdir())
            assert len(files) == manifest["counts"][split][name]
        with h5py.File(out / manifest["outputs"]["hdf5"][split][0]) as f:
            assert len(f["labels"]) == sum(manifest["counts"][split].values())
        assert len(_tfrecord_rows(out, manifest, split)) == sum(manifest["counts"][split].values())


def test_labels_in_every_format_match_file_names(utk_build):
    src, out, manifest, _ = utk_build
    races = manifest["races"]
    for split in manifest["splits"]:
        for name in CLASSES:
            for f in (out / "folders" / split / name).iterdir():
                assert CLASSES[label_of(parse_name(f.name), races)] == name
        for row in _tfrecord_rows(out, manifest, split):
            fname = row["image/filename"][0].decode()
            lab = parse_name(fname)
            assert row["image/class/label"] == [label_of(lab, races)]
            assert row["image/class/text"] == [CLASSES[label_of(lab, races)].encode()]
            assert (row["age"], row["gender"], row["race"]) == ([lab.age], [lab.gender], [lab.race])
            assert row["image/height"] == row["image/width"] == [64]
            assert row["image/format"] == [b"jpeg"]
        with h5py.File(out / manifest["outputs"]["hdf5"][split][0]) as f:
            assert [c.decode() if isinstance(c, bytes) else c for c in f.attrs["class_names"]] == CLASSES
            for i, fname in enumerate(f["filenames"][:]):
                lab = parse_name(fname.decode())
                assert f["labels"][i] == label_of(lab, races)
                assert (f["age"][i], f["gender"][i], f["race"][i]) == (lab.age, lab.gender, lab.race)


def test_pixels_in_every_format_match_the_source(utk_build):
    src, out, manifest, _ = utk_build
    split = "train"
    rows = {r["image/filename"][0].decode(): r for r in _tfrecord_rows(out, manifest, split)}
    with h5py.File(out / manifest["outputs"]["hdf5"][split][0]) as f:
        images = f["images"]
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
        assert images.chunks == (1, 64, 64, 3)
        names = [n.decode() for n in f["filenames"][:]]
        for i, fname in enumerate(names):
            source = (src / fname).read_bytes()
            stored = rows[fname]["image/encoded"][0]
            folder_copy = (out / "folders" / split / CLASSES[f["labels"][i]] / fname).read_bytes()
            assert stored == folder_copy
            pixels = images[i]
            if Image.open(io.BytesIO(source)).format == "JPEG" and Image.open(io.BytesIO(source)).mode == "RGB" \
                    and Image.open(io.BytesIO(source)).size == (64, 64):
                assert stored == source  # plain pictures are copied byte for byte
                assert np.array_equal(pixels, _pil_rgb(source))
            else:
                assert np.abs(_pil_rgb(stored).astype(int) - pixels).mean() < 3


def test_rgb_channel_order(utk_build):
    """Race 0 pictures have a red background, race 2 a blue one (synthetic.RACE_COLOURS)."""
    src, out, manifest, _ = utk_build
    with h5py.File(out / manifest["outputs"]["hdf5"]["train"][0]) as f:
        images, race = f["images"][:], f["race"][:]
    corner = images[:, :6, :6, :].reshape(len(images), -1, 3).mean(axis=1)
    reds, blues = corner[race == 0], corner[race == 2]
    # medians: race 0 also holds one grayscale picture
    assert np.median(reds[:, 0]) > np.median(reds[:, 2]) + 60
    assert np.median(blues[:, 2]) > np.median(blues[:, 0]) + 60


def test_skips_strays_and_duplicates_are_reported(utk_build):
    src, out, manifest, info = utk_build
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    for name, keyword in info["bad"].items():
        if keyword in ("not an image", "truncated"):
            continue  # content is checked when a picture is selected (see the next tests)
        assert name in skipped, name
        assert keyword.split()[0] in skipped[name], (name, skipped[name])
    assert {i["file"] for i in manifest["ignored"]} == set(info["stray"])
    dropped = {d for entry in manifest["duplicates"]["identical"] for d in entry["dropped"]}
    kept = {entry["kept"] for entry in manifest["duplicates"]["identical"]}
    for original, copy in info["duplicates"]:
        assert len({original, copy} & dropped) == 1 and len({original, copy} & kept) == 1
    conflicting = [set(c["files"]) for c in manifest["duplicates"]["conflicting"]]
    for victim, copy in info["conflicts"]:
        assert {victim, copy} in conflicting
        assert skipped[victim] == skipped[copy] == "duplicate with conflicting labels"
    used = {f.name for f in (out / "folders").rglob("*.jpg")}
    assert not used & set(skipped)
    assert not used & dropped


def test_manifest_hashes_and_features(utk_build):
    import hashlib

    src, out, manifest, _ = utk_build
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json", ".datakit-build"}
    assert set(manifest["files"]) == on_disk
    h5 = [rel for rel in manifest["files"] if rel.endswith(".h5")]
    for rel in list(manifest["files"])[::7] + h5:
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == manifest["files"][rel], rel
    spec = json.loads((out / "tfrecord" / "datakit_features.json").read_text())
    assert set(spec["features"]) >= {"image/encoded", "image/class/label", "image/filename", "age", "gender", "race"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["options"]["per_class"] == 10 and manifest["datakit"]["version"]


def test_sample_is_seeded_and_random_not_first_n(utk_src, tmp_path):
    src, _ = utk_src
    found = utk.scan(src)
    picks = lambda seed: {s.record.name for v in utk.select(found, per_class=5, seed=seed).slots.values() for s in v}
    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    first_n = set()
    for label in range(8):
        names = [r.name for r in found.records if r.labels["race"] in (0, 1, 2, 3)
                 and label_of(parse_name(r.name), (0, 1, 2, 3)) == label]
        first_n |= set(names[:5])
    assert picks(1) != first_n


def test_odd_images_are_converted(tmp_path):
    """Grayscale, CMYK, PNG behind .jpg, progressive and other sizes decode to S x S RGB."""
    from datakit.testing import synthetic
    from datakit.builder.images import BadImage, decode

    rng = np.random.default_rng(0)
    rgb = synthetic.draw_face(0, 2, rng, 64)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    pixels, jpeg = decode(png.getvalue(), 64)
    assert np.array_equal(pixels, rgb) and Image.open(io.BytesIO(jpeg)).format == "JPEG"
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    pixels, _ = decode(cmyk.getvalue(), 64)
    assert np.abs(pixels.astype(int) - rgb).mean() < 8
    gray, _ = decode(synthetic.jpeg_bytes(rgb[..., 0]), 64)
    assert gray.shape == (64, 64, 3) and (gray[..., 0] == gray[..., 2]).all()
    progressive = synthetic.jpeg_bytes(rgb, progressive=True)
    prog, kept = decode(progressive, 64)
    assert kept == progressive and np.array_equal(prog, _pil_rgb(progressive))
    big, jpeg = decode(synthetic.jpeg_bytes(np.repeat(np.repeat(rgb, 2, 0), 3, 1)), 64)
    assert big.shape == (64, 64, 3) and Image.open(io.BytesIO(jpeg)).size == (64, 64)
    full = synthetic.jpeg_bytes(rgb)
    for data, reason in ((b"", "empty"), (b"hello", "not an image"), (full[: len(full) // 2], "truncated")):
        with pytest.raises(BadImage, match=reason):
            decode(data, 64)


def test_plain_jpeg_fast_path_agrees_with_pillow():
    """The marker parser sends exactly the files Pillow calls 8-bit RGB JPEG of S x S (ending in EOI)
    to OpenCV, and OpenCV's pixels there equal Pillow's."""
    from datakit.testing import synthetic
    from datakit.builder.images import decode, plain_jpeg

    rng = np.random.default_rng(3)
    rgb = synthetic.draw_face(1, 3, rng, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: ignored by both decoders
    variants = {
        "baseline": synthetic.jpeg_bytes(rgb),
        "opencv": synthetic._encode(rgb),
        "progressive": synthetic.jpeg_bytes(rgb, progressive=True),
        "444": synthetic.jpeg_bytes(rgb, subsampling=0),
        "exif+comment+icc": synthetic.jpeg_bytes(rgb, exif=exif, comment=b"x" * 300, icc_profile=b"\0" * 600),
        "restart markers": synthetic.jpeg_bytes(rgb, restart_marker_blocks=1),
        "adobe rgb": synthetic.jpeg_bytes(rgb, keep_rgb=True),
        "trailing zeros": synthetic.jpeg_bytes(rgb) + b"\0" * 64,
        "grayscale": synthetic.jpeg_bytes(rgb[..., 1]),
        "cmyk": (lambda b: (Image.fromarray(rgb).convert("CMYK").save(b, format="JPEG"), b.getvalue())[1])(
            io.BytesIO()),
        "other size": synthetic.jpeg_bytes(rgb[:40]),
        "png": (lambda b: (Image.fromarray(rgb).save(b, format="PNG"), b.getvalue())[1])(io.BytesIO()),
        "truncated": synthetic.jpeg_bytes(rgb)[:-200],
        "garbage": b"\xff\xd8" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)) + b"\xff\xd9",
    }
    for kind, data in variants.items():
        try:
            im = Image.open(io.BytesIO(data))
            pillow_plain = im.format == "JPEG" and im.mode == "RGB" and im.size == (48, 48)
        except Exception:
            pillow_plain = False
        ends = data.rstrip(b"\0")[-2:] == b"\xff\xd9"
        assert plain_jpeg(data, 48) == (pillow_plain and ends), kind
        if plain_jpeg(data, 48):
            pixels, kept = decode(data, 48)
            assert kept is data and np.array_equal(pixels, _pil_rgb(data)), kind


def test_resize_path(utk_src, tmp_path):
    src, _ = utk_src
    manifest = utk.build(src, tmp_path / "b", per_class=4, size=32, formats=["hdf5", "tfrecord"], seed=1)
    assert not (tmp_path / "b" / "folders").exists() and set(manifest["outputs"]) == {"hdf5", "tfrecord"}
    with h5py.File(tmp_path / "b" / manifest["outputs"]["hdf5"]["train"][0]) as f:
        assert f["images"].shape[1:] == (32, 32, 3)
    row = tfrecord.parse_example(next(tfrecord.read_records(tmp_path / "b" / manifest["outputs"]["tfrecord"]["train"][0])))
    assert Image.open(io.BytesIO(row["image/encoded"][0])).size == (32, 32)


def test_race_four_and_custom_order(utk_src, tmp_path):
    from datakit.testing import synthetic

    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=3, races=(0, 4), seed=1, size=32)
    manifest = utk.build(src, tmp_path / "b", per_class=3, races=(4, 0), size=32, val_fraction=0)
    assert manifest["classes"] == ["others_male", "others_female", "white_male", "white_female"]
    assert manifest["splits"] == ["train"]
    with h5py.File(tmp_path / "b" / "hdf5" / "utk-train.h5") as f:
        assert set(zip(f["race"][:], f["gender"][:], f["labels"][:])) == {(4, 0, 0), (4, 1, 1), (0, 0, 2), (0, 1, 3)}


def test_hdf5_shards_when_large(utk_src, tmp_path):
    src, _ = utk_src
    manifest = utk.build(src, tmp_path / "b", per_class=4, size=32, formats=["hdf5"], val_fraction=0,
                         hdf5_shard_bytes=32 * 32 * 3 * 10)
    paths = manifest["outputs"]["hdf5"]["train"]
    assert len(paths) == 4 and paths[0].endswith("utk-train-00000-of-00004.h5")
    total = 0
    for rel in paths:
        with h5py.File(tmp_path / "b" / rel) as f:
            total += len(f["images"])
            assert len(f["labels"]) == len(f["images"]) == len(f["filenames"])
    assert total == 32


def test_tfrecord_readable_by_tensorflow(utk_build):
    tf = pytest.importorskip("tensorflow")
    src, out, manifest, _ = utk_build
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/filename": tf.io.FixedLenFeature([], tf.string),
            "race": tf.io.FixedLenFeature([], tf.int64), "gender": tf.io.FixedLenFeature([], tf.int64)}
    files = [str(out / p) for p in manifest["outputs"]["tfrecord"]["train"]]
    with h5py.File(out / manifest["outputs"]["hdf5"]["train"][0]) as f:
        h5 = {n.decode(): img for n, img in zip(f["filenames"][:], f["images"][:])}
    n = 0
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, spec)
        image = tf.io.decode_jpeg(ex["image/encoded"], channels=3).numpy()
        name = ex["image/filename"].numpy().decode()
        assert ex["image/class/label"].numpy() == ex["race"].numpy() * 2 + ex["gender"].numpy()
        assert np.abs(image.astype(int) - h5[name]).mean() < 3
        n += 1
    assert n == sum(manifest["counts"]["train"].values())


def test_folders_readable_by_keras(utk_build):
    keras = pytest.importorskip("keras")
    src, out, manifest, _ = utk_build
    ds = keras.utils.image_dataset_from_directory(out / "folders" / "train", class_names=manifest["classes"],
                                                  image_size=(64, 64), batch_size=16, shuffle=False)
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert np.bincount(labels).tolist() == [manifest["counts"]["train"][c] for c in manifest["classes"]]
