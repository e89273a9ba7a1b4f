"""Synthetic CIFAR-10 / CIFAR-100 binaries and tarballs in the official layouts, for tests and demos.

Why: the real archives are 170 MB downloads; tests, the demo and benchmarks need the exact file
formats (planar R, G, B records behind 1 or 2 label bytes, the official folder and file names)
at any size, offline, reproducibly. Images are learnable: each class has its own colour and stripe
pattern (CIFAR-100: colour from the coarse class, stripes from the fine class), plus per-image noise
and brightness jitter, so a small model can tell classes apart.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from datakit.datasets.cifar.spec import FINE_TO_COARSE  # noqa: F401 - re-exported for tests

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]

CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]


_README = ("<html><body><p>Synthetic stand-in for the CIFAR binary version, written by "
           "datakit.testing.synthetic_cifar: same layout and record format, generated pictures.</p></body></html>\n")


def _hue_rgb(hue: np.ndarray, value: float = 1.0) -> np.ndarray:
    """Fully saturated colours for hues in [0, 1), as float RGB in [0, 255]."""
    k = (hue[:, None] * 6 + np.array([5.0, 3.0, 1.0])) % 6
    return 255 * value * (1 - np.clip(np.minimum(k, 4 - k), 0, 1))


def class_templates(colour_ids: np.ndarray, n_colours: int, pattern_ids: np.ndarray) -> np.ndarray:
    """(C, 32, 32, 3) float32 mean pictures: a colour per colour id, stripes per pattern id."""
    colours = _hue_rgb(np.arange(n_colours) / n_colours, 0.85)[colour_ids]        # (C, 3)
    y, x = np.mgrid[0:32, 0:32].astype(np.float32)
    angle = np.pi * ((pattern_ids * 0.3819) % 1.0)                                 # golden-ratio spread
    freq = 2 * np.pi * (1 + pattern_ids % 4) / 32.0
    phase = np.cos(angle)[:, None, None] * x + np.sin(angle)[:, None, None] * y
    stripes = 0.5 + 0.5 * np.sin(freq[:, None, None] * phase)                      # (C, 32, 32)
    return (colours[:, None, None, :] * (0.45 + 0.55 * stripes[..., None])).astype(np.float32)


def _pictures(templates: np.ndarray, labels: np.ndarray, rng: np.random.Generator, noise: int = 24) -> np.ndarray:
    """(N, 32, 32, 3) uint8: the class template, a brightness shift and uniform pixel noise."""
    out = np.empty((len(labels), 32, 32, 3), np.uint8)
    for start in range(0, len(labels), 4096):  # bounded memory for full-size sets
        lab = labels[start:start + 4096]
        pic = templates[lab].astype(np.int16)
        pic += rng.integers(-20, 21, size=(len(lab), 1, 1, 1), dtype=np.int16)
        pic += rng.integers(-noise, noise + 1, size=pic.shape, dtype=np.int16)
        out[start:start + len(lab)] = np.clip(pic, 0, 255)
    return out


def encode_records(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """Records in the CIFAR binary format: the label bytes, then the R, G and B planes (row-major)."""
    n = len(images)
    planes = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(n, 3072)
    labels = [np.asarray(c, dtype=np.uint8).reshape(n, 1) for c in label_columns]
    return np.concatenate(labels + [planes], axis=1).tobytes()


def _balanced(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def cifar10_arrays(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic CIFAR-10 (images RGB uint8, labels int64), classes balanced."""
    ids = np.arange(10)
    labels = _balanced(n, 10, rng)
    return _pictures(class_templates(ids, 10, ids), labels, rng), labels


def cifar100_arrays(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n synthetic CIFAR-100 (images, fine labels, coarse labels); colour follows the coarse class."""
    fine = _balanced(n, 100, rng)
    templates = class_templates(FINE_TO_COARSE, 20, np.arange(100))
    return _pictures(templates, fine, rng), fine, FINE_TO_COARSE[fine]


def make_cifar10_dir(dest: str | os.PathLike, train_per_batch: int = 100, test: int = 100, seed: int = 0) -> dict:
    """Write dest/cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin, batches.meta.txt, readme.html).

    Returns {"folder", "train", "test", "files"}; the full-size set is train_per_batch=10000, test=10000.
    """
    rng = np.random.default_rng(seed)
    folder = Path(dest) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, [train_per_batch] * 5 + [test]):
        images, labels = cifar10_arrays(n, rng)
        (folder / name).write_bytes(encode_records(images, labels))
    # The official file ends its ten names with blank lines.
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n\n")
    (folder / "readme.html").write_text(_README)
    return {"folder": str(folder), "train": 5 * train_per_batch, "test": test,
            "files": sorted(p.name for p in folder.iterdir())}


def make_cifar100_dir(dest: str | os.PathLike, train: int = 500, test: int = 100, seed: int = 0) -> dict:
    """Write dest/cifar-100-binary/ (train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt).

    Each record is coarse label byte, fine label byte, 3072 pixel bytes; full size is 50000 / 10000.
    """
    rng = np.random.default_rng(seed)
    folder = Path(dest) / "cifar-100-binary"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.bin", train), ("test.bin", test)):
        images, fine, coarse = cifar100_arrays(n, rng)
        (folder / name).write_bytes(encode_records(images, coarse, fine))
    (folder / "fine_label_names.txt").write_text("\n".join(CIFAR100_FINE) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(CIFAR100_COARSE) + "\n")
    return {"folder": str(folder), "train": train, "test": test, "files": sorted(p.name for p in folder.iterdir())}


_MTIME = 1244160000  # a fixed date (June 2009) keeps the tarballs byte-for-byte reproducible


def tar_folder(path: str | os.PathLike, source: str | os.PathLike,
               extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> dict:
    """Write a reproducible .tar.gz of `source` (as its top folder), then `extra` members verbatim.

    `extra` lets tests add hostile members (`../x`, symlinks, devices). Returns {"path", "md5", "sha256", "bytes"}.
    """
    source, path = Path(source), Path(path)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=_MTIME, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.mtime, info.uid, info.gid, info.uname, info.gname = _MTIME, 0, 0, "", ""
            return info
        members = [source] + sorted(source.rglob("*"))
        for p in members:
            tar.add(p, arcname=(Path(source.name) / p.relative_to(source)).as_posix(), recursive=False, filter=clean)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"path": str(path), "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data)}


def _tarball(make, folder_name: str, path, extra, **kw) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="datakit-synthetic-cifar-") as tmp:
        made = make(tmp, **kw)
        info = tar_folder(path, Path(tmp) / folder_name, extra)
    return {**info, "train": made["train"], "test": made["test"]}


def make_cifar10_tarball(path: str | os.PathLike, train_per_batch: int = 100, test: int = 100, seed: int = 0,
                         extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> dict:
    """A cifar-10-binary.tar.gz look-alike at `path`; returns {"path", "md5", "sha256", "bytes", "train", "test"}."""
    return _tarball(make_cifar10_dir, "cifar-10-batches-bin", path, extra,
                    train_per_batch=train_per_batch, test=test, seed=seed)


def make_cifar100_tarball(path: str | os.PathLike, train: int = 500, test: int = 100, seed: int = 0,
                          extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> dict:
    """A cifar-100-binary.tar.gz look-alike at `path`; returns {"path", "md5", "sha256", "bytes", "train", "test"}."""
    return _tarball(make_cifar100_dir, "cifar-100-binary", path, extra, train=train, test=test, seed=seed)
