"""`BuildDataset`: any datakit builder output (build-utk, build), read through its manifest.json.

Layout (written by `datakit.datasets.utk.build` and the generic builder):
- `folders/<split>/<class>/<file>`: the pictures as class folders (the folder is the label);
- TFRecord shards of tf.train.Example with `image/encoded`, `image/format`, `image/height`,
  `image/width`, `image/class/label`, `image/class/text`, `image/filename` and one feature per
  label field of the manifest (int64, or bytes for kind "str");
- HDF5 files with `images` (N, size, size, 3) uint8, `labels`, `filenames` and one dataset per
  label field (int64, or utf-8 strings for kind "str").
The manifest names the dataset (`dataset`, default "utk"), its label `fields`, the fields a class
is made of (`class_by`) and each class's values of them (`class_keys`); older build-utk manifests
lack those keys and `UTKBuild` supplies UTKFace's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datakit.datasets.base import Dataset, FileReport, Item, raise_read_error
from datakit.errors import DatakitError

FORMATS = ("folders", "tfrecord", "hdf5")
BUILD_COMMANDS = ("build-utk", "build")
HDF5_BLOCK = 64  # images read per h5py call (a few MB at 200 px)
TRAIN_CROP = 0.88  # the pipelines' training crop of a build: this fraction of the side


def _inside(rel) -> bool:
    """A manifest path: relative, '/'-separated, without '..': it cannot leave the build folder."""
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/") and "\\" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")) and "\x00" not in rel)


def manifest_problem(m: dict) -> str | None:
    """Why a parsed manifest.json cannot be a build's (wrong types, paths leaving the folder), or None.

    Readers trust the manifest's lists of files, so a hand-edited or hostile manifest must not send
    them outside the build (`../../etc/passwd`, `/dev/zero`) or crash them with a wrong type."""
    def strs(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    if not strs(m.get("classes")) or not m["classes"] or len(set(m["classes"])) != len(m["classes"]):
        return "classes must be a list of distinct names"
    if not strs(m.get("splits")) or not m["splits"]:
        return "splits must be a list of names"
    if isinstance(m.get("size"), bool) or not isinstance(m.get("size"), int) or m["size"] < 1:
        return "size must be a positive integer"
    counts = m.get("counts", {})
    if not isinstance(counts, dict) or not all(
            isinstance(c, dict) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in c.values())
            for c in counts.values()):
        return "counts must map each split to {class: number of pictures}"
    outputs = m.get("outputs")
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) for v in outputs.values()):
        return "outputs must map each format to {split: files}"
    for fmt, per_split in outputs.items():
        for split, listed in per_split.items():
            paths = [listed] if isinstance(listed, str) else listed
            if not isinstance(paths, list) or not all(_inside(p) for p in paths):
                return f"outputs.{fmt}.{split} lists a path that is not inside the build folder"
    files = m.get("files", {})
    if not isinstance(files, dict) or not all(_inside(rel) and isinstance(d, str) for rel, d in files.items()):
        return "files must map paths inside the build folder to sha256 digests"
    fields = m.get("fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields):
        return "fields must be a list of {name, kind}"
    return None


def _text(x) -> str:
    return str(x, "utf-8") if isinstance(x, bytes) else str(x)


class BuildDataset(Dataset):
    """A builder output folder. Subclasses (one per dataset package) add their own label rules."""

    key: str | None = None  # None: the manifest's "dataset"
    default_crop = TRAIN_CROP
    balance_basis = "as the manifest says"
    default_fields: list[dict] = []
    default_class_by: list[str] = []

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest
        where = self.root / "manifest.json"
        problem = manifest_problem(manifest)
        if problem:
            raise DatakitError(f"{where}: not a datakit build manifest ({problem})")
        try:
            if type(self).key is None:
                self.key = str(manifest.get("dataset", "utk"))
            self.classes = list(manifest["classes"])
            self.splits = list(manifest["splits"])
            self.size = int(manifest["size"])
            self.outputs = manifest["outputs"]
            self.formats = [f for f in FORMATS if f in self.outputs]
            self.fields = [dict(f) for f in manifest.get("fields", self.default_fields)]
            self.field_names = [str(f["name"]) for f in self.fields]
            self.class_by = list(manifest.get("class_by", self.default_class_by))
            keys = manifest.get("class_keys")
            self.class_keys = [list(k) for k in keys] if keys is not None else self.default_class_keys()
        except (KeyError, TypeError, ValueError) as exc:
            raise DatakitError(f"{where}: not a datakit build manifest (missing or bad {exc})") from None
        if not self.formats:
            raise DatakitError(f"{where}: lists no outputs among {', '.join(FORMATS)}")
        if self.class_keys is not None and len(self.class_keys) != len(self.classes):
            raise DatakitError(f"{where}: {len(self.class_keys)} class_keys for {len(self.classes)} classes")
        unknown = [f for f in self.class_by if f not in self.field_names]
        if unknown:
            raise DatakitError(f"{where}: class_by names {unknown}, not among the fields {self.field_names}")

    def default_class_keys(self) -> list[list] | None:
        """class_keys of a manifest that does not list them (None: no field rule)."""
        return None

    # -- reading --------------------------------------------------------------------------------
    def expected_counts(self, split: str) -> dict[str, int] | None:
        return dict((self.manifest.get("counts") or {}).get(split, {})) or None

    def count(self, split: str) -> int:
        self.check_split(split)
        counts = (self.manifest.get("counts") or {}).get(split)
        if counts is None:
            raise DatakitError(f"{self.root / 'manifest.json'}: no counts for split {split!r}")
        return int(sum(counts.values()))

    def files(self, split: str, fmt: str | None = None) -> list[Path]:
        split, fmt = self.check_split(split), self.check_format(fmt)
        listed = self.outputs[fmt].get(split)
        if listed is None:
            raise DatakitError(f"{self.root / 'manifest.json'}: no {fmt} output for split {split!r}")
        if fmt == "folders":  # a folder: the files are those the manifest lists under it
            prefix = f"{listed}/"
            rels = [rel for rel in self.manifest.get("files", {}) if rel.startswith(prefix)]
        else:
            rels = list(listed)
        paths = [self.root / rel for rel in rels]
        for rel, path in zip(rels, paths):
            if not path.is_file():
                raise DatakitError(f"{path}: missing ({fmt} file of the {split} split in the manifest)")
        return paths

    def items(self, split, fmt=None, pixels=True, on_error=None):
        split, fmt = self.check_split(split), self.check_format(fmt)
        reader = {"folders": self._folders, "tfrecord": self._tfrecord, "hdf5": self._hdf5}[fmt]
        return reader(split, pixels, on_error or raise_read_error)

    def tf_source(self, split, fmt=None, size=None):
        from datakit.datasets import tfdata

        return tfdata.build_source(self, split, fmt, size)

    def _folders(self, split, pixels, on_error):
        rel = self.outputs["folders"].get(split, f"folders/{split}")
        base = self.root / rel
        if not base.is_dir():
            on_error(rel, "missing folder")
            return
        for entry in sorted(base.iterdir()):
            where = f"{rel}/{entry.name}"
            if not entry.is_dir():
                on_error(where, "stray file (folders/<split>/ holds only class folders)")
                continue
            if entry.name not in self.classes:
                on_error(where, f"class folder {entry.name!r} is not a class of the manifest")
                continue
            label = self.classes.index(entry.name)
            for f in sorted(entry.iterdir()):
                if not f.is_file():
                    on_error(f"{where}/{f.name}", "not a file")
                    continue
                try:
                    data = f.read_bytes()
                except OSError as exc:
                    on_error(f"{where}/{f.name}", f"cannot read: {exc.strerror or exc}")
                    continue
                yield Item(label, f.name, f"{where}/{f.name}", data=data)

    def _tfrecord(self, split, pixels, on_error):
        from datakit import tfrecord

        keys = ("image/class/text", "image/height", "image/width", *self.field_names)
        for rel in self.outputs["tfrecord"].get(split, []):
            path = self.root / rel
            if not path.is_file():
                on_error(rel, "missing shard")
                continue
            i = 0
            try:
                for i, record in enumerate(tfrecord.read_records(path)):
                    where = f"{rel}#{i}"
                    try:
                        ex = tfrecord.parse_example(record)
                        data = ex["image/encoded"][0]
                        label = int(ex["image/class/label"][0])
                        filename = ex["image/filename"][0].decode("utf-8")
                    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
                        on_error(where, f"not a datakit tf.train.Example ({type(exc).__name__}: {exc})")
                        continue
                    meta = {key: (ex[key][0].decode("utf-8", "replace") if isinstance(ex[key][0], bytes)
                                  else ex[key][0]) for key in keys if ex.get(key)}
                    yield Item(label, filename, where, data=data, meta=meta)
            except ValueError as exc:  # framing: truncated shard, checksum mismatch
                reason = str(exc).split(": ", 1)[-1]
                on_error(rel, f"{reason} (after {i} good records)")

    def _hdf5(self, split, pixels, on_error):
        import h5py

        kinds = {f["name"]: f.get("kind", "int") for f in self.fields}
        for rel in self.outputs["hdf5"].get(split, []):
            path = self.root / rel
            if not path.is_file():
                on_error(rel, "missing file")
                continue
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                on_error(rel, f"cannot open HDF5 ({exc})")
                continue
            with f:
                try:
                    images = f["images"]
                    columns = {key: f[key][:] for key in ("labels", "filenames", *self.field_names)}
                    names = [_text(x) for x in columns["filenames"]]
                    stored_classes = [_text(x) for x in f.attrs.get("class_names", [])]
                except (KeyError, OSError, ValueError) as exc:
                    on_error(rel, f"not a datakit HDF5 file ({exc})")
                    continue
                n = len(images)
                lengths = {key: len(v) for key, v in columns.items()}
                if any(v != n for v in lengths.values()):
                    on_error(rel, f"images has {n} rows but {lengths}")
                    n = min([n, *lengths.values()])
                if stored_classes and stored_classes != self.classes:
                    on_error(rel, f"class_names attribute {stored_classes} differs from the manifest's classes")
                if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3) or images.dtype != np.uint8:
                    on_error(rel, f"images are {images.dtype} {images.shape[1:]}, not uint8 "
                                  f"{(self.size, self.size, 3)}")
                for start in range(0, n, HDF5_BLOCK):
                    stop = min(n, start + HDF5_BLOCK)
                    block = None
                    if pixels:
                        try:
                            block = images[start:stop]
                        except (OSError, ValueError) as exc:
                            on_error(f"{rel}[{start}:{stop}]", f"cannot read pixels ({exc})")
                            continue
                    for i in range(start, stop):
                        meta = {key: (_text(columns[key][i]) if kinds[key] == "str" else int(columns[key][i]))
                                for key in self.field_names}
                        item = Item(int(columns["labels"][i]), names[i], f"{rel}[{i}]", meta=meta)
                        if block is not None:
                            item.pixels = block[i - start]
                        else:
                            item.fetch = lambda i=i: images[i]  # valid while the reader is being iterated
                        yield item

    # -- doctor's rules -------------------------------------------------------------------------
    @property
    def label_rules(self) -> str:
        if self.class_keys is not None and self.class_by:
            return f", matching class texts and {'/'.join(self.class_by)} fields"
        return ", matching class texts"

    def label_problems(self, item: Item) -> list[str]:
        """The stored class text and label fields must name the item's class:
        label == class_keys.index([meta[f] for f in class_by]) wherever the format stores the fields."""
        label = item.label
        name = self.classes[label]
        problems = []
        text = item.meta.get("image/class/text")
        if text is not None and text != name:
            problems.append(f"label {label} ({name}) but image/class/text {text!r}")
        if self.class_keys is not None and self.class_by and all(f in item.meta for f in self.class_by):
            got = [item.meta[f] for f in self.class_by]
            if got != list(self.class_keys[label]):
                values = " ".join(f"{f}={item.meta[f]}" for f in self.class_by)
                problems.append(f"labelled {name} but {values}")
        return problems

    def hashed_files(self) -> list[str]:
        folders = self.outputs.get("folders", {})
        prefixes = tuple(f"{rel}/" for rel in folders.values()) + ("folders/",)
        return [rel for rel in self.manifest.get("files", {}) if not rel.startswith(prefixes)]

    def check_files(self, hashes: dict[str, str | None]) -> FileReport:
        """Every file the manifest lists has its sha256; nothing else sits in the output folders."""
        listed = self.manifest.get("files", {})
        errors = []
        for rel, digest in listed.items():
            got = hashes.get(rel)
            if got is None:
                if not (self.root / rel).is_file():
                    errors.append(f"{rel}: missing")
            elif got != digest:
                errors.append(f"{rel}: changed since the build (sha256 differs from the manifest)")
        for fmt in self.formats:
            base = self.root / fmt
            if not base.is_dir():
                errors.append(f"{fmt}/: missing")
                continue
            for dirpath, _, names in os.walk(base):
                for n in names:
                    rel = Path(dirpath, n).relative_to(self.root).as_posix()
                    if rel not in listed:
                        errors.append(f"{rel}: not written by the build (not in the manifest)")
        return FileReport(errors, [], f"{len(listed)} files match the manifest's sha256")

    def count_problems(self) -> list[str]:
        """Unless the build allowed short classes, every class holds --per-class pictures over all splits."""
        options = self.manifest.get("options", {})
        per_class = options.get("per_class")
        if options.get("allow_short", False) or per_class is None:
            return []
        totals: dict[str, int] = {}
        for split in self.splits:
            for c, n in (self.expected_counts(split) or {}).items():
                totals[c] = totals.get(c, 0) + n
        short = [f"{c} {n}" for c, n in totals.items() if n != per_class]
        return [f"manifest: classes not at --per-class {per_class}: {', '.join(short)}"] if short else []
