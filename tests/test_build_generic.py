"""`datakit build` over any labelled folder: each label source, bad input, near-duplicates."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datakit import tfrecord
from datakit.datasets import folder
from datakit.errors import DatakitError
from datakit.testing import synthetic

DATAKIT = [sys.executable, "-m", "datakit_cli.main"]


def _records(out: Path, manifest: dict, split: str) -> list[dict]:
    return [tfrecord.parse_example(r) for rel in manifest["outputs"]["tfrecord"][split]
            for r in tfrecord.read_records(out / rel)]


@pytest.fixture(scope="module")
def class_dirs(utk_src, tmp_path_factory):
    """The nasty UTK fixture laid out as class folders (race x gender), plus an empty class folder,
    a hidden one, one whose name holds a newline, a nested subfolder and a stray file."""
    src, _ = utk_src
    root = tmp_path_factory.mktemp("class-dirs")
    for f in sorted(src.iterdir()):
        parts = f.name.split("_")
        if f.is_file() and len(parts) > 3 and parts[1] in "01" and parts[2] in "0123":
            d = root / f"{synthetic.RACE_NAMES[int(parts[2])] if hasattr(synthetic, 'RACE_NAMES') else parts[2]}-{parts[1]}"
            d.mkdir(exist_ok=True)
            shutil.copy(f, d / f.name)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (first / "deeper").mkdir()
    shutil.copy(next(first.glob("*.jpg")), first / "deeper" / "nested.jpg")
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(b"")
    (root / "bad\nname").mkdir()
    shutil.copy(next(first.glob("*.jpg")), root / "bad\nname" / "y.jpg")
    (root / "README.txt").write_text("class folders\n")
    return root


def test_class_folders_labels_are_the_folders(class_dirs, tmp_path):
    out = tmp_path / "out"
    m = folder.build(class_dirs, out, labels="folders", per_class=8, size=64, seed=1, workers=2, allow_short=True)
    classes = sorted(p.name for p in class_dirs.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and "\n" not in p.name and p.name != "empty")
    assert m["classes"] == classes and m["dataset"] == "folder" and m["class_by"] == ["class"]
    ignored = {i["file"]: i["reason"] for i in m["ignored"]}
    assert "empty class folder" in ignored["empty"] and "not a valid class name" in ignored["bad\nname"]
    assert "starts with a dot" in ignored[".hidden"] and "not a class folder" in ignored["README.txt"]
    for split in m["splits"]:
        for row in _records(out, m, split):
            label = row["image/class/label"][0]
            assert row["class"][0].decode() == m["classes"][label] == row["image/class/text"][0].decode()
            assert (out / "folders" / split / m["classes"][label] / row["image/filename"][0].decode()).is_file()


def test_pattern_fields_and_class_combination(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    names = ["wm", "wf", "bm", "bf", "am", "af", "im", "if"]
    m = folder.build(src, out, labels="pattern", pattern="{age:0..120}_{gender:0..1}_{race:0..4}_*",
                     class_by=["race", "gender"], class_names=names, where=["race=0..3"], per_class=9, size=64,
                     workers=1, near_duplicates="keep")
    assert m["classes"] == names and m["class_keys"] == [[r, g] for r in range(4) for g in (0, 1)]
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert "gender 2 outside 0..1" in reasons[f"20_2_0_20170109150557335.jpg.chip.jpg"]
    assert "race 7 outside 0..4" in reasons["20_0_7_20170109150557335.jpg.chip.jpg"]
    assert "does not match" in reasons["abc_0_1_20170109150557335.jpg.chip.jpg"]
    assert "does not match" in reasons["39_1_20170116174525125.jpg.chip.jpg"]
    for row in _records(out, m, "train"):
        name = row["image/filename"][0].decode()
        age, gender, race = (int(x) for x in name.split("_")[:3])
        assert (row["age"], row["gender"], row["race"]) == ([age], [gender], [race])
        assert row["image/class/label"] == [race * 2 + gender]
    # the same classes as build-utk: the preset and the generic builder pick from the same candidates
    from datakit.datasets import utk

    u = utk.build(src, tmp_path / "utk", per_class=9, size=64, workers=1, near_duplicates="keep")
    assert list(u["available"].values()) == list(m["available"].values())


def test_csv_labels_and_every_bad_row(utk_src, tmp_path):
    src, _ = utk_src
    pics = tmp_path / "pics"
    (pics / "train").mkdir(parents=True)
    rows = ["file,age,gender,race"]
    for i, f in enumerate(sorted(p for p in src.iterdir() if p.name.split("_")[0].isdigit())[:70]):
        a, g, r = f.name.split("_")[:3]
        if not (g in "01" and r in "0123"):
            continue
        shutil.copy(f, pics / "train" / f"{i}.jpg")
        rows.append(f"train/{i}.jpg,{a},{'Male' if g == '0' else 'Female'},{r}")
    rows += ["train/missing.jpg,30,Male,1", "../outside.jpg,30,Male,1", ",30,Male,1", "train/0.jpg,31,Female,1",
             f"train/1.jpg,30,,1"]
    (pics / "train" / "unnamed.jpg").write_bytes((pics / "train" / "2.jpg").read_bytes())
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    m = folder.build(pics, tmp_path / "out", labels="csv", csv=csv, file_column="file",
                     label_columns=["gender", "race"], class_by=["gender"], per_class=5, size=64, workers=1,
                     allow_short=True, near_duplicates="keep")
    assert m["classes"] == ["Female", "Male"] and [f["kind"] for f in m["fields"]] == ["str", "int"]
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert "missing" in reasons["train/missing.jpg"] and "outside SRC" in reasons["../outside.jpg"]
    assert "names no file" in reasons["labels.csv:" + str(len(rows) - 2)]
    assert "more than once" in reasons["train/0.jpg"] and "empty gender" in reasons["train/1.jpg"]
    assert {i["file"]: i["reason"] for i in m["ignored"]}["train/unnamed.jpg"] == "not named in labels.csv"
    with pytest.raises(DatakitError, match="label_columns 'ethnicity' is not a column"):
        folder.build(pics, tmp_path / "out2", labels="csv", csv=csv, file_column="file", label_columns=["ethnicity"])


def test_cli_bad_input_is_one_line_and_exit_1(utk_src, tmp_path):
    src, _ = utk_src
    cases = [["--labels", "pattern", "--pattern", "{age:int}_{gender:0..1}_{race:int}_*"],  # no --class-by
             ["--labels", "pattern", "--pattern", "{age:int_*", "--class-by", "age"],
             ["--labels", "csv", "--csv", str(tmp_path / "nope.csv"), "--file-column", "f", "--label-columns", "a"],
             ["--labels", "pattern", "--pattern", "{age:int}_{gender:0..1}_{race:0..4}_*", "--class-by", "race",
              "--class-names", "a,b"]]
    for i, extra in enumerate(cases):
        run = subprocess.run(DATAKIT + ["build", str(src), str(tmp_path / f"o{i}")] + extra,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stderr
        lines = [line for line in run.stderr.splitlines() if "error" in line]
        assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
        assert "--" in lines[0]  # the flag, not the Python parameter
        assert not (tmp_path / f"o{i}" / "manifest.json").exists()


def _near_folder(dest: Path) -> dict:
    """Distinct pictures under UTK names, plus re-encoded copies (another quality, another age in the
    name) of some: same class, and one with the other gender (a conflict)."""
    rng = np.random.default_rng(4)
    dest.mkdir()
    made = {"pairs": [], "conflict": None}
    n = 0
    for race in (0, 1):
        for gender in (0, 1):
            for k in range(16):
                base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
                name = f"{20 + k}_{gender}_{race}_2017{n:013d}.jpg.chip.jpg"
                n += 1
                (dest / name).write_bytes(synthetic.jpeg_bytes(base, quality=92))
                if k < 3:
                    other_gender = 1 - gender if (race, gender, k) == (0, 0, 0) else gender
                    twin = f"{60 + k}_{other_gender}_{race}_2018{n:013d}.jpg.chip.jpg"
                    n += 1
                    (dest / twin).write_bytes(synthetic.jpeg_bytes(base, quality=60))
                    if other_gender != gender:
                        made["conflict"] = (name, twin)
                    else:
                        made["pairs"].append((name, twin))
    return made


@pytest.fixture(scope="module")
def near_src(tmp_path_factory):
    dest = tmp_path_factory.mktemp("near") / "src"
    return dest, _near_folder(dest)


def _where(manifest: dict, out: Path) -> dict[str, str]:
    return {r["image/filename"][0].decode(): split for split in manifest["splits"]
            for r in _records(out, manifest, split)}


def test_near_duplicates_group_keeps_groups_in_one_split_and_doctor_agrees(near_src, tmp_path):
    from datakit import doctor
    from datakit.datasets import utk

    src, made = near_src
    straddled = False
    for seed in range(6):
        keep = utk.build(src, tmp_path / f"keep{seed}", races=(0, 1), per_class=20, size=64, val_fraction=0.5,
                         seed=seed, workers=1, near_duplicates="keep", allow_short=True)
        where = _where(keep, tmp_path / f"keep{seed}")
        if any(a in where and b in where and where[a] != where[b] for a, b in made["pairs"]):
            straddled = True
            near = {c["check"]: c for c in doctor.doctor(tmp_path / f"keep{seed}")["checks"]}["near-duplicates"]
            assert near["status"] == "warning"  # the check this option exists for: it fires without grouping
            break
    assert straddled, "no seed put a near-identical pair in two splits: the fixture does not test grouping"
    out = tmp_path / "group"
    # every candidate is taken (20 >= the largest class), so every planted pair is compared
    m = utk.build(src, out, races=(0, 1), per_class=20, size=64, val_fraction=0.5, seed=seed, workers=2,
                  allow_short=True)
    where = _where(m, out)
    groups = {tuple(g["files"]) for g in m["near_duplicates"]["groups"]}
    assert {tuple(sorted(p)) for p in made["pairs"]} <= groups
    for a, b in made["pairs"]:
        assert where.get(a) == where.get(b) or a not in where or b not in where
    a, b = made["conflict"]
    assert a not in where and b not in where
    assert {s["file"] for s in m["skipped"] if "near-duplicate" in s["reason"]} == {a, b}
    result = doctor.doctor(out)
    assert {c["check"]: c["status"] for c in result["checks"]}["near-duplicates"] == "ok"
    assert result["errors"] == 0


def _outputs_agree(out: Path, m: dict) -> dict[str, str]:
    """Every format holds the same pictures in the same split, with the same pixels: {name: split}."""
    import h5py

    where = {}
    for split in m["splits"]:
        records = _records(out, m, split)
        with h5py.File(out / m["outputs"]["hdf5"][split][0]) as f:
            names = [n.decode() for n in f["filenames"][:]]
            images = f["images"][:]
        assert [r["image/filename"][0].decode() for r in records] == names
        folders = {p.name: p for p in (out / "folders" / split).glob("*/*")}
        assert sorted(folders) == sorted(names)
        for name, pixels, r in zip(names, images, records):
            assert r["image/encoded"][0] == folders[name].read_bytes()
            decoded = cv2.cvtColor(cv2.imread(str(folders[name])), cv2.COLOR_BGR2RGB)
            assert np.array_equal(decoded, pixels), name
            assert folders[name].parent.name == r["image/class/text"][0].decode()
            where[name] = split
    return where


def test_grouping_moves_only_the_groups_and_keeps_every_count(near_src, tmp_path):
    """A group that the plan put in two splits is gathered by swapping places with ungrouped
    pictures of its class: every class keeps its count in every split (less the conflicting copies,
    whose places stay empty: per_class 20 takes every candidate, so there is no spare), few pictures
    move, and all three formats agree after the moves."""
    from datakit.datasets import utk

    src, made = near_src
    kw = dict(races=(0, 1), per_class=20, size=64, val_fraction=0.5, allow_short=True)
    for seed in range(8):
        keep = utk.build(src, tmp_path / f"keep{seed}", seed=seed, workers=1, near_duplicates="keep", **kw)
        before = {r["image/filename"][0].decode(): (split, r["image/class/text"][0].decode())
                  for split in keep["splits"] for r in _records(tmp_path / f"keep{seed}", keep, split)}
        if sum(before[a][0] != before[b][0] for a, b in made["pairs"]) >= 2:
            break
    else:
        pytest.fail("no seed put two planted pairs in two splits: the fixture does not test the moves")
    m = utk.build(src, tmp_path / "group", seed=seed, workers=2, **kw)
    after = _outputs_agree(tmp_path / "group", m)
    for split in m["splits"]:
        for c in m["classes"]:
            lost = sum(1 for n in made["conflict"] if before[n] == (split, c))
            assert m["counts"][split][c] == keep["counts"][split][c] - lost, (split, c)
    for a, b in made["pairs"]:
        assert after[a] == after[b]
    groups = m["near_duplicates"]["groups"]
    assert all(after[n] == g["split"] for g in groups for n in g["files"])
    moved = [n for n in after if before[n][0] != after[n]]
    straddling = sum(before[a][0] != before[b][0] for a, b in made["pairs"])
    assert len(moved) == 2 * straddling  # one member and one ungrouped picture per straddling pair
    again = utk.build(src, tmp_path / "group1", seed=seed, workers=1, **kw)
    assert again["files"] == m["files"]  # the moves do not depend on the workers


def test_a_group_too_big_for_any_split_keeps_the_split_holding_most_of_it(tmp_path):
    """Four near-identical pictures fill a class's train share (3) and its val share (1): no split
    has an ungrouped picture of the class to swap with, so the member outside the largest share is
    set aside (with a reason) and a spare takes its place."""
    from datakit import doctor
    from datakit.datasets import utk

    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    src.mkdir()
    base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
    copies = [f"{30 + q}_0_0_2017{q:013d}.jpg.chip.jpg" for q in range(4)]
    for q, name in enumerate(copies):
        (src / name).write_bytes(synthetic.jpeg_bytes(base, quality=95 - 10 * q))
    for i in range(5):  # distinct pictures: four white women, and one spare for the white men
        pic = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        name = f"{20 + i}_{int(i < 4)}_0_2018{i:013d}.jpg.chip.jpg"
        (src / name).write_bytes(synthetic.jpeg_bytes(pic, quality=90))
    for seed in range(20):
        keep = utk.build(src, tmp_path / f"k{seed}", races=(0,), per_class=4, size=64, val_fraction=0.25,
                         seed=seed, workers=1, near_duplicates="keep")
        men = {r["image/filename"][0].decode() for split in keep["splits"]
               for r in _records(tmp_path / f"k{seed}", keep, split) if r["image/class/text"][0].decode() == "white_male"}
        if men == set(copies):
            break
    else:
        pytest.fail("no seed took all four copies for the white men")
    m = utk.build(src, tmp_path / "g", races=(0,), per_class=4, size=64, val_fraction=0.25, seed=seed, workers=1)
    where = _outputs_agree(tmp_path / "g", m)
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    aside = [n for n in copies if "no room" in reasons.get(n, "")]
    assert len(aside) == 1 and aside[0] not in where
    assert sorted(where[n] for n in copies if n in where) == ["train"] * 3
    assert m["counts"] == keep["counts"]
    assert {c["check"]: c["status"] for c in doctor.doctor(tmp_path / "g")["checks"]}["near-duplicates"] == "ok"


def test_the_builder_summary_agrees_with_doctors():
    """The summary computed from a build's decoded pixels (a faster reduction than doctor's) gives
    doctor's hash within a bit or two and its thumbnail within the builder's margin."""
    from datakit import neardup
    from datakit.builder import neargroups

    rng = np.random.default_rng(3)
    pictures = [cv2.resize(rng.integers(0, 256, (k, k, 3), dtype=np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
                for k, side in zip(rng.integers(4, 24, 200), rng.choice([48, 64, 100, 200, 333], 200))]
    ours = neargroups.summarize(pictures)
    hashes, thumbs = neardup.summaries(np.stack([neardup.small(p) for p in pictures]))
    bits = np.bitwise_count(np.array([h for h, _ in ours], np.uint64) ^ hashes)
    a = neardup.standardized([np.frombuffer(t, np.uint8) for _, t in ours])
    b = neardup.standardized(list(thumbs))
    assert np.percentile(bits, 99) <= 3 and bits.mean() <= 1.0, bits
    assert np.abs(a - b).mean(axis=1).max() <= neargroups.THUMB_MARGIN


def test_the_builder_batch_is_the_per_picture_reduction():
    """The area step that runs once per chunk, on the pictures stacked into one tall array, gives
    each picture exactly what its own bilinear-then-area reduction gives (2x2 blocks never cross
    two pictures), pictures no larger than the bilinear step's side included."""
    from datakit import neardup
    from datakit.builder import neargroups

    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in (200, 64, 200, 31, 333, 65)]
    batch = neargroups.Summaries(len(pictures))
    for p in pictures:
        batch.add(p)
    for got, p in zip(batch.smalls(), pictures):
        mid = cv2.resize(p, (64, 64), interpolation=cv2.INTER_LINEAR) if min(p.shape[:2]) > neargroups.REDUCED else p
        assert np.array_equal(got, neardup.small(mid))


def test_near_duplicates_drop_keeps_one_picture_per_group(near_src, tmp_path):
    from datakit.datasets import utk

    src, made = near_src
    m = utk.build(src, tmp_path / "drop", races=(0, 1), per_class=20, size=64, workers=1, near_duplicates="drop",
                  allow_short=True)
    where = _where(m, tmp_path / "drop")
    for a, b in made["pairs"]:
        assert (a in where) != (b in where)
    assert m["near_duplicates"]["dropped"] == sorted(max(p) for p in made["pairs"])


def test_a_dropped_pick_is_replaced_by_a_spare_that_is_checked_too(near_src, tmp_path):
    """Classes of 15 out of 18-20 candidates: a pick dropped as a near-duplicate is replaced by the
    class's next spare, so classes stay full and no group crosses the split; one more is too many."""
    from datakit import doctor
    from datakit.datasets import utk

    src, made = near_src
    for mode in ("drop", "group"):
        m = utk.build(src, tmp_path / mode, races=(0, 1), per_class=15, size=64, val_fraction=0.5, seed=1,
                      workers=1, near_duplicates=mode)
        assert all(sum(m["counts"][s][c] for s in m["splits"]) == 15 for c in m["classes"])
        where = _where(m, tmp_path / mode)
        for a, b in made["pairs"]:
            assert not (a in where and b in where) if mode == "drop" else where.get(a, where.get(b)) == where.get(b, where.get(a))
        assert {c["check"]: c["status"] for c in doctor.doctor(tmp_path / mode)["checks"]}["near-duplicates"] == "ok"
    with pytest.raises(DatakitError, match="once near-identical copies are set aside"):  # white_male: 18 - 3
        utk.build(src, tmp_path / "short", races=(0, 1), per_class=16, size=64, workers=1, near_duplicates="drop")
    assert not (tmp_path / "short" / "manifest.json").exists()


def test_generic_build_is_byte_identical_whatever_the_workers(class_dirs, tmp_path):
    kw = dict(labels="folders", per_class=6, size=48, seed=2, allow_short=True)
    a = folder.build(class_dirs, tmp_path / "a", workers=1, **kw)
    b = folder.build(class_dirs, tmp_path / "b", workers=3, **kw)
    assert a["files"] == b["files"]
    run = subprocess.run(DATAKIT + ["build", str(class_dirs), str(tmp_path / "c"), "--per-class", "6", "--size", "48",
                                    "--seed", "2", "--allow-short", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"] == a["counts"]
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["files"] == a["files"]


def test_a_build_leaves_the_callers_garbage_collector_as_it_found_it(class_dirs, tmp_path):
    """The build keeps its long-lived objects out of full collections (gc.freeze) only while it
    runs, and leaves a caller's own frozen objects frozen."""
    import gc

    kw = dict(labels="folders", per_class=4, size=32, seed=2, allow_short=True, workers=2)
    assert gc.get_freeze_count() == 0
    folder.build(class_dirs, tmp_path / "a", **kw)
    assert gc.get_freeze_count() == 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        folder.build(class_dirs, tmp_path / "b", **kw)
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen, and nothing of the build added
    finally:
        gc.unfreeze()


def test_a_later_round_finds_the_groups_a_fresh_comparison_finds():
    """Rounds after the first compare only the new pictures (spares) with the rest: the groups they
    give equal those of comparing every picture placed at that point, whatever left or came."""
    from types import SimpleNamespace

    from datakit.builder import neargroups

    rng = np.random.default_rng(5)
    bases = [cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
             for _ in range(60)]
    pictures = bases + [np.clip(b.astype(int) + 6, 0, 255).astype(np.uint8) for b in bases[:25]]
    summ = neargroups.summarize(pictures)
    recs = [SimpleNamespace(name=f"p{i:03d}", labels={}) for i in range(len(pictures))]
    classes = SimpleNamespace(names=["a"], by=())
    order = rng.permutation(len(pictures)).tolist()
    placed = order[:50]
    incremental = neargroups.Regroup("group", classes)
    came = placed
    for step in range(4):
        at = {recs[i].name: (0, recs[i], "train", k) for k, i in enumerate(placed)}.get
        incremental.round([(recs[i].name, summ[i]) for i in came], at)
        fresh = neargroups.Regroup("group", classes)
        fresh.round([(recs[i].name, summ[i]) for i in placed], at)
        assert incremental._last == fresh._last and incremental.grouped == fresh.grouped, step
        assert step or incremental._last  # the first set already holds groups
        came = order[50 + 8 * step:58 + 8 * step]
        placed = placed[7:] + came  # some leave, spares come
    assert incremental.entry["compared"] == len(set(order[:50 + 8 * 3]))


def test_near_pairs_within_equals_brute_force():
    from datakit import neardup

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2 ** 63, 60, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (60, 10)).astype(np.uint64)
    near = base.copy()
    for k in range(1, 11):  # copies with k random bits flipped: some within the bound, some not
        near = np.concatenate([near, base ^ np.bitwise_or.reduce(flips[:, :k], axis=1)])
    crowd = (base[:20] & ~np.uint64(0xFFFF)) | rng.integers(0, 4, 20, dtype=np.uint64)  # faces crowd a few band keys
    near = np.concatenate([near, crowd, crowd[:5]])  # and exact copies
    for max_bits in (0, 3, 6, 7, 9):
        got = {tuple(p) for p in neardup.near_pairs_within(near, max_bits).tolist()}
        d = np.bitwise_count(near[:, None] ^ near[None, :])
        ii, jj = np.nonzero(np.triu(d <= max_bits, 1))
        assert got == set(zip(ii.tolist(), jj.tolist())) and got
        # between two sets (a build's later pictures against the earlier ones): every pair, both orders
        side = np.random.default_rng(max_bits).random(len(near)) < 0.3  # copies of one picture fall on both sides
        a, b = near[side], near[~side]
        across = np.bitwise_count(a[:, None] ^ b[None, :]) <= max_bits
        want = set(zip(*(x.tolist() for x in np.nonzero(across))))
        assert {tuple(p) for p in neardup.near_pairs_between(a, b, max_bits).tolist()} == want and want
        assert {tuple(p) for p in neardup.near_pairs_between(b, a, max_bits)[:, ::-1].tolist()} == want


def test_close_pairs_in_steps_equal_one_search():
    """A build searches what it has placed so far early, then the rest against it: the same pairs."""
    from datakit.builder import neargroups

    rng = np.random.default_rng(5)
    base = rng.integers(0, 2 ** 63, 40, dtype=np.uint64)
    hashes = np.concatenate([base, base ^ (np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)), base[:6]])
    summ = [(int(h), bytes(192)) for h in rng.permutation(hashes)]  # equal thumbnails: the hashes decide
    whole = set(neargroups.close_pairs(summ))
    assert len(whole) > 40
    for seen in (1, 17, 50, len(summ) - 1):
        assert set(neargroups.close_pairs(summ[:seen])) | set(neargroups.close_pairs(summ, seen)) == whole
    assert neargroups.close_pairs(summ, len(summ)) == [] and neargroups.close_pairs(summ[:1]) == []
