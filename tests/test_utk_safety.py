"""build-utk never leaves a half-written output looking complete, and fails loudly on short classes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datakit.testing import synthetic
from datakit.datasets import utk
from datakit.errors import DatakitError


def _tfrecords(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tfrecord").glob("utk-*"))}


def test_reproducible_whatever_the_workers(utk_src, tmp_path):
    src, _ = utk_src
    a = utk.build(src, tmp_path / "a", per_class=6, size=48, seed=5, workers=1)
    b = utk.build(src, tmp_path / "b", per_class=6, size=48, seed=5, workers=3)
    assert _tfrecords(tmp_path / "a") == _tfrecords(tmp_path / "b")
    assert a["files"] == b["files"]
    utk.build(src, tmp_path / "c", per_class=6, size=48, seed=6, workers=2)
    assert _tfrecords(tmp_path / "a") != _tfrecords(tmp_path / "c")


def test_fork_and_fork_server_workers_agree(utk_src, tmp_path):
    """Workers are forked in a process without other threads (or TensorFlow) and come from a fork
    server otherwise; both give the same build."""
    import importlib
    import threading

    build_module = importlib.import_module("datakit.builder.build")  # the module, not utk.build
    src, _ = utk_src
    script = ("import importlib, sys; b = importlib.import_module('datakit.builder.build'); print(b.start_method()); "
              "from datakit.datasets import utk; utk.build(sys.argv[1], sys.argv[2], per_class=6, size=48, seed=5, workers=2)")
    run = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "fork")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["fork"]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert build_module.start_method() == "forkserver"
        assert subprocess.run([sys.executable, "-c", "import sys, importlib; sys.modules['tensorflow'] = sys; "
                               "print(importlib.import_module('datakit.builder.build').start_method())"],
                              capture_output=True, text=True, timeout=60).stdout.split() == ["forkserver"]
        served = utk.build(src, tmp_path / "served", per_class=6, size=48, seed=5, workers=2)
    finally:
        stop.set()
        other.join()
    forked = (tmp_path / "fork" / "manifest.json").read_text()
    assert _tfrecords(tmp_path / "fork") == _tfrecords(tmp_path / "served")
    assert json.loads(forked)["files"] == served["files"]


def test_a_build_that_fails_at_once_leaves_no_thread_traceback(utk_src, tmp_path, monkeypatch):
    """With a fork server, a thread asks for the workers while the build scans; a build that fails at
    once shuts the pool down under it, which must end that thread quietly (no traceback on stderr)."""
    import importlib
    import threading

    build_module = importlib.import_module("datakit.builder.build")
    monkeypatch.setattr(build_module, "start_method", lambda: "forkserver")

    class SlowToAsk(build_module.ProcessPoolExecutor):  # the asking thread loses the race every time
        def submit(self, fn, *args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                time.sleep(0.5)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(build_module, "ProcessPoolExecutor", SlowToAsk)
    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    before = set(threading.enumerate())
    src, _ = utk_src
    with pytest.raises(DatakitError, match="fewer than per_class 999"):
        utk.build(src, tmp_path / "o", per_class=999, size=32, workers=2)
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=60)
    assert errors == []


def test_short_class_fails_before_writing(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    with pytest.raises(DatakitError) as err:
        utk.build(src, out, per_class=100, size=32)
    text = str(err.value)
    assert "fewer than per_class 100" in text and "white_male" in text and "SHORT" in text
    from datakit_cli.main import as_flags

    assert "fewer than --per-class 100" in as_flags(err.value) and "use --allow-short" in as_flags(err.value)
    assert not out.exists()


def test_allow_short_takes_what_there_is(utk_src, tmp_path):
    src, _ = utk_src
    found = utk.scan(src)
    m = utk.build(src, tmp_path / "out", per_class=100, size=32, allow_short=True, val_fraction=0.25)
    for name in m["classes"]:
        total = sum(m["counts"][s][name] for s in m["splits"])
        failed = sum(1 for s in m["skipped"] if s["reason"].startswith(("truncated", "not an image", "cannot")))
        assert m["available"][name] - failed <= total <= m["available"][name]
    assert sum(m["available"].values()) == sum(1 for r in found.records if r.labels["race"] in (0, 1, 2, 3))


def _one_bad_class(tmp_path: Path, n_good: int) -> Path:
    """A folder where white_male has n_good pictures plus one truncated and one non-image file
    (white_female has n_good + 2 good ones)."""
    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=n_good, races=(0,), seed=2, size=32)
    rng = np.random.default_rng(9)
    for i in range(2):
        (src / f"35_1_0_2017010100000000{i}.jpg.chip.jpg").write_bytes(
            synthetic.jpeg_bytes(synthetic.draw_face(1, 0, rng, 32)))
    full = (next(src.glob("*_0_0_*"))).read_bytes()
    (src / "33_0_0_20170101000000001.jpg.chip.jpg").write_bytes(full[: len(full) // 3])
    (src / "34_0_0_20170101000000002.jpg.chip.jpg").write_bytes(b"<html>not found</html>")
    return src


def test_undecodable_picks_are_replaced_and_reported(tmp_path):
    src = _one_bad_class(tmp_path, n_good=6)
    m = utk.build(src, tmp_path / "out", per_class=6, races=(0,), size=32, val_fraction=0)
    assert m["counts"]["train"] == {"white_male": 6, "white_female": 6}
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    # with every candidate needed, both bad files were picked, failed to decode, and were reported
    assert reasons["33_0_0_20170101000000001.jpg.chip.jpg"].startswith("truncated")
    assert reasons["34_0_0_20170101000000002.jpg.chip.jpg"].startswith("not an image")


def test_class_short_after_decoding_fails_and_writes_nothing(tmp_path):
    src = _one_bad_class(tmp_path, n_good=6)
    out = tmp_path / "out"
    with pytest.raises(DatakitError, match="white_male has fewer than 7 decodable"):
        utk.build(src, out, per_class=7, races=(0,), size=32)
    assert not (out / "manifest.json").exists() and not (out / ".partial").exists()
    assert not any((out / f).exists() for f in utk.FORMATS)
    # --allow-short keeps the 6 good ones
    m = utk.build(src, out, per_class=7, races=(0,), size=32, allow_short=True, val_fraction=0)
    assert m["counts"]["train"] == {"white_male": 6, "white_female": 7}


def test_refuses_foreign_and_complete_outputs(utk_src, tmp_path):
    src, _ = utk_src
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DatakitError, match="not a datakit build"):
        utk.build(src, foreign, per_class=2, size=32)
    assert sorted(os.listdir(foreign)) == ["thesis.tex"]
    out = tmp_path / "out"
    utk.build(src, out, per_class=2, size=32)
    with pytest.raises(DatakitError, match="--overwrite"):
        utk.build(src, out, per_class=3, size=32)
    m = utk.build(src, out, per_class=3, size=32, formats=["tfrecord"], overwrite=True)
    assert not (out / "hdf5").exists() and not (out / "folders").exists()  # old outputs replaced, not mixed
    assert utk.is_complete_build(out) and m["options"]["per_class"] == 3
    with pytest.raises(DatakitError, match="must differ"):
        utk.build(src, src, per_class=2, size=32)


def test_killed_build_leaves_nothing_complete_and_reruns(tmp_path):
    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=150, races=(0, 1), seed=4, size=96)
    out = tmp_path / "out"
    code = ("import sys; from datakit.datasets import utk; "
            f"utk.build({str(src)!r}, {str(out)!r}, per_class=150, races=(0, 1), size=80, workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shards = list((out / ".partial" / "tfrecord").glob("utk-train*")) if (out / ".partial").exists() else []
            if shards and shards[0].stat().st_size > 100_000:
                break
            assert proc.poll() is None, "the build finished before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists()
    assert not utk.is_complete_build(out)
    m = utk.build(src, out, per_class=150, races=(0, 1), size=80, workers=2)
    assert not (out / ".partial").exists()
    clean = utk.build(src, tmp_path / "clean", per_class=150, races=(0, 1), size=80)
    assert _tfrecords(out) == _tfrecords(tmp_path / "clean")
    assert m["files"] == clean["files"]
