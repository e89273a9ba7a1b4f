"""Stock TensorFlow Datasets loads every build's TFRecord output with no datakit code.

datakit writes the TFDS metadata as plain JSON (datakit.builder.tfds_metadata); tensorflow-datasets
is a test dependency only, so these tests are where the JSON meets the real reader: what
`tfds.folder_dataset.write_metadata` would write, and what `tfds.builder_from_directory` loads
(labels, class names, counts, fields and pixels against the manifest and the HDF5 output).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from datakit.builder import tfds_metadata, writers
from datakit.builder.classes import Field
from datakit.datasets import folder
from datakit.errors import DatakitError
from datakit.testing import synthetic

GENERIC_CLASSES = ("zebra", "apple", "café au lait")  # not UTKFace's; a space and a non-ASCII letter


@pytest.fixture(scope="module")
def generic_build(tmp_path_factory):
    """Class folders (the string field "class") of 40-px pictures built at 32 px (so re-encoded),
    with TFRecord shards small enough that each split spans several."""
    src = tmp_path_factory.mktemp("tfds-folders")
    rng = np.random.default_rng(5)
    for i, name in enumerate(GENERIC_CLASSES):
        (src / name).mkdir()
        for j in range(7):
            rgb = synthetic.draw_face(j % 2, i, rng, 40)
            (src / name / f"{name[:3]}_{j}.jpg").write_bytes(synthetic.jpeg_bytes(rgb))
    out = tmp_path_factory.mktemp("tfds-generic") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writers, "TFRECORD_SHARD_BYTES", 4000)
        manifest = folder.build(src, out, labels="folders", name="fruit_folders", per_class=6, size=32,
                                val_fraction=0.34, seed=2, workers=1)
    return out, manifest


@pytest.fixture(params=["utk_build", "generic_build"])
def build(request):
    """(OUT, manifest, SRC or None) of each kind of build."""
    value = request.getfixturevalue(request.param)
    if request.param == "utk_build":
        src, out, manifest, _ = value
        return out, manifest, src
    return (*value, None)


def _hdf5_rows(out: Path, manifest: dict, split: str) -> dict[str, dict]:
    """{filename: {"image", "label", field...}} of a split's HDF5 output."""
    rows = {}
    for rel in manifest["outputs"]["hdf5"][split]:
        with h5py.File(out / rel, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else n for n in f["filenames"][:]]
            for i, name in enumerate(names):
                rows[name] = {"image": f["images"][i], "label": int(f["labels"][i]),
                              **{fld["name"]: f[fld["name"]][i] for fld in manifest["fields"]}}
    return rows


def _value(x):
    x = x.numpy() if hasattr(x, "numpy") else x
    return x.decode() if isinstance(x, bytes) else x.item() if isinstance(x, np.generic) else x


def test_the_build_loads_with_builder_from_directory(build):
    out, manifest, _ = build
    info = tfds.builder_from_directory(out / "tfrecord").info
    assert info.name == manifest["stem"]
    image = info.features["image"]["encoded"]
    assert isinstance(image, tfds.features.Image)
    assert image.shape == (manifest["size"], manifest["size"], 3) and image.np_dtype == np.uint8
    label = info.features["image"]["class"]["label"]
    assert isinstance(label, tfds.features.ClassLabel)
    assert label.names == manifest["classes"]
    for fld in manifest["fields"]:
        feature = info.features[fld["name"]]
        if fld["kind"] == "int":
            assert isinstance(feature, tfds.features.Scalar) and feature.np_dtype == np.int64
        else:
            assert isinstance(feature, tfds.features.Text)
    assert set(info.splits) == set(manifest["splits"])
    for split in manifest["splits"]:
        assert info.splits[split].num_examples == sum(manifest["counts"][split].values())
        assert info.splits[split].num_shards == len(manifest["outputs"]["tfrecord"][split])


def _examples(builder, split: str, **kw) -> dict[str, dict]:
    return {_value(ex["image"]["filename"]): ex for ex in builder.as_dataset(split=split, **kw)}


def test_every_example_matches_the_manifest_and_the_hdf5_output(build):
    """Labels, names, fields and pixels, example by example. TFDS decodes JPEG with TensorFlow's
    default (fast) IDCT, off by a few levels from the HDF5 pixels (libjpeg's accurate IDCT); decoding
    the same bytes with dct_method="INTEGER_ACCURATE" gives a plain JPEG at native size exactly."""
    import tensorflow as tf

    out, manifest, src = build
    size = manifest["size"]
    builder = tfds.builder_from_directory(out / "tfrecord")
    stats = {"copied": [], "re-encoded": []}
    for split in manifest["splits"]:
        rows = _hdf5_rows(out, manifest, split)
        decoded = _examples(builder, split)
        raw = _examples(builder, split, decoders={"image": {"encoded": tfds.decode.SkipDecoding()}})
        assert set(decoded) == set(raw) == set(rows)
        assert len(rows) == sum(manifest["counts"][split].values())
        per_class = dict.fromkeys(manifest["classes"], 0)
        for name, ex in decoded.items():
            row = rows[name]
            label = _value(ex["image"]["class"]["label"])
            assert label == row["label"]
            per_class[manifest["classes"][label]] += 1
            assert _value(ex["image"]["class"]["text"]) == manifest["classes"][label]
            assert _value(ex["image"]["format"]) == "jpeg"
            assert _value(ex["image"]["height"]) == _value(ex["image"]["width"]) == size
            for fld in manifest["fields"]:
                assert _value(ex[fld["name"]]) == _value(row[fld["name"]]), fld["name"]
            jpeg = raw[name]["image"]["encoded"].numpy()
            assert jpeg == (out / "folders" / split / manifest["classes"][label] / name).read_bytes()
            pixels = ex["image"]["encoded"].numpy()
            assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
            accurate = tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy()
            fast = np.abs(pixels.astype(int) - row["image"]).max()
            if src is not None and (src / name).is_file() and (src / name).read_bytes() == jpeg:
                np.testing.assert_array_equal(accurate, row["image"])  # the source's own bytes
                assert fast <= 8, (name, fast)
                stats["copied"].append(fast)
            else:  # resized or converted, then re-encoded at quality 95, 4:4:4
                diff = np.abs(accurate.astype(int) - row["image"])
                assert diff.mean() < 3 and diff.max() <= 24, (name, diff.mean(), diff.max())
                assert fast <= diff.max() + 8, (name, fast)
                stats["re-encoded"].append(fast)
        assert per_class == manifest["counts"][split]
    assert stats["copied" if src is not None else "re-encoded"], stats


def test_slicing_a_split_reads_the_shard_lengths(generic_build):
    out, manifest = generic_build
    shards = manifest["outputs"]["tfrecord"]["train"]
    assert len(shards) > 1  # several shards, so shardLengths decide where train[2:5] lies
    builder = tfds.builder_from_directory(out / "tfrecord")
    in_order = tfds.ReadConfig(interleave_cycle_length=1)  # one shard after the other
    names = lambda split: [_value(ex["image"]["filename"])
                           for ex in builder.as_dataset(split=split, shuffle_files=False, read_config=in_order)]
    whole = names("train")
    assert names("train[2:5]") == whole[2:5] and len(whole) == sum(manifest["counts"]["train"].values())


def _stock_features(out: Path, manifest: dict) -> tfds.features.FeaturesDict:
    """The features a TFDS user would declare for datakit's Example keys, docs included."""
    F = tfds.features
    table = json.loads((out / "tfrecord" / "datakit_features.json").read_text())["features"]
    doc = lambda key: table[key]["doc"]
    kinds = {fld["name"]: fld["kind"] for fld in manifest["fields"]}
    s = manifest["size"]
    return F.FeaturesDict({
        "image": F.FeaturesDict({
            "encoded": F.Image(shape=(s, s, 3), encoding_format="jpeg", doc=doc("image/encoded")),
            "format": F.Text(doc=doc("image/format")),
            "height": F.Scalar(np.int64, doc=doc("image/height")),
            "width": F.Scalar(np.int64, doc=doc("image/width")),
            "class": F.FeaturesDict({"label": F.ClassLabel(names=manifest["classes"], doc=doc("image/class/label")),
                                     "text": F.Text(doc=doc("image/class/text"))}),
            "filename": F.Text(doc=doc("image/filename")),
        }),
        **{name: F.Scalar(np.int64, doc=doc(name)) if kind == "int" else F.Text(doc=doc(name))
           for name, kind in kinds.items()},
    })


def test_the_metadata_is_what_write_metadata_writes(build, tmp_path):
    """tfds.folder_dataset.write_metadata over a copy of the shards, with the features a TFDS user
    would declare and split infos it computes itself, writes the same files."""
    out, manifest, _ = build
    theirs = tmp_path / "tfrecord"
    theirs.mkdir()
    for rels in manifest["outputs"]["tfrecord"].values():
        for rel in rels:
            shutil.copy(out / rel, theirs)
    ours = out / "tfrecord"
    description = json.loads((ours / "dataset_info.json").read_text())["description"]
    tfds.folder_dataset.write_metadata(data_dir=theirs, features=_stock_features(out, manifest),
                                       split_infos=None, description=description, check_data=True)
    for name in ("dataset_info.json", "features.json"):
        got, want = json.loads((ours / name).read_text()), json.loads((theirs / name).read_text())
        if name == "dataset_info.json":  # TFDS lists splits in the order it finds the files
            got["splits"].sort(key=lambda s: s["name"])
            want["splits"].sort(key=lambda s: s["name"])
        assert got == want, name
    assert (ours / "image-class-label.labels.txt").read_bytes() == (theirs / "image-class-label.labels.txt").read_bytes()
    assert {p.name for p in theirs.iterdir()} <= {p.name for p in ours.iterdir()}


def test_the_metadata_files_are_hashed_in_the_manifest(build):
    import hashlib

    out, manifest, _ = build
    for name in ("dataset_info.json", "features.json", "image-class-label.labels.txt", "datakit_features.json"):
        rel = f"tfrecord/{name}"
        assert manifest["files"][rel] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel


def test_datakit_features_json_keeps_each_keys_dtype_and_doc(utk_build):
    _, out, manifest, _ = utk_build
    spec = json.loads((out / "tfrecord" / "datakit_features.json").read_text())
    assert spec["features"]["image/class/label"] == {"dtype": "int64", "shape": [], "doc": "race_index * 2 + gender"}
    assert spec["features"]["image/encoded"]["dtype"] == "string"
    assert {f["name"] for f in manifest["fields"]} <= set(spec["features"])


@pytest.mark.parametrize("names, clash", [(("image",), "'image' cannot be both"),
                                          (("a", "a/b"), "'a' cannot be both"),
                                          (("a//b",), "no part of the name may be empty")])
def test_a_field_name_tfds_cannot_nest_is_refused(names, clash):
    table = writers.features([Field(n, "int") for n in names])
    with pytest.raises(DatakitError, match=clash):
        tfds_metadata.feature_tree(table, ["x"], 8)
