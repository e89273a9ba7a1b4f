"""The UTKFace-shaped synthetic folder: real-dump file sizes, JPEG properties, classes and quirks."""

import hashlib

import numpy as np
from PIL import Image, JpegImagePlugin

from datakit.datasets.utk.names import NameError_, parse_name
from datakit.testing.utk_like import make_utk_like_folder


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_small_utk_like_folder_is_shaped_like_the_real_dump(tmp_path):
    info = make_utk_like_folder(tmp_path / "a", n=400, seed=3, workers=1)
    files = sorted((tmp_path / "a").iterdir())
    assert len(files) == info["files"] == 400
    sizes = np.array([p.stat().st_size for p in files])
    assert sizes.min() >= 2000 and sizes.max() <= 13000 and 4500 <= sizes.mean() <= 5600
    with Image.open(files[0]) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (200, 200), "RGB")
        assert not im.info.get("progressive") and JpegImagePlugin.get_sampling(im) == 2  # baseline, 4:2:0
    classes = set()
    bad = []
    for p in files:
        try:
            lab = parse_name(p.name)
            classes.add((lab.race, lab.gender))
        except NameError_:
            bad.append(p.name)
    assert classes == {(r, g) for r in range(5) for g in range(2)}
    assert sorted(bad) == sorted(info["bad_names"]) and bad
    digests = _digests(tmp_path / "a")
    for group in info["identical"] + info["conflicting"]:
        assert len({digests[f] for f in group}) == 1
    assert info["identical"] and info["conflicting"]
    assert len(set(digests.values())) == 400 - sum(len(g) - 1 for g in info["identical"] + info["conflicting"])
    near = info["near_duplicates"][0]["files"]
    assert digests[near[0]] != digests[near[1]]


def test_the_same_seed_gives_the_same_bytes_whatever_the_workers(tmp_path):
    make_utk_like_folder(tmp_path / "a", n=120, seed=1, workers=1)
    make_utk_like_folder(tmp_path / "b", n=120, seed=1, workers=2)
    make_utk_like_folder(tmp_path / "c", n=120, seed=2, workers=1)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
