"""Property-based fuzzing (hypothesis): the UTK name parser over random text, and the folder scan of
every label source over random trees of names, bytes and entry kinds. Only NameError_ /
DatakitError may escape, and every entry is accounted for exactly once."""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SerialExecutor
from datakit.builder.scan import scan, shown
from datakit.datasets.folder.sources import ClassFolders, CsvLabels, NamePattern
from datakit.datasets.utk.names import MAX_AGE, NameError_, parse_name
from datakit.datasets.utk.source import UTKNames
from datakit.errors import DatakitError

# 40 examples a test keeps the suite fast; DATAKIT_FUZZ_EXAMPLES=2000 for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("DATAKIT_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


_Serial = SerialExecutor


# -- the name parser -----------------------------------------------------------------------------

_PIECES = st.sampled_from(["_", " ", ".", "0", "1", "4", "9", "30", "120", "121", "٣", "۳", "३", "３", "¹", "\t",
                           "\n", "jpg", ".jpg.chip.jpg", "x", "-", "+", "\u00a0", "\udcff"])
_NAMES = st.one_of(st.text(max_size=40), st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=14).map("".join))
_ASCII_FIELDS = re.compile(r"\s*([0-9]+)\s*_\s*([0-9]+)\s*_\s*([0-9]+)\s*(?:[_.]|$)")


@FUZZ
@given(_NAMES)
def test_parse_name_raises_only_name_error_and_accepts_only_ascii_fields_in_range(name):
    try:
        lab = parse_name(name)
    except NameError_:
        return
    m = _ASCII_FIELDS.match(name)
    assert m is not None, name
    assert (lab.age, lab.gender, lab.race) == tuple(int(g) for g in m.groups())
    assert 0 <= lab.age <= MAX_AGE and lab.gender in (0, 1) and 0 <= lab.race <= 4


# -- the folder scan -----------------------------------------------------------------------------

# Name bytes: UTK-like prefixes, arbitrary bytes (not UTF-8 too), picture suffixes. No backslash:
# shown() writes a byte that is not UTF-8 as \xNN, which a name holding a backslash could imitate.
_PREFIX = st.sampled_from([b"", b"30_1_0_", b"5_0_3_", b"\xd9\xa3\xd9\xa0_1_0_", b".", b"cls", b"30_1_0"])
_MIDDLE = st.binary(max_size=12).map(lambda b: b.replace(b"/", b"").replace(b"\0", b"").replace(b"\\", b""))
_SUFFIX = st.sampled_from([b".jpg", b".png", b".JPG", b".txt", b"", b".jpg\n"])
_NAME = st.tuples(_PREFIX, _MIDDLE, _SUFFIX).map(b"".join).filter(lambda n: n not in (b"", b".", b".."))
_KIND = st.sampled_from(["file"] * 6 + ["empty", "fifo", "link-in", "link-out", "dangling", "loop", "dir"])
_DATA = st.sampled_from([b"A", b"B", b"same", b"\xff\xd8\xff"]) | st.binary(min_size=1, max_size=30)
_ENTRY = st.tuples(st.lists(_NAME, min_size=1, max_size=3), _KIND, _DATA)
_TREE = st.lists(_ENTRY, max_size=14)


def _make(root: bytes, tree) -> None:
    """Whatever of `tree` the file system takes (a name used as both file and folder: the first wins)."""
    made = []
    for parts, kind, data in tree:
        path = os.path.join(root, *parts)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if kind == "file":
                with open(path, "xb") as f:
                    f.write(data)
            elif kind == "empty":
                open(path, "xb").close()
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "link-in":
                os.symlink(made[-1] if made else b"nowhere", path)
            elif kind == "link-out":
                os.symlink(b"/dev/zero", path)
            elif kind == "dangling":
                os.symlink(b"no-such-file.jpg", path)
            elif kind == "loop":
                os.symlink(os.path.basename(path), path)
            else:
                os.mkdir(path)
        except OSError:
            continue
        made.append(path)


def _leaves(src: bytes, folders: set | None = None) -> set[str]:
    """Every entry that is not a folder, and every empty folder, as the manifest names it (every
    folder into `folders`)."""
    out = set()
    for dirpath, dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        if folders is not None:
            folders.add(shown(os.fsdecode(rel)))
        for n in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            out.add(shown(os.fsdecode(os.path.normpath(os.path.join(rel, n)))))
        if not files and not dirs and dirpath != src:
            out.add(shown(os.fsdecode(rel)))
    return out


# Ignored folders whose contents are not listed one by one: they account for everything inside.
_UNLISTED = ("subfolder", "folder name is not a valid class name", "cannot list")


def _check_accounted(src: bytes, found, csv_rows: bool = False):
    folders: set[str] = set()
    leaves = _leaves(src, folders)
    read = [r.name for r in found.records] + [d for g in found.duplicates["identical"] for d in g["dropped"]]
    assert len(read) == len(set(read))
    seen = {}
    for name in read:
        seen[name] = seen.get(name, 0) + 1
    for e in found.skipped + found.ignored:
        seen[e["file"]] = seen.get(e["file"], 0) + 1
    for leaf in leaves:
        parts = leaf.split("/")
        cover = seen.get(leaf, 0) + sum(
            1 for e in found.ignored for i in range(1, len(parts))
            if e["file"] == "/".join(parts[:i]) and e["reason"].startswith(_UNLISTED))
        assert cover == 1, (leaf, cover, found)
    for name in read:
        assert name in leaves
    if not csv_rows:  # a CSV's rows may name files that do not exist; no other report does
        for e in found.skipped + found.ignored:
            assert e["file"] in leaves | folders, e


def _scan(src: str, source, class_by):
    try:
        return scan(src, source, class_by, executor=_Serial())
    except DatakitError:
        return None


@FUZZ
@given(_TREE)
def test_the_flat_sources_account_for_every_entry(tree):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.fsencode(tmp)
        _make(src, tree)
        for source, class_by in [(UTKNames(), ("race", "gender")),
                                 (NamePattern("{age:0..120}_{gender:0..1}_{race:0..4}_*"), ("race",)),
                                 (NamePattern("{name}.jpg"), ("name",))]:
            found = _scan(tmp, source, class_by)
            if found is not None:
                _check_accounted(src, found)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([b"cat", b"dog", b"\xffx", b"a\nb", b".hid"]), _ENTRY), max_size=14))
def test_class_folders_account_for_every_entry(tree):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.fsencode(tmp)
        _make(src, [([cls, *parts], kind, data) for cls, (parts, kind, data) in tree])
        found = _scan(tmp, ClassFolders(), ("class",))
        if found is not None:
            _check_accounted(src, found)


@FUZZ
@given(_TREE, st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["x", "y"])), max_size=10),
       # rows naming files that are not there; a lone surrogate (category Cs) has no UTF-8 form to write
       st.lists(st.text(st.characters(blacklist_characters="\\", blacklist_categories=("Cs",)), max_size=8),
                max_size=3))
def test_a_csv_source_accounts_for_every_entry(tree, picks, extra):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        _make(os.fsencode(src), tree)
        existing = sorted(n for n in _leaves(os.fsencode(src)) if "\\" not in n)  # a CSV holds UTF-8 names
        rows = [(existing[i % len(existing)], label) for i, label in picks if existing]
        rows += [(name, "x") for name in extra]
        path = Path(tmp, "labels.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "c"])
            writer.writerows(rows)
        try:
            source = CsvLabels(path, "file", ["c"])
        except DatakitError:
            return
        found = _scan(src, source, ("c",))
        if found is not None:
            _check_accounted(os.fsencode(src), found, csv_rows=True)
