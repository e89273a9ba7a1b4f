"""Every dataset behind one interface: the same checks on each kind of folder datakit can open.

To add a dataset, write a maker `make_<name>(dest) -> Case` and append it to `CASES`: the maker
builds or writes a small clean folder and says what a reader must find in it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit import doctor, preview
from datakit.datasets import Dataset, open_dataset
from datakit.datasets.built import BuildDataset
from datakit.datasets.cifar.dataset import CifarDataset
from datakit.datasets.utk.dataset import UTKBuild
from datakit.errors import DatakitError


@dataclass
class Case:
    path: Path                  # what open_dataset is given
    cls: type                   # the class it must return
    key: str
    classes: list[str]
    splits: list[str]
    formats: list[str]
    size: int
    total: dict[str, int] | int  # pictures per split, or over all splits (a seeded split of a build)
    crop: int | float


# -- makers: one per dataset kind ----------------------------------------------------------------

def make_utk(dest: Path) -> Case:
    from datakit.datasets import utk
    from datakit.testing import synthetic

    synthetic.make_utk_folder(dest / "src", per_cell=8, races=(0, 1, 2, 3), seed=5, size=48)
    utk.build(dest / "src", dest / "out", per_class=8, size=48, val_fraction=0.25, test_fraction=0.125, seed=1,
              workers=1)
    return Case(dest / "out", UTKBuild, "utk", utk.class_names((0, 1, 2, 3)), ["train", "val", "test"],
                ["folders", "tfrecord", "hdf5"], 48, 8 * 8, 0.88)


def make_cifar10(dest: Path) -> Case:
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar10_dir(dest, train_per_batch=12, test=20, seed=4)
    return Case(dest, CifarDataset, "cifar10", synthetic_cifar.CIFAR10_CLASSES, ["train", "test"], ["binary"],
                32, {"train": 60, "test": 20}, 24)


def make_cifar100(dest: Path) -> Case:
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar100_dir(dest, train=200, test=100, seed=4)
    return Case(dest / "cifar-100-binary", CifarDataset, "cifar100", synthetic_cifar.CIFAR100_FINE,
                ["train", "test"], ["binary"], 32, {"train": 200, "test": 100}, 24)


def make_folder(dest: Path) -> Case:
    """A generic `datakit build` of class folders with names that are not UTKFace's."""
    from datakit.datasets import folder
    from datakit.datasets.folder.dataset import FolderBuild
    from datakit.testing import synthetic

    synthetic.make_utk_folder(dest / "flat", per_cell=6, races=(0, 1), seed=9, size=40)
    for f in sorted((dest / "flat").iterdir()):
        race, gender = f.name.split("_")[2], f.name.split("_")[1]
        cls = dest / "src" / f"{'cat' if race == '0' else 'dog'}{' big' if gender == '1' else ''}"
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, cls / f.name.replace(".jpg.chip.jpg", ".jpeg"))
    folder.build(dest / "src", dest / "out", labels="folders", per_class=6, size=40, val_fraction=0.34, seed=2,
                 workers=1)
    return Case(dest / "out", FolderBuild, "folder", ["cat", "cat big", "dog", "dog big"], ["train", "val"],
                ["folders", "tfrecord", "hdf5"], 40, 4 * 6, 0.88)


CASES = [make_utk, make_cifar10, make_cifar100, make_folder]


@pytest.fixture(scope="module", params=CASES, ids=lambda make: make.__name__.removeprefix("make_"))
def case(request, tmp_path_factory) -> Case:
    return request.param(tmp_path_factory.mktemp(request.param.__name__))


# -- the interface -------------------------------------------------------------------------------

def test_open_dataset_returns_the_datasets_class(case):
    ds = open_dataset(case.path)
    assert type(ds) is case.cls and isinstance(ds, Dataset)
    assert ds.key == case.key and ds.root.is_dir()


def test_classes_splits_formats_size_and_crop(case):
    ds = open_dataset(case.path)
    assert ds.classes == case.classes
    assert ds.splits == case.splits
    assert ds.formats == case.formats
    assert ds.size == case.size
    assert ds.default_crop == case.crop
    assert set(ds.train_splits) <= set(ds.splits)


def test_counts_per_split(case):
    ds = open_dataset(case.path)
    counts = {split: ds.count(split) for split in ds.splits}
    if isinstance(case.total, dict):
        assert counts == case.total
    else:
        assert sum(counts.values()) == case.total and all(n > 0 for n in counts.values())
    for split in ds.splits:
        expected = ds.expected_counts(split)
        if expected is not None:
            assert sum(expected.values()) == counts[split]


def test_items_of_every_format(case):
    ds = open_dataset(case.path)
    for fmt in ds.formats:
        for split in ds.splits:
            items = list(ds.items(split, fmt))
            assert len(items) == ds.count(split), (fmt, split)
            labels = np.array([it.label for it in items])
            assert ((labels >= 0) & (labels < len(ds.classes))).all()
            for it in items[:5] + items[-2:]:
                px = it.rgb()
                assert px.shape == (ds.size, ds.size, 3) and px.dtype == np.uint8
                assert ds.label_problems(it) == []
    # every format holds the same labels under the same names
    first = {it.filename: it.label for it in ds.items(ds.splits[0], ds.formats[0])}
    for fmt in ds.formats[1:]:
        assert {it.filename: it.label for it in ds.items(ds.splits[0], fmt)} == first


def test_items_lazily_without_pixels(case):
    ds = open_dataset(case.path)
    items = ds.items(ds.splits[0], ds.formats[-1], pixels=False)  # lazy reads are valid while it iterates
    it = next(iter(items))
    assert it.rgb().shape == (ds.size, ds.size, 3)
    assert np.array_equal(it.rgb(), next(iter(ds.items(ds.splits[0], ds.formats[-1]))).rgb())


def test_files_list_what_holds_each_split(case):
    ds = open_dataset(case.path)
    seen = set()
    for fmt in ds.formats:
        for split in ds.splits:
            files = ds.files(split, fmt)
            assert files and all(isinstance(f, Path) and f.is_file() for f in files)
            assert all(ds.root in f.parents for f in files)
            assert not seen & set(files)  # no file holds two splits
            seen |= set(files)
    with pytest.raises(DatakitError, match="no split 'nope'"):
        ds.files("nope", ds.formats[0])


def test_a_missing_file_is_an_error_naming_it(case, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(open_dataset(case.path).root, copy)
    ds = open_dataset(copy)
    victim = ds.files(ds.splits[-1], ds.formats[-1])[0]
    victim.unlink()
    with pytest.raises(DatakitError, match=victim.name):
        ds.files(ds.splits[-1], ds.formats[-1])


def test_doctor_is_clean_on_a_clean_folder(case):
    result = doctor.doctor(case.path, workers=2)
    assert result["errors"] == 0, [c for c in result["checks"] if c["status"] == "error"]
    assert result["kind"] == case.key
    ds = open_dataset(case.path)
    assert result["pictures_read"] == sum(ds.count(s) for s in ds.splits) * len(ds.formats)
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["labels"]["status"] == "ok" and checks["labels"]["detail"].startswith("labels in range")
    assert f"crop random {case.crop}," in checks["augment"]["detail"]  # the dataset's own training crop


def test_preview_draws_a_sheet(case, tmp_path):
    ds = open_dataset(case.path)
    split = ds.train_splits[0]
    got = preview.contact_sheet(case.path, tmp_path / "sheet.png", split=split, per_class=2, thumb=16)
    sheet = Image.open(got["out"])
    assert sheet.size == (got["width"], got["height"])
    assert got["kind"] == case.key and got["classes"] == ds.classes
    assert sum(got["counts"].values()) == ds.count(split)
    assert len(got["cells"]) == len(ds.classes)


def test_tf_source_of_every_format_feeds_a_pipeline(case):
    """The tf.data side of the interface: each format's source gives the pipelines the whole split,
    labels in range, at the dataset's size and default crop."""
    import numpy as np

    from datakit import pipelines

    ds = open_dataset(case.path)
    split = [s for s in ds.splits if s not in ds.train_splits][0]
    for fmt in ds.formats:
        src = ds.tf_source(split, fmt)
        assert src.count == ds.count(split) and src.image_shape == (ds.size, ds.size, 3)
        p = pipelines.dataset_pipeline(ds, split, fmt, None, pipelines.PipelineOptions(batch_size=7, device="cpu"))
        labels, n = [], 0
        for images, y in p:
            crop = case.crop if isinstance(case.crop, int) else int(round(case.crop * ds.size))
            assert tuple(images.shape[1:]) == (crop, crop, 3)
            labels += y.numpy().tolist()
            n += int(images.shape[0])
        assert n == ds.count(split) and set(labels) <= set(range(len(ds.classes)))
        items = sorted(item.label for item in ds.items(split, fmt, pixels=False))
        assert sorted(labels) == items


# -- builds: the manifest decides, for any dataset key -------------------------------------------

@pytest.fixture(scope="module")
def utk_case(tmp_path_factory) -> Case:
    return make_utk(tmp_path_factory.mktemp("utk-manifests"))


def _rewrite_manifest(src: Path, dest: Path, edit) -> Path:
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_a_build_of_an_unregistered_dataset_opens_as_a_plain_build(utk_case, tmp_path):
    path = _rewrite_manifest(utk_case.path, tmp_path / "b", lambda m: m.update(dataset="not-yet-registered"))
    ds = open_dataset(path)
    assert type(ds) is BuildDataset and ds.key == "not-yet-registered"
    assert ds.class_by == ["race", "gender"] and len(ds.class_keys) == len(ds.classes)
    result = doctor.doctor(path, workers=2)
    assert result["errors"] == 0 and result["kind"] == "not-yet-registered"


def test_the_generic_label_rule_reads_class_keys(utk_case, tmp_path):
    """A build whose class_keys disagree with the stored fields: every format storing them says so."""
    def swap(m):
        m["dataset"] = "not-yet-registered"
        m["class_keys"][0], m["class_keys"][1] = m["class_keys"][1], m["class_keys"][0]

    path = _rewrite_manifest(utk_case.path, tmp_path / "b", swap)
    result = doctor.doctor(path, workers=2)
    labels = [c for c in result["checks"] if c["check"] == "labels"][0]
    assert labels["status"] == "error"
    found = "\n".join(result["findings"]["labels"])
    assert "tfrecord:" in found and "hdf5:" in found and "folders:" not in found
    assert "but race=0 gender=0" in found or "but race=0 gender=1" in found


def test_an_old_build_utk_manifest_gets_utks_defaults(utk_case, tmp_path):
    def strip(m):
        for key in ("dataset", "fields", "class_by", "class_keys", "near_duplicates"):
            m.pop(key, None)
        m["datakit"]["command"] = "build-utk"

    path = _rewrite_manifest(utk_case.path, tmp_path / "b", strip)
    ds = open_dataset(path)
    assert type(ds) is UTKBuild and ds.key == "utk"
    assert ds.field_names == ["age", "gender", "race"] and ds.class_by == ["race", "gender"]
    assert ds.class_keys == [[r, g] for r in range(4) for g in (0, 1)]
    assert doctor.doctor(path, workers=2)["errors"] == 0


def test_a_manifest_of_another_command_is_refused(utk_case, tmp_path):
    path = _rewrite_manifest(utk_case.path, tmp_path / "b", lambda m: m["datakit"].update(command="other"))
    with pytest.raises(DatakitError, match="not a datakit build-utk or build manifest"):
        open_dataset(path)
