"""preview: contact sheets read back from each format show what that format really holds."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import synthetic_build
from PIL import Image, ImageDraw

from datakit import preview
from datakit.datasets import open_dataset
from datakit.errors import DatakitError
from datakit.testing.synthetic import RACE_COLOURS

FORMATS = ("folders", "tfrecord", "hdf5")



@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return synthetic_build(tmp_path_factory, "preview", per_cell=10, size=48, val_fraction=0.2, seed=2, src_seed=21)


def cell(sheet: Image.Image, result: dict, name: str, i: int) -> np.ndarray:
    x, y = result["cells"][name][i]
    t = result["thumb"]
    return np.asarray(sheet.convert("RGB"))[y:y + t, x:x + t]


def background(pixels: np.ndarray) -> np.ndarray:
    """Median colour of a picture's border: the synthetic background, whatever the shape drawn."""
    border = np.concatenate([pixels[:4].reshape(-1, 3), pixels[-4:].reshape(-1, 3)])
    return np.median(border, axis=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sheet_from_each_format(build, tmp_path, fmt):
    out = tmp_path / f"{fmt}.png"
    result = preview.contact_sheet(build, out, split="train", per_class=5, fmt=fmt, thumb=64)
    sheet = Image.open(out)
    assert sheet.size == (result["width"], result["height"]) and min(sheet.size) >= 300
    classes = result["classes"]
    assert list(result["counts"]) == classes and set(result["counts"].values()) == {8}
    src = open_dataset(build)
    pictures = {it.filename: it.rgb() for it in src.items("train", fmt)}
    for k, name in enumerate(classes):
        shown = result["shown"][name]
        assert len(shown) == 5 and len(result["cells"][name]) == 5
        for i, filename in enumerate(shown):
            drawn = cell(sheet, result, name, i)
            # the cell is that very picture, scaled to the thumbnail ...
            assert np.array_equal(drawn, np.asarray(preview._cell(pictures[filename], 64)))
            # ... and it is in the row of its class: the background colour of its race
            race = src.races[k // 2]
            assert np.abs(background(drawn) - RACE_COLOURS[race]).max() < 70


def test_a_wrong_channel_order_in_one_format_shows(build, tmp_path):
    bad = tmp_path / "bgr"
    shutil.copytree(build, bad)
    with h5py.File(bad / "hdf5" / "utk-train.h5", "a") as f:
        f["images"][...] = f["images"][:][..., ::-1]
    good = preview.contact_sheet(bad, tmp_path / "folders.png", fmt="folders", per_class=3, thumb=48)
    wrong = preview.contact_sheet(bad, tmp_path / "hdf5.png", fmt="hdf5", per_class=3, thumb=48)
    g = cell(Image.open(good["out"]), good, "white_male", 0)
    w = cell(Image.open(wrong["out"]), wrong, "white_male", 0)
    assert background(g)[0] > background(g)[2] + 60  # white: a red background ...
    assert background(w)[2] > background(w)[0] + 60  # ... shown blue from the swapped HDF5 file


def test_a_wrong_label_in_one_format_shows(build, tmp_path):
    bad = tmp_path / "label"
    shutil.copytree(build, bad)
    with h5py.File(bad / "hdf5" / "utk-train.h5", "a") as f:
        labels = f["labels"][:]
        i = int(np.nonzero(labels == 0)[0][0])
        labels[i] = 7
        f["labels"][...] = labels
        name = f["filenames"][i].decode()
    result = preview.contact_sheet(bad, tmp_path / "s.png", fmt="hdf5", per_class=8, thumb=32)
    assert name in result["shown"]["indian_female"]
    assert result["counts"]["indian_female"] == 9 and result["counts"]["white_male"] == 7
    sheet = Image.open(result["out"])
    drawn = cell(sheet, result, "indian_female", result["shown"]["indian_female"].index(name))
    assert np.abs(background(drawn) - RACE_COLOURS[0]).max() < 70  # a white (red) picture in the Indian row


def test_labels_outside_the_classes_get_their_own_row(build, tmp_path):
    bad = tmp_path / "range"
    shutil.copytree(build, bad)
    with h5py.File(bad / "hdf5" / "utk-val.h5", "a") as f:
        labels = f["labels"][:]
        labels[0] = 42
        f["labels"][...] = labels
    result = preview.contact_sheet(bad, tmp_path / "s.png", split="val", fmt="hdf5", per_class=2, thumb=32)
    assert result["counts"]["(label not a class)"] == 1
    assert len(result["cells"]["(label not a class)"]) == 1


def test_cifar_sheets(tmp_path):
    from datakit.testing import synthetic_cifar

    synthetic_cifar.make_cifar10_dir(tmp_path / "c10", train_per_batch=20, test=30, seed=1)
    synthetic_cifar.make_cifar100_dir(tmp_path / "c100", train=200, test=100, seed=1)
    r10 = preview.contact_sheet(tmp_path / "c10", tmp_path / "c10.png", split="test", per_class=2)
    assert r10["classes"][0] == "airplane" and sum(r10["counts"].values()) == 30
    assert r10["thumb"] == 96
    c = cell(Image.open(r10["out"]), r10, r10["classes"][0], 0)
    # 32 px pictures are enlarged 3x without smoothing: blocks of 3 x 3 equal pixels
    assert np.array_equal(c[::3, ::3].repeat(3, 0).repeat(3, 1), c)
    coarse = preview.contact_sheet(tmp_path / "c100", tmp_path / "c100.png", per_class=4, label_mode="coarse")
    assert len(coarse["classes"]) == 20 and sum(coarse["counts"].values()) == 200
    fine = preview.contact_sheet(tmp_path / "c100" / "cifar-100-binary", tmp_path / "f.png", per_class=1)
    assert len(fine["classes"]) == 100 and fine["thumb"] == 56
    assert Image.open(fine["out"]).height > 100 * 56


def test_labels_are_legible():
    font = preview._font(18)
    box = ImageDraw.Draw(Image.new("RGB", (10, 10))).textbbox((0, 0), "white_female", font=font)
    assert box[3] - box[1] >= 12 and box[2] - box[0] >= 90  # not Pillow's 11 px bitmap font


def test_palette_is_smaller_and_says_so(build, tmp_path):
    full = preview.contact_sheet(build, tmp_path / "full.png", per_class=8)
    small = preview.contact_sheet(build, tmp_path / "small.png", per_class=8, palette=True)
    assert small["bytes"] < full["bytes"] / 2
    assert Image.open(small["out"]).mode == "P"


def test_to_display_rescales_each_picture():
    standardized = np.random.default_rng(0).normal(size=(24, 24, 3)).astype(np.float32)
    shown = preview.to_display(standardized)
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
    assert np.corrcoef(shown.ravel(), standardized.ravel())[0, 1] > 0.999
    assert preview.to_display(np.full((4, 4, 3), 7.0)).max() == 0  # a flat picture stays flat


def test_augmented_view(build, tmp_path):
    pytest.importorskip("tensorflow")
    plain = preview.contact_sheet(build, tmp_path / "plain.png", per_class=3, thumb=48)
    aug = preview.contact_sheet(build, tmp_path / "aug.png", per_class=3, thumb=48, augmented=True, seed=5)
    assert aug["shown"] == plain["shown"]  # the same pictures ...
    src = open_dataset(build)
    pictures = [it.rgb() for it in src.items("train", "folders")][:4]
    shown = preview.augment_pictures(pictures, src, seed=5)
    assert [p.shape for p in shown] == [(42, 42, 3)] * 4  # ... cropped to 0.88 of 48 px by the training config
    assert all(p.min() == 0 and p.max() == 255 for p in shown)
    again = preview.augment_pictures(pictures, src, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(shown, again))  # seeded
    other = preview.augment_pictures(pictures, src, seed=6)
    assert not all(np.array_equal(a, b) for a, b in zip(shown, other))
    sheet_plain = cell(Image.open(plain["out"]), plain, "white_male", 0)
    sheet_aug = cell(Image.open(aug["out"]), aug, "white_male", 0)
    assert not np.array_equal(sheet_plain, sheet_aug)


def test_bad_requests(build, tmp_path):
    with pytest.raises(DatakitError, match="no split 'test'"):
        preview.contact_sheet(build, tmp_path / "x.png", split="test")
    with pytest.raises(DatakitError, match="format 'binary' not available"):
        preview.contact_sheet(build, tmp_path / "x.png", fmt="binary")
    with pytest.raises(DatakitError, match="no such folder"):
        preview.contact_sheet(tmp_path / "nothing", tmp_path / "x.png")
    with pytest.raises(DatakitError, match="does not exist"):
        preview.contact_sheet(build, tmp_path / "no" / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli(build, tmp_path, capsys, monkeypatch):
    from datakit_cli.main import main

    out = tmp_path / "sheet.png"
    assert main(["preview", str(build), "--split", "val", "--per-class", "2", "--format", "tfrecord",
                 "-o", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ok"] and got["out"] == str(out) and got["format"] == "tfrecord" and out.is_file()
    monkeypatch.chdir(tmp_path)
    assert main(["preview", str(build)]) == 0
    assert "wrote preview-train.png" in capsys.readouterr().out
    assert (tmp_path / "preview-train.png").is_file()
    assert main(["preview", str(build), "--split", "nope"]) == 1
    assert "no split 'nope'" in capsys.readouterr().err
