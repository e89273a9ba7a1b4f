"""Hostile directory entries and file names, in every label source: each ends as a candidate, or
skipped / ignored with a one-line reason naming it; never a traceback, never a hang."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SerialExecutor
from datakit import tfrecord
from datakit.builder import emit
from datakit.builder.scan import Listing, Record, _digests, read_regular, scan
from datakit.datasets import folder, utk
from datakit.datasets.folder.sources import ClassFolders, CsvLabels, NamePattern
from datakit.datasets.utk.names import NameError_, parse_name
from datakit.datasets.utk.source import UTKNames
from datakit.testing import synthetic

DATAKIT = [sys.executable, "-m", "datakit_cli.main"]
UTK_PATTERN = "{age:0..120}_{gender:0..1}_{race:0..4}_*"


_Serial = SerialExecutor


@contextlib.contextmanager
def _no_hang(seconds: int = 20):
    def fail(*_):
        raise AssertionError(f"blocked for {seconds} s (a FIFO opened for reading?)")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _picture(seed: int, size: int = 32) -> bytes:
    return synthetic.jpeg_bytes(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _hostile(d: Path, outside: Path) -> dict[str, str]:
    """Every kind of hostile entry in folder `d` (inside SRC); `outside` is a picture outside SRC.
    Returns {entry name: words its reason must hold}."""
    (d / "real.jpg").write_bytes(_picture(99))
    os.symlink("real.jpg", d / "link_in.jpg")  # followed: a candidate (the same bytes as real.jpg)
    os.symlink(outside, d / "link_out.jpg")
    os.symlink("/dev/zero", d / "link_zero.jpg")
    os.symlink("nothing-here.jpg", d / "dangling.jpg")
    os.symlink("loop_b.jpg", d / "loop_a.jpg")
    os.symlink("loop_a.jpg", d / "loop_b.jpg")
    os.mkfifo(d / "fifo.jpg")
    os.symlink("fifo.jpg", d / "link_fifo.jpg")
    (d / "folder.jpg").mkdir()
    os.symlink("folder.jpg", d / "link_folder.jpg")
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(d)  # a socket path is limited to ~100 bytes: bind it relative
    try:
        sock.bind("sock.jpg")
    finally:
        os.chdir(cwd)
        sock.close()
    want = {"link_out.jpg": "outside SRC", "link_zero.jpg": "outside SRC", "dangling.jpg": "dangling",
            "loop_a.jpg": "loop", "loop_b.jpg": "loop", "fifo.jpg": "a FIFO: never opened",
            "link_fifo.jpg": "symbolic link to a FIFO", "link_folder.jpg": "symbolic link to a folder",
            "sock.jpg": "a socket: never opened"}
    try:
        os.mknod(d / "zero.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: a read never ends
        os.symlink("zero.jpg", d / "link_dev.jpg")
        want |= {"zero.jpg": "a character device: never opened", "link_dev.jpg": "symbolic link to a character device"}
    except PermissionError:
        pass  # not root: no device node (the link to /dev/zero above still covers a device)
    return want


def _reasons(entries: list[dict]) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in entries}


def _read(found) -> set[str]:
    """Candidates that were read: kept, dropped as an identical copy, or skipped as conflicting copies."""
    return ({r.name for r in found.records} | {d for g in found.duplicates["identical"] for d in g["dropped"]}
            | {s["file"] for s in found.skipped if s["reason"] == "duplicate with conflicting labels"})


def _check_hostile(found, prefix: str, want: dict[str, str], folder_reason: str | None):
    ignored = _reasons(found.ignored)
    for name, words in want.items():
        assert words in ignored.get(prefix + name, ""), (name, ignored)
    if folder_reason:
        assert folder_reason in ignored[prefix + "folder.jpg"]
    assert {prefix + "real.jpg", prefix + "link_in.jpg"} <= _read(found)  # a link to a picture inside SRC is followed
    assert all("\n" not in e["reason"] for e in found.ignored + found.skipped)


def test_every_hostile_entry_kind_in_the_utk_flat_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_picture(1))
    want = _hostile(src, outside)
    for path in list(src.iterdir()):  # UTK names carry the labels: rename every entry
        os.rename(path, src / f"30_1_0_{path.name}")
    for path in list(src.iterdir()):
        if path.is_symlink() and not os.readlink(path).startswith("/"):
            target = os.readlink(path)
            path.unlink()
            os.symlink(f"30_1_0_{target}", path)
    with _no_hang():
        found = scan(src, UTKNames(), ("race", "gender"), executor=_Serial())
    _check_hostile(found, "30_1_0_", want, "subfolder")


@pytest.mark.parametrize("kind", ["folders", "pattern"])
def test_every_hostile_entry_kind_in_class_folders_and_pattern(tmp_path, kind):
    src = tmp_path / "src"
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_picture(1))
    if kind == "folders":
        (src / "cls" / "deep").mkdir(parents=True)
        (src / "cls" / "plain.jpg").write_bytes(_picture(2))
        want = _hostile(src / "cls" / "deep", outside)  # the nested walk
        os.symlink("cls", src / "link_class")
        source, prefix, folder_reason = ClassFolders(), "cls/deep/", "empty folder"
    else:
        src.mkdir()
        want = _hostile(src, outside)
        source, prefix, folder_reason = NamePattern("{name}.jpg"), "", "subfolder"
    with _no_hang():
        found = scan(src, source, tuple(f.name for f in source.fields), executor=_Serial())
    _check_hostile(found, prefix, want, folder_reason)
    if kind == "folders":
        assert "symbolic link to a folder" in _reasons(found.ignored)["link_class"]


def test_every_hostile_entry_kind_named_by_a_csv(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_picture(1))
    want = _hostile(src / "d", outside)
    names = ["real.jpg", "link_in.jpg", *want, "folder.jpg"]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,c\n" + "".join(f"d/{n},{i % 2}\n" for i, n in enumerate(names)))
    with _no_hang():
        found = scan(src, CsvLabels(csv, "file", ["c"]), ("c",), executor=_Serial())
    skipped = _reasons(found.skipped)
    for name, words in want.items():  # named in the CSV: skipped, with the entry's own reason
        assert skipped[f"d/{name}"].startswith("named in labels.csv but ") and words in skipped[f"d/{name}"]
    assert "named in labels.csv but" in skipped["d/folder.jpg"]
    assert {"d/real.jpg", "d/link_in.jpg"} <= _read(found)
    # not named in the CSV: ignored with the same reasons as in the other sources
    csv.write_text("file,c\nd/real.jpg,0\n")
    with _no_hang():
        found = scan(src, CsvLabels(csv, "file", ["c"]), ("c",), executor=_Serial())
    ignored = _reasons(found.ignored)
    for name, words in want.items():
        assert words in ignored[f"d/{name}"], (name, ignored)
    assert ignored["d/link_in.jpg"] == "not named in labels.csv"


def test_a_fifo_that_appears_after_the_listing_is_never_blocked_on(tmp_path):
    os.mkfifo(tmp_path / "late.jpg")

    class Lister:  # names the FIFO, as if it had been a picture at listing time
        fields, declared = (), {}

        def list(self, src):
            return Listing(named=[("late.jpg", {"c": 0}, "late.jpg")])

    with _no_hang():
        found = scan(tmp_path, Lister(), ("c",), executor=_Serial())
        assert found.skipped == [{"file": "late.jpg", "reason": "cannot read: a FIFO, not a regular file"}]
        assert _digests(str(tmp_path), ["late.jpg"])[0][0] == -1
        with pytest.raises(OSError, match="a FIFO"):
            read_regular(str(tmp_path / "late.jpg"))
        _, _, err = emit.load(tmp_path, Record("late.jpg", {}, 1, ""), 32)  # the decode pass's read too
    assert err == "cannot read: a FIFO, not a regular file"


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"),
                                   OSError(errno.EIO, "Input/output error")])
def test_an_unreadable_picture_is_skipped_with_cannot_read(tmp_path, monkeypatch, error):
    # Tests run as root, who reads any file: the failing read is simulated in the reading path.
    for i in range(3):
        (tmp_path / f"30_1_0_{i}.jpg").write_bytes(_picture(i))
    real_open = os.open

    def failing_open(path, flags, *args, **kw):
        if str(path).endswith("30_1_0_1.jpg"):
            raise type(error)(error.errno, error.strerror, str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", failing_open)
    found = scan(tmp_path, UTKNames(), ("race", "gender"), executor=_Serial())
    assert [r.name for r in found.records] == ["30_1_0_0.jpg", "30_1_0_2.jpg"]
    assert found.skipped == [{"file": "30_1_0_1.jpg", "reason": f"cannot read: {error.strerror}"}]
    _, _, err = emit.load(tmp_path, Record("30_1_0_1.jpg", {}, 1, ""), 32)
    assert err == f"cannot read: {error.strerror}"


# -- names ---------------------------------------------------------------------------------------

def _write(dest: Path, name: bytes, data: bytes) -> None:
    with open(os.path.join(os.fsencode(dest), name), "wb") as f:
        f.write(data)


BAD_NAMES = {  # name bytes -> (manifest's "file", reason)
    b"30_1_0_\xff\xfe.jpg": ("30_1_0_\\xff\\xfe.jpg", "file name is not valid UTF-8"),
    b"30_1_0_a\nb.jpg": ("30_1_0_a\nb.jpg", "file name holds a control character (U+000A)"),
    b"30_1_0_a\tb.jpg": ("30_1_0_a\tb.jpg", "file name holds a control character (U+0009)"),
}


@pytest.mark.parametrize("kind", ["utk", "pattern", "folders"])
def test_non_utf8_and_control_character_names_are_skipped_in_every_source(tmp_path, kind):
    src = tmp_path / "src"
    where = src / "cls" if kind == "folders" else src
    where.mkdir(parents=True)
    for i, name in enumerate(BAD_NAMES):
        _write(where, name, _picture(i))
    _write(where, b"30_1_0_ok.jpg", _picture(9))
    source = {"utk": UTKNames(), "pattern": NamePattern(UTK_PATTERN), "folders": ClassFolders()}[kind]
    found = scan(src, source, (source.fields[0].name,), executor=_Serial())
    prefix = "cls/" if kind == "folders" else ""
    assert [r.name for r in found.records] == [prefix + "30_1_0_ok.jpg"]
    assert _reasons(found.skipped) == {prefix + f: why for f, why in BAD_NAMES.values()}
    json.dumps(found.skipped, ensure_ascii=False).encode("utf-8")  # the manifest's form is plain UTF-8


def test_a_csv_naming_a_control_character_path_skips_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src, b"a\tb.jpg", _picture(1))
    _write(src, b"ok.jpg", _picture(2))
    _write(src, b"\xff.jpg", _picture(3))
    csv = tmp_path / "l.csv"
    csv.write_text('file,c\n"a\tb.jpg",0\nok.jpg,1\n')
    found = scan(src, CsvLabels(csv, "file", ["c"]), ("c",), executor=_Serial())
    assert [r.name for r in found.records] == ["ok.jpg"]
    assert _reasons(found.skipped) == {"a\tb.jpg": "file name holds a control character (U+0009)"}
    assert _reasons(found.ignored) == {"\\xff.jpg": "not named in l.csv"}


def test_utk_label_fields_are_ascii_digits_only():
    assert int("٣٠") == int("۳۰") == int("३०") == int("３０") == 30  # what int() alone would accept
    for name in ["٣٠_1_0_x.jpg", "30_١_0_x.jpg", "30_1_٠_x.jpg", "۳۰_1_0_x.jpg", "३०_1_0_x.jpg", "３０_1_0_x.jpg"]:
        with pytest.raises(NameError_, match="only ASCII digits 0-9 count"):
            parse_name(name)
    with pytest.raises(NameError_, match="outside 0-120"):
        parse_name("9" * 5000 + "_1_0_x.jpg")  # before int(), which refuses 4,300+ digits
    assert parse_name("030_1_0_x.jpg").age == 30


def test_arabic_indic_digits_are_skipped_by_utk_and_the_pattern(tmp_path):
    (tmp_path / "٣٠_1_0_x.jpg").write_bytes(_picture(1))
    (tmp_path / "30_1_0_x.jpg").write_bytes(_picture(2))
    for source, words in [(UTKNames(), "only ASCII digits"), (NamePattern(UTK_PATTERN), "does not match")]:
        found = scan(tmp_path, source, ("race", "gender"), executor=_Serial())
        assert [r.name for r in found.records] == ["30_1_0_x.jpg"]
        assert words in _reasons(found.skipped)["٣٠_1_0_x.jpg"]


def test_class_folder_names_longer_than_255_bytes_or_colliding_once_flattened_are_skipped(tmp_path):
    cls = tmp_path / "cls"
    (cls / ("d" * 200)).mkdir(parents=True)
    (cls / ("d" * 200) / ("e" * 60 + ".jpg")).write_bytes(_picture(1))  # 200 + 2 + 64 bytes flattened
    (cls / "a").mkdir()
    (cls / "a" / "b.jpg").write_bytes(_picture(2))
    (cls / "a__b.jpg").write_bytes(_picture(3))  # the same class-folder name as a/b.jpg
    found = scan(tmp_path, ClassFolders(), ("class",), executor=_Serial())
    assert [(r.name, r.out_name) for r in found.records] == [("cls/a/b.jpg", "a__b.jpg")]
    skipped = _reasons(found.skipped)
    assert "266 bytes long once its path is flattened with __ (over 255)" in skipped[f"cls/{'d' * 200}/{'e' * 60}.jpg"]
    assert skipped["cls/a__b.jpg"] == "its class-folder file name 'a__b.jpg' is also 'cls/a/b.jpg''s"


def _utk_src(dest: Path, extra: dict[bytes, bytes]) -> None:
    rng = np.random.default_rng(0)
    for race in range(4):
        for gender in range(2):
            for i in range(2):
                _write(dest, f"{20 + i}_{gender}_{race}_{race}{gender}{i}.jpg".encode(),
                       synthetic.jpeg_bytes(synthetic.draw_face(gender, race, rng, size=48)))
    for name, data in extra.items():
        _write(dest, name, data)


def test_long_and_non_ascii_names_are_kept_and_read_back_the_same_in_every_format(tmp_path):
    from datakit import doctor

    src = tmp_path / "src"
    src.mkdir()
    long = ("30_1_0_" + "x" * (255 - 7 - 4) + ".jpg").encode()
    accented = "31_1_0_café_日本.jpg".encode()
    rng = np.random.default_rng(5)
    faces = [synthetic.jpeg_bytes(synthetic.draw_face(1, 0, rng, size=48)) for _ in range(2)]
    _utk_src(src, {long: faces[0], accented: faces[1], **{k: _picture(i) for i, k in enumerate(BAD_NAMES)}})
    out = tmp_path / "out"
    m = utk.build(src, out, per_class=4, size=32, val_fraction=0.0, seed=0, workers=1, allow_short=True,
                  near_duplicates="keep")
    assert {s["file"]: s["reason"] for s in m["skipped"]} == {f: why for f, why in BAD_NAMES.values()}
    tf_names = [tfrecord.parse_example(r)["image/filename"][0] for rel in m["outputs"]["tfrecord"]["train"]
                for r in tfrecord.read_records(out / rel)]
    with h5py.File(out / m["outputs"]["hdf5"]["train"][0]) as f:
        h5_names = [x.decode() for x in f["filenames"][:]]
    folder_names = [p.name for p in (out / "folders" / "train" / "white_female").iterdir()]
    for name in (long.decode(), accented.decode()):
        assert name.encode() in tf_names and name in h5_names and name in folder_names
        assert f"folders/train/white_female/{name}" in m["files"]
    result = doctor.doctor(out)
    assert result["errors"] == 0, [c for c in result["checks"] if c["status"] != "ok"]


def test_cli_build_over_hostile_entries_exits_0_and_the_manifest_names_each(tmp_path):
    src = tmp_path / "src"
    (src / "cls").mkdir(parents=True)
    (src / "other").mkdir()
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_picture(1))
    want = _hostile(src / "cls", outside)
    for i in range(3):
        (src / "cls" / f"p{i}.jpg").write_bytes(_picture(10 + i))
        (src / "other" / f"q{i}.jpg").write_bytes(_picture(20 + i))
    for i, name in enumerate(BAD_NAMES):
        _write(src / "other", name, _picture(30 + i))
    out = tmp_path / "out"
    run = subprocess.run(DATAKIT + ["build", str(src), str(out), "--per-class", "3", "--size", "32", "--workers", "2",
                                    "--allow-short", "--val-fraction", "0"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    ignored, skipped = _reasons(m["ignored"]), _reasons(m["skipped"])
    for name, words in want.items():
        assert words in ignored[f"cls/{name}"], (name, ignored)
    assert ignored["cls/folder.jpg"] == "empty folder"
    for f, why in BAD_NAMES.values():
        assert skipped[f"other/{f}"] == why
    doc = subprocess.run(DATAKIT + ["doctor", str(out)], capture_output=True, text=True, timeout=300)
    assert doc.returncode == 0 and "Traceback" not in doc.stderr, doc.stdout + doc.stderr


def test_files_are_hashed_ahead_of_the_listing_and_the_scan_is_unchanged(tmp_path, monkeypatch):
    """scan starts reading SRC's regular picture files (top level and one folder down) before the
    label source lists them; symbolic links and other names wait for the source's checks, and the
    scan's result is the one without the head start."""
    from datakit.builder import scan as scan_mod

    src = tmp_path / "src"
    (src / "cls").mkdir(parents=True)
    for i, name in enumerate(("30_0_0_1.jpg", "31_1_2_2.jpg", "cls/32_0_1_3.png")):
        (src / name).write_bytes(_picture(i))
    (src / "notes.txt").write_text("not a picture")
    (src / "33_1_1_4.jpg").symlink_to(src / "30_0_0_1.jpg")
    (src / "34_0_0_5.jpg").write_bytes(b"")
    submitted = []

    class Recording(_Serial):
        @staticmethod
        def submit(fn, *args):
            submitted.append(list(args[1]))
            return _Serial.submit(fn, *args)

    with_head_start = scan(src, UTKNames(), ("race", "gender"), executor=Recording())
    assert sorted(submitted[0]) == ["30_0_0_1.jpg", "31_1_2_2.jpg", "34_0_0_5.jpg", "cls/32_0_1_3.png"]
    assert ["33_1_1_4.jpg"] in submitted  # the link: read once the source has accepted it
    monkeypatch.setattr(scan_mod, "_hash_ahead", lambda src, executor: scan_mod._Ahead())
    without = scan(src, UTKNames(), ("race", "gender"), executor=_Serial())
    assert with_head_start == without
