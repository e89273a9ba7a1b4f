"""Hostile builds: content (bombs, animation, 16-bit, alpha, palette, 1x1, trailing bytes), two builds
into one OUT, a disk that fills up or turns read-only mid-build, and --overwrite keeping the user's files."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.builder import build as generic
from datakit.builder import emit
from datakit.builder.images import MAX_PIXELS, BadImage, claims_too_many, decode, jpeg_end
from datakit.datasets import utk
from datakit.errors import DatakitError
from datakit.testing import synthetic

CLI = [sys.executable, "-m", "datakit_cli.main"]


def _png(width: int, height: int, color_type: int = 0, rows: int | None = None) -> bytes:
    """A PNG of zero pixels whose header claims width x height (8-bit; color_type 0 gray, 2 RGB); `rows`
    limits the rows actually encoded (None: all of them, a valid picture), streamed so that a big one
    costs little memory to make."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + width * (3 if color_type == 2 else 1))
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 64 px JPEG whose frame header is patched to claim width x height."""
    data = bytearray(synthetic.jpeg_bytes(np.full((64, 64, 3), 90, np.uint8)))
    pos = data.index(b"\xff\xc0")
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# -- 3. content ----------------------------------------------------------------------------------------

def test_a_decompression_bomb_is_refused_from_its_header_before_any_pixel_is_allocated():
    import tracemalloc

    bombs = {"png 50000x50000 header": _png(50000, 50000, 2, rows=2),
             "jpeg 50000x50000 header": _jpeg_claiming(50000, 50000),
             "png 9000x9000, valid": _png(9000, 9000),  # over max_pixels, under Pillow's own limit
             "jpeg 9000x9000 header": _jpeg_claiming(9000, 9000)}
    for what, data in bombs.items():
        assert len(data) < 200_000, what  # tiny files
        tracemalloc.start()
        with pytest.raises(BadImage, match="too many pixels: the header claims") as err:
            decode(data, 64)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, (what, peak)  # the 9000 x 9000 picture alone would be 81 MB
        assert "decompression bomb" in str(err.value)
        assert claims_too_many(data)  # for decoders other than decode (the near-duplicate pass)
    assert not claims_too_many(synthetic.jpeg_bytes(np.zeros((64, 64, 3), np.uint8)))
    assert not claims_too_many(_png(64, 64)) and not claims_too_many(b"not a picture")
    with pytest.raises(BadImage, match="over the limit of 1,000"):
        decode(synthetic.jpeg_bytes(np.zeros((64, 64, 3), np.uint8)), 16, max_pixels=1000)
    assert decode(_png(9000, 9000), 32, max_pixels=9000 * 9000)[0].shape == (32, 32, 3)  # the limit is an option
    assert MAX_PIXELS == 8192 * 8192


def _bomb_build(tmp_path, near_duplicates: str) -> tuple[dict, int]:
    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=4, races=(0, 1), seed=2, size=32)
    bombs = {"30_0_0_20170109150557301.jpg.chip.jpg": _png(50000, 50000, 2, rows=2),
             "30_0_0_20170109150557302.jpg.chip.jpg": _jpeg_claiming(50000, 50000),
             "30_1_0_20170109150557303.jpg.chip.jpg": _png(9000, 9000),
             "30_1_1_20170109150557304.jpg.chip.jpg": _png(20000, 20000)}  # valid, 400 Mpx over Pillow's limit too
    for name, data in bombs.items():
        (src / name).write_bytes(data)
    out = tmp_path / "out"
    run = subprocess.run(["/usr/bin/time", "-f", "%M", *CLI, "build-utk", str(src), str(out), "--races", "0,1",
                          "--per-class", "8", "--allow-short", "--size", "32", "--workers", "2", "--json",
                          "--near-duplicates", near_duplicates], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    peak_kib = int(run.stderr.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    print(f"peak RSS of a build over {len(bombs)} bombs (near_duplicates={near_duplicates}): {peak_kib / 1024:.0f} MiB")
    for name in bombs:
        assert reasons[name].startswith("too many pixels: the header claims"), (name, reasons.get(name))
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 16
    return manifest, peak_kib


def test_a_build_over_a_folder_of_bombs_skips_them_with_a_reason_in_bounded_memory(tmp_path):
    _, peak_kib = _bomb_build(tmp_path, "keep")
    assert peak_kib < 200 * 1024  # one 20000 x 20000 picture decoded would be 400 MB


def test_the_near_duplicate_pass_over_bombs_is_bounded_too(tmp_path):
    _, peak_kib = _bomb_build(tmp_path, "group")
    assert peak_kib < 200 * 1024


def test_animated_16_bit_alpha_palette_and_tiny_pictures_decode_as_documented():
    frames = [Image.new("RGB", (32, 32), (10, 20, 30)), Image.new("RGB", (32, 32), (200, 200, 200))]
    for fmt in ("GIF", "WEBP", "PNG"):  # animated GIF, WebP and APNG: the first frame
        data = _encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        assert Image.open(io.BytesIO(data)).n_frames == 2
        pixels, jpeg = decode(data, 32)
        assert np.abs(pixels.astype(int) - (10, 20, 30)).max() <= 6, fmt
        assert jpeg[:2] == b"\xff\xd8"
    gray16 = np.array([[0, 32896, 65535, 257]] * 8 * 2, np.uint16).reshape(8, 8)
    pixels, _ = decode(_encoded(Image.fromarray(gray16), "PNG"), None)  # I;16: value / 257
    assert Image.open(io.BytesIO(_encoded(Image.fromarray(gray16), "PNG"))).mode == "I;16"
    assert pixels[0, :4, 0].tolist() == [0, 128, 255, 1]
    dark16 = np.full((8, 8), 200, np.uint16)  # 16-bit values are never read as 8-bit ones
    assert decode(_encoded(Image.fromarray(dark16), "PNG"), None)[0].max() <= 1
    import cv2

    ok, rgb16 = cv2.imencode(".png", np.full((8, 8, 3), (0, 32768, 65535), np.uint16))  # BGR order
    assert decode(rgb16.tobytes(), None)[0][0, 0].tolist() == [255, 128, 0]
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # transparent red: white
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    pixels, _ = decode(_encoded(rgba, "PNG"), None)
    assert pixels[5, 5].tolist() == [255, 255, 255] and pixels[0, 0].tolist()[0] > 240
    la = Image.new("LA", (16, 16), (0, 0))  # transparent black: white
    assert decode(_encoded(la, "PNG"), None)[0].min() >= 250
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    assert np.abs(decode(_encoded(palette, "PNG"), None)[0][3, 3].astype(int) - (0, 0, 255)).max() <= 3
    palette.info["transparency"] = 1
    assert decode(_encoded(palette, "PNG", transparency=1), None)[0].min() >= 250  # transparent index: white
    for side in ((1, 1), (7, 40), (40, 1)):  # tracking pixels, slivers: refused, not blown up
        with pytest.raises(BadImage, match=r"too small: .* \(at least 8 pixels a side\)"):
            decode(_encoded(Image.new("RGB", side, (1, 2, 3)), "PNG"), 64)
    assert decode(_encoded(Image.new("RGB", (8, 8)), "PNG"), 64)[0].shape == (64, 64, 3)


def test_bytes_after_the_end_of_a_jpeg_are_ignored_and_not_stored():
    clean = synthetic.draw_face(0, 1, np.random.default_rng(3), 64)
    jpeg = synthetic.jpeg_bytes(clean)
    other = synthetic.jpeg_bytes(synthetic.draw_face(1, 0, np.random.default_rng(4), 64))
    progressive = synthetic.jpeg_bytes(clean, progressive=True)
    assert jpeg_end(jpeg) == len(jpeg) and jpeg_end(progressive) == len(progressive)
    assert jpeg_end(jpeg[:-100]) is None and jpeg_end(b"GIF89a") is None
    for data in (jpeg, progressive):  # zero padding alone is kept as it is
        assert decode(data + bytes(512), 64)[1] == data + bytes(512)
    for tail in (b"garbage after EOI \xff\xd9 and more", other, b"ftypmp42" + bytes(2000), bytes(9) + b"x"):
        for data in (jpeg, progressive):
            for size in (64, 48):  # kept as-is (fast path and Pillow path) or re-encoded
                want_pixels, want_jpeg = decode(data, size)
                pixels, stored = decode(data + tail, size)
                assert np.array_equal(pixels, want_pixels)
                assert stored == want_jpeg  # the stored copy holds the picture only
    assert decode(jpeg + other, 64)[1] == jpeg


def test_a_build_skips_tiny_pictures_and_stores_trimmed_jpegs(tmp_path):
    src = tmp_path / "src"
    synthetic.make_utk_folder(src, per_cell=3, races=(0,), seed=5, size=32)
    face = synthetic.jpeg_bytes(synthetic.draw_face(0, 0, np.random.default_rng(9), 32))
    (src / "31_0_0_20170109150557401.jpg.chip.jpg").write_bytes(face + b"trailing bytes")
    (src / "31_0_0_20170109150557402.jpg.chip.jpg").write_bytes(_encoded(Image.new("RGB", (1, 1)), "PNG"))
    gif = _encoded(Image.new("RGB", (32, 32), (9, 9, 9)), "GIF", save_all=True,
                   append_images=[Image.new("RGB", (32, 32), (250, 0, 0))])
    (src / "31_1_0_20170109150557403.jpg.chip.jpg").write_bytes(gif)
    m = utk.build(src, tmp_path / "out", races=(0,), per_class=5, allow_short=True, size=32, workers=1,
                  formats=("folders",))
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert reasons == {"31_0_0_20170109150557402.jpg.chip.jpg": "too small: 1 x 1 (at least 8 pixels a side)"}
    stored = {p.name: p.read_bytes() for p in (tmp_path / "out" / "folders").rglob("*.jpg")}
    assert stored["31_0_0_20170109150557401.jpg.chip.jpg"] == face
    assert stored["31_1_0_20170109150557403.jpg.chip.jpg"][:2] == b"\xff\xd8"


# -- 5. concurrency ------------------------------------------------------------------------------------

PAUSED = """
import os, sys, time
from pathlib import Path
import datakit.builder.layout as b
real = b.write
def paused(*a, **k):  # the lock is held from before the scan until the build ends
    Path(sys.argv[3]).write_text(str(os.getpid()))
    while not Path(sys.argv[4]).exists():
        time.sleep(0.05)
    return real(*a, **k)
b.write = paused
from datakit.datasets import utk
utk.build(sys.argv[1], sys.argv[2], per_class=3, size=32, workers=int(sys.argv[5]), overwrite=True)
"""


def _paused_build(src, out, tmp_path, workers=1):
    ready, go = tmp_path / f"ready-{workers}", tmp_path / f"go-{workers}"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(src), str(out), str(ready), str(go), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, go


def _cli_build(src, out, *extra):
    return subprocess.run([*CLI, "build-utk", str(src), str(out), "--per-class", "3", "--size", "32",
                           "--workers", "1", "--json", *extra], capture_output=True, text=True, timeout=300)


def _one_error_line(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def _consistent(out: Path, users=()) -> dict:
    """A complete build: every file the manifest lists is there with its digest, nothing half-made
    (`users`: the user's files, paths under OUT)."""
    manifest = json.loads((out / "manifest.json").read_text())
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    listed = set(manifest["files"]) | set(users)
    for fmt in ("folders", "tfrecord", "hdf5"):
        for path in (out / fmt).rglob("*") if (out / fmt).exists() else ():
            assert path.is_dir() or path.relative_to(out).as_posix() in listed, path
    assert not (out / ".partial").exists() and not (out / ".datakit-lock").exists()
    return manifest


def test_a_second_build_into_the_same_out_refuses_while_the_first_runs(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    first, go = _paused_build(src, out, tmp_path)
    try:
        line = _one_error_line(_cli_build(src, out, "--overwrite"))
        assert line == (f"datakit build-utk: error: {out}: being written by another datakit build (pid {first.pid}); "
                        "wait for it to finish, or stop it")
        with pytest.raises(DatakitError, match="being written by another datakit build"):
            utk.build(src, out, per_class=3, size=32, workers=1, overwrite=True)
        assert (out / ".datakit-lock").exists()
    finally:
        go.write_text("go")
        assert first.wait(timeout=120) == 0, first.communicate()
    _consistent(out)
    assert _cli_build(src, out, "--overwrite").returncode == 0  # the lock went with the first build
    _consistent(out)


def test_a_build_killed_with_sigkill_leaves_no_lock_behind(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    killed, _ = _paused_build(src, out, tmp_path, workers=2)  # forked workers must not hold the lock
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert (out / ".datakit-lock").exists() and not (out / "manifest.json").exists()
        run = _cli_build(src, out)  # an incomplete datakit build: redone, no --overwrite needed
        assert run.returncode == 0, run.stderr
        _consistent(out)
    finally:
        try:
            os.killpg(killed.pid, signal.SIGKILL)  # its orphaned workers
        except ProcessLookupError:
            pass


def test_two_builds_started_together_never_mix(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    for seed in (1, 2, 3):
        procs = [subprocess.Popen([*CLI, "build-utk", str(src), str(out), "--per-class", "3", "--size", "32",
                                   "--workers", "1", "--overwrite", "--seed", str(seed * 10 + i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
        results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            assert rc == 0 or "being written by another datakit build" in err, err
        manifest = _consistent(out)
        assert manifest["options"]["seed"] in {seed * 10 + i for i, (rc, _) in enumerate(results) if rc == 0}


# -- 6. disk full, read-only destination -------------------------------------------------------------

def _no_complete_output(out: Path) -> None:
    assert not (out / "manifest.json").exists()
    assert not (out / ".partial").exists()
    assert not (out / ".datakit-lock").exists()


def _failing_after(n: int, code: int, monkeypatch):
    real, calls = emit._write_file, {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(code, os.strerror(code), path)
        real(path, data)

    monkeypatch.setattr(emit, "_write_file", write)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_disk_that_fills_up_mid_build_stops_it_with_one_line(utk_src, tmp_path, monkeypatch, workers):
    if workers > 1 and generic.start_method() != "fork":
        pytest.skip("the failing writer reaches worker processes only through fork")
    src, _ = utk_src
    out = tmp_path / "out"
    _failing_after(5, errno.ENOSPC, monkeypatch)  # workers forked after this inherit it
    with pytest.raises(DatakitError) as err:
        utk.build(src, out, per_class=3, size=32, workers=workers)
    text = str(err.value)
    assert text.startswith(f"no space left on device while writing {out}/.partial/folders/"), text
    assert text.endswith("; nothing was installed (the partial output was removed)") and "\n" not in text
    assert not out.exists()  # it made OUT: nothing of it is left
    monkeypatch.undo()
    utk.build(src, out, per_class=3, size=32, workers=workers)
    _consistent(out)


def test_a_full_disk_while_writing_tfrecords_names_the_shard(utk_src, tmp_path, monkeypatch):
    from datakit.builder import writers

    real = writers.TFRecordWriter.add

    def full(self, framed):
        real(self, framed)
        raise OSError(errno.ENOSPC, "No space left on device")  # file.write names no file

    monkeypatch.setattr(writers.TFRecordWriter, "add", full)
    src, _ = utk_src
    out = tmp_path / "out"
    with pytest.raises(DatakitError, match=rf"^no space left on device while writing {out}/.partial/tfrecord/"
                                           r"utk-train.tfrecord-00000-of-00001; nothing was installed"):
        utk.build(src, out, per_class=3, size=32, workers=1)
    _no_complete_output(out)


def test_a_destination_turning_read_only_mid_build_is_one_line_and_keeps_the_previous_build(utk_src, tmp_path,
                                                                                           monkeypatch):
    src, _ = utk_src
    out = tmp_path / "out"
    before = utk.build(src, out, per_class=3, size=32, workers=1)
    _failing_after(2, errno.EROFS, monkeypatch)
    with pytest.raises(DatakitError, match=rf"^read-only file system while writing {out}/.partial/"):
        utk.build(src, out, per_class=3, size=32, workers=1, seed=4, overwrite=True)
    assert _consistent(out) == before  # the previous build is complete and untouched


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if run.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.strip() or run.returncode})")


def test_a_real_full_disk_through_the_cli_is_one_line_and_exit_1(utk_src, tmp_path):
    src, _ = utk_src
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=1m")
    try:
        out = disk / "out"
        run = subprocess.run([*CLI, "build-utk", str(src), str(out), "--per-class", "10", "--size", "128",
                              "--workers", "2", "--json"], capture_output=True, text=True, timeout=300)
        line = _one_error_line(run)
        assert line.startswith(f"datakit build-utk: error: no space left on device while writing {out}/.partial/")
        assert line.endswith("nothing was installed (the partial output was removed)"), line
        _no_complete_output(out)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_destination_is_refused_in_one_line(utk_src, tmp_path):
    src, _ = utk_src
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "size=1m,ro")
    try:
        line = _one_error_line(_cli_build(src, disk / "out"))
        assert line == f"datakit build-utk: error: read-only file system while writing {disk / 'out'}; nothing was written"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_worker_error_reaches_the_cli_as_one_line(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    script = ("import errno, os, sys\n"
              "from datakit.builder import emit\n"
              "def full(path, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)\n"
              "emit._write_file = full\n"
              "from datakit_cli.main import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", script, "build-utk", str(src), str(out), "--per-class", "3",
                          "--size", "32", "--workers", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert "no space left on device while writing" in _one_error_line(run)
    _no_complete_output(out)


# -- 7. --overwrite ------------------------------------------------------------------------------------

def test_overwrite_removes_only_what_datakit_wrote(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    first = utk.build(src, out, per_class=3, size=32, workers=1)
    klass = first["classes"][0]
    mine = {"notes.txt": "my notes", "folders/my-extra.txt": "extra", f"folders/train/{klass}/mine.txt": "mine",
            "hdf5/README.txt": "about the shards"}
    for rel, text in mine.items():
        (out / rel).write_text(text)
    (out / "folders" / "my-empty").mkdir()
    second = utk.build(src, out, per_class=4, size=32, workers=1, seed=9, formats=("folders", "tfrecord"),
                       overwrite=True)
    for rel, text in mine.items():
        assert (out / rel).read_text() == text, rel
    assert (out / "folders" / "my-empty").is_dir()
    assert second["kept"] == sorted(rel for rel in mine if rel != "notes.txt")
    assert sorted(p.name for p in (out / "hdf5").iterdir()) == ["README.txt"]  # datakit's shards went
    gone = set(first["files"]) - set(second["files"])
    assert gone and not any((out / rel).exists() for rel in gone)
    _ = [(out / rel).read_bytes() for rel in second["files"]]
    third = utk.build(src, out, per_class=3, size=32, workers=1, overwrite=True)  # twice: same again
    assert third["kept"] == second["kept"] and "kept" not in first


def test_a_user_file_in_the_way_of_a_new_output_stops_the_build_before_anything_moves(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    first = utk.build(src, out, per_class=3, size=32, workers=1, formats=("folders",))
    (out / "tfrecord").mkdir()
    (out / "tfrecord" / "utk-train.tfrecord-00000-of-00001").write_bytes(b"the user's")
    with pytest.raises(DatakitError, match=r"utk-train.tfrecord-00000-of-00001: not written by datakit .* "
                                           r"move it away and run again; nothing was installed"):
        utk.build(src, out, per_class=3, size=32, workers=1, overwrite=True)
    assert _consistent(out, ["tfrecord/utk-train.tfrecord-00000-of-00001"]) == first
    assert (out / "tfrecord" / "utk-train.tfrecord-00000-of-00001").read_bytes() == b"the user's"


def test_a_tampered_manifest_cannot_make_overwrite_delete_outside_the_outputs(utk_src, tmp_path):
    src, _ = utk_src
    out = tmp_path / "out"
    utk.build(src, out, per_class=3, size=32, workers=1, formats=("folders",))
    victim, inside = tmp_path / "victim.txt", out / "notes.txt"
    victim.write_text("keep")
    inside.write_text("keep")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"].update({"../victim.txt": "0", "folders/../../victim.txt": "0", "notes.txt": "0",
                              str(victim): "0"})
    (out / "manifest.json").write_text(json.dumps(manifest))
    utk.build(src, out, per_class=3, size=32, workers=1, overwrite=True)
    assert victim.read_text() == "keep" and inside.read_text() == "keep"
