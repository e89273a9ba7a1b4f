"""TFDS metadata beside the TFRecord shards, so that stock TensorFlow Datasets loads a build:
`tfds.builder_from_directory(OUT/tfrecord).as_dataset(split="train")`.

The files are those `tfds.folder_dataset.write_metadata` writes, as plain JSON, so a build needs
no tensorflow_datasets (tests/test_tfds_interop.py checks them against it and loads real builds):
- dataset_info.json: name (the build's stem), version, file format, and per split the file-name
  template `{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}` (which TFRecordWriter follows), the
  records per shard and the bytes of the serialized examples;
- features.json: the FeatureConnector tree. TFDS names an Example's keys by joining nested
  FeaturesDict keys with "/", so the keys datakit writes (image/encoded, image/class/label, ...)
  are {"image": {"encoded": Image, "class": {"label": ClassLabel, "text": Text}, ...}, field: ...};
  each feature's `description` is its doc from writers.features;
- image-class-label.labels.txt: the ClassLabel's names in label order, one a line (TFDS keeps them
  out of features.json and names the file after the feature's path; builder.classes.check_class_name
  already refuses the names that would not read back: empty, padded, or holding a newline).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from datakit.errors import DatakitError

VERSION = "1.0.0"
TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
LABEL_KEY = "image/class/label"
_TFDS = "tensorflow_datasets.core.features."
_CLASSES = {"dict": _TFDS + "features_dict.FeaturesDict", "image": _TFDS + "image_feature.Image",
            "label": _TFDS + "class_label_feature.ClassLabel", "text": _TFDS + "text_feature.Text",
            "scalar": _TFDS + "scalar.Scalar"}


def shard_sizes(path: Path) -> tuple[int, int]:
    """(records, bytes of their data) of one TFRecord file, from its length headers alone. TFDS's
    `numBytes` counts the serialized examples, without the 16 bytes of framing around each."""
    records = nbytes = 0
    with open(path, "rb") as f:
        while header := f.read(12):  # uint64 length, uint32 its checksum
            if len(header) < 12:
                raise DatakitError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, 1)  # the data and its checksum
            records, nbytes = records + 1, nbytes + length
    return records, nbytes


def _leaf(key: str, spec: dict, classes: list[str], size: int) -> dict:
    if key == "image/encoded":
        out = {"pythonClassName": _CLASSES["image"],
               "image": {"dtype": "uint8", "encodingFormat": "jpeg", "shape": {"dimensions": [str(size), str(size), "3"]}}}
    elif key == LABEL_KEY:
        out = {"pythonClassName": _CLASSES["label"], "classLabel": {"numClasses": str(len(classes))}}
    elif spec["dtype"] == "int64":
        out = {"pythonClassName": _CLASSES["scalar"], "tensor": {"dtype": "int64", "encoding": "none", "shape": {}}}
    else:
        out = {"pythonClassName": _CLASSES["text"], "text": {}}
    if spec.get("doc"):
        out["description"] = spec["doc"]
    return out


def feature_tree(table: dict, classes: list[str], size: int) -> dict:
    """features.json: writers.features' flat {key: {dtype, doc}} as nested FeaturesDicts."""
    for key in table:
        parts = key.split("/")
        clash = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in table), None)
        if clash or not all(parts):
            raise DatakitError(f"label field {key!r}: TFDS nests the Example's keys on '/', so "
                               + (f"{clash!r} cannot be both a feature and a group of features" if clash
                                  else "no part of the name may be empty"))
    nested: dict = {}
    for key, spec in table.items():
        *parents, name = key.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = _leaf(key, spec, classes, size)

    def wrap(node: dict) -> dict:
        if "pythonClassName" in node:  # a leaf
            return node
        return {"pythonClassName": _CLASSES["dict"],
                "featuresDict": {"features": {k: wrap(v) for k, v in node.items()}}}

    return wrap(nested)


def dataset_info(name: str, splits: dict[str, list[tuple[int, int]]], description: str) -> dict:
    """dataset_info.json as TFDS's DatasetInfo proto in JSON (int64 values as strings)."""
    return {
        "description": description,
        "fileFormat": "tfrecord",
        "name": name,
        "splits": [{"filepathTemplate": TEMPLATE, "name": split,
                    "numBytes": str(sum(b for _, b in shards)),
                    "shardLengths": [str(n) for n, _ in shards]} for split, shards in splits.items()],
        "version": VERSION,
    }


def write(root: Path, stem: str, table: dict, classes: list[str], size: int, shards: dict[str, list[str]]) -> dict:
    """Write the metadata into root/tfrecord; `shards` is {split: [shard paths relative to root]} in
    shard order. Returns {path relative to root: sha256} of the files written."""
    sizes = {split: [shard_sizes(root / rel) for rel in rels] for split, rels in shards.items()}
    description = (f"{stem}: a datakit build; the manifest beside this folder (../manifest.json) records "
                   f"its source, options, counts and the sha256 of every file.")
    texts = {
        "tfrecord/dataset_info.json": json.dumps(dataset_info(stem, sizes, description), indent=2, sort_keys=True),
        "tfrecord/features.json": json.dumps(feature_tree(table, classes, size), indent=4, sort_keys=True),
        f"tfrecord/{LABEL_KEY.replace('/', '-')}.labels.txt": "\n".join(classes) + "\n",
    }
    hashes = {}
    for rel, text in texts.items():
        data = text.encode()
        (root / rel).write_bytes(data)
        hashes[rel] = hashlib.sha256(data).hexdigest()
    return hashes
