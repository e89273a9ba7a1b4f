"""Hostile mirrors, archives and disks for `fetch-cifar10/100` (issue 13, kinds 4-6 for fetches).

Each case ends in one line naming the URL or file and the reason, exit 1 through the CLI, and nothing
complete-looking in DEST: oversized, lying and never-ending bodies; gzip Content-Encoding; HTML pages;
truncated and zero-filled local archives; two fetches at once (real processes, and a kill -9); a disk
that fills up or refuses writes during the download and during the extraction.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from loopback_http import loopback  # noqa: F401  (fixture)

from datakit import fetch
from datakit.datasets import cifar
from datakit.datasets.cifar.download import SIZE_CAP
from datakit.errors import DatakitError
from datakit.testing import synthetic_cifar
from datakit_cli.main import main

PATH10 = "/kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "cifar-10-binary.tar.gz"
    info = synthetic_cifar.make_cifar10_tarball(path, train_per_batch=20, test=10, seed=5)
    return {**info, "data": path.read_bytes()}


def names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def assert_nothing_complete(dest: Path, allowed=()):
    """No data-set folder, no marker anywhere, no temporary folder, no lock: only `allowed` may remain."""
    assert not list(dest.rglob(fetch.MARKER)) if dest.exists() else True
    assert [n for n in names(dest) if n not in allowed] == []


def cli_subprocess(*argv, timeout=60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["DATAKIT_FETCH_BACKOFF"] = "0.01"
    # --json switches the progress bars off: stderr holds only the error line.
    return subprocess.run([sys.executable, "-m", "datakit_cli.main", *argv, "--json"], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def popen_cli(*argv) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["DATAKIT_FETCH_BACKOFF"] = "0.01"
    return subprocess.Popen([sys.executable, "-m", "datakit_cli.main", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def wait_for(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# --- 4. downloads: sizes ------------------------------------------------------------------------------

def test_official_sizes_are_pinned_with_the_checksums():
    assert cifar.CIFAR10.size == 170_052_171 and cifar.CIFAR100.size == 168_513_733
    assert SIZE_CAP == 4 * 170_052_171


def test_body_longer_than_the_size_is_stopped_and_deleted(loopback, tarball, tmp_path):
    """No Content-Length, the file then 1 MiB more: the transfer stops at the first block past the size."""
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_length, loopback.trailing = "omit", b"\0" * (1 << 20)
    size = tarball["bytes"]
    with pytest.raises(DatakitError, match=rf"{url}: the server sent more than the expected {size} bytes "
                                           rf"\((\d+) bytes received\); stopped and deleted") as info:
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], size=size, backoff=0)
    received = int(str(info.value).split("(")[1].split()[0])
    assert size < received <= size + (1 << 16)
    assert len(loopback.requests) == 1  # not retried: a bigger file is not a flaky link
    assert_nothing_complete(tmp_path)  # the oversized .part is gone, and the lock file


def test_lying_content_length_is_refused_before_the_body(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_length = 10 * tarball["bytes"]
    with pytest.raises(DatakitError, match=rf"announces {10 * tarball['bytes']} bytes, more than the expected "
                                           rf"{tarball['bytes']} bytes; refusing the download"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], size=tarball["bytes"], backoff=0)
    assert_nothing_complete(tmp_path)  # not even an empty .part


def test_pinned_size_applies_with_the_pinned_checksum(loopback, tarball, tmp_path):
    """A mirror given without a checksum is held to the official MD5, and so to the official size."""
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_length = cifar.CIFAR10.size + 1
    with pytest.raises(DatakitError, match=f"announces {cifar.CIFAR10.size + 1} bytes, more than the expected "
                                           f"{cifar.CIFAR10.size} bytes"):
        cifar.fetch("cifar10", tmp_path, url=url, backoff=0)
    assert_nothing_complete(tmp_path)
    # The user's own checksum and no --size: the cap, not the official size, bounds the transfer.
    loopback.content_length = SIZE_CAP + 1
    with pytest.raises(DatakitError, match=f"more than the {SIZE_CAP}-byte cap on a download of unknown size"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], backoff=0)


def test_endless_body_ends_in_seconds(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.endless = True
    t0 = time.monotonic()
    with pytest.raises(DatakitError, match="the server sent more than the expected"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], size=tarball["bytes"], backoff=0)
    assert time.monotonic() - t0 < 10
    assert_nothing_complete(tmp_path)


def test_endless_body_without_a_size_stops_at_the_cap(loopback, tarball, tmp_path):
    url = loopback.serve("/stream", b"")
    loopback.endless = True
    with pytest.raises(DatakitError, match=r"more than the 300000-byte cap on a download of unknown size"):
        fetch.download(url, tmp_path / "x.tar.gz", limit=300_000, backoff=0)
    assert names(tmp_path) == []


def test_endless_body_through_the_cli(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.endless = True
    dest = tmp_path / "dest"
    done = cli_subprocess("fetch-cifar10", "--url", url, "--dest", str(dest), "--size", str(tarball["bytes"]),
                          "--md5", tarball["md5"])
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert line.startswith("datakit fetch-cifar10: error: ") and url in line
    assert f"more than the expected {tarball['bytes']} bytes" in line
    assert_nothing_complete(dest)


# --- 4. downloads: encodings and HTML pages ------------------------------------------------------------

def test_gzip_encoded_twice_is_decoded(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_encoding, loopback.gzip_body = "gzip", True
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], size=tarball["bytes"], backoff=0)
    assert result["download"]["decoded"] is True and result["archive"]["md5"] == tarball["md5"]
    assert result["counts"] == {"train": 100, "test": 10} and names(tmp_path) == [FOLDER]


def test_tar_gz_merely_labelled_gzip_encoded_is_kept_as_is(loopback, tarball, tmp_path):
    """Apache's `AddEncoding x-gzip .gz`: the bytes are the archive; decoding them would give the .tar."""
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_encoding = "x-gzip"
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], size=tarball["bytes"], backoff=0)
    assert result["download"]["decoded"] is False and result["archive"]["md5"] == tarball["md5"]


def test_other_content_encodings_are_refused(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.content_encoding = "br"
    with pytest.raises(DatakitError, match=f"{url}: the server sent the archive with Content-Encoding: br, which "
                                           "datakit does not decode"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], backoff=0)
    assert_nothing_complete(tmp_path)


def test_gzip_encoding_that_does_not_decode_says_so(loopback, tarball, tmp_path):
    """Labelled gzip, gzip-of-gzip at the start, then cut: the line names the encoding, not a bare mismatch."""
    url = loopback.serve(PATH10, gzip.compress(tarball["data"], mtime=0)[:-5000])
    loopback.content_encoding, loopback.content_length = "gzip", "omit"
    with pytest.raises(DatakitError, match="Content-Encoding: gzip stream ends early; deleted the download"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], backoff=0)
    assert_nothing_complete(tmp_path)


HTML = b"<!DOCTYPE html>\n<html><head><title>Welcome to Airport Wi-Fi</title></head><body>Log in</body></html>\n"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_instead_of_the_archive(loopback, tmp_path, capsys, content_type):
    """Named by its Content-Type, or by its first bytes when the portal says octet-stream."""
    url = loopback.serve(PATH10, HTML)
    loopback.content_type = content_type
    code = main(["fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--json"])
    err = capsys.readouterr().err
    assert code == 1
    line = one_error_line(err)
    assert url in line and fetch.HTML_PAGE in line
    assert_nothing_complete(tmp_path)


def test_saved_html_page_given_as_archive(tmp_path):
    page = tmp_path / "cifar-10-binary.tar.gz"
    page.write_bytes(HTML)
    with pytest.raises(DatakitError, match=f"{page}: not a readable tar archive: it is an HTML page"):
        cifar.fetch("cifar10", tmp_path / "dest", from_archive=page)
    assert_nothing_complete(tmp_path / "dest")


# --- 4. --from-archive: truncated and zero-filled copies -----------------------------------------------

def test_truncated_archive_is_named_truncated(tarball, tmp_path, capsys):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball["data"][: len(tarball["data"]) * 2 // 3])
    dest = tmp_path / "dest"
    code = main(["fetch-cifar10", "--dest", str(dest), "--from-archive", str(cut), "--json"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and f"{cut}: not a readable tar archive: it is truncated (gzip stream ends early)" in line
    assert_nothing_complete(dest)
    # With the size known, it is refused before anything is extracted, sizes named.
    with pytest.raises(DatakitError, match=rf"{cut}: is truncated \(gzip stream ends early\); "
                                           rf"{cut.stat().st_size} bytes, not the expected {tarball['bytes']}"):
        cifar.fetch("cifar10", dest, from_archive=cut, size=tarball["bytes"])
    assert cut.stat().st_size == len(tarball["data"]) * 2 // 3  # the user's file is never touched


def test_preallocated_zero_file(tarball, tmp_path):
    """A parallel downloader's file of the right size, nothing written yet: tarfile alone reads it as empty."""
    zeros = tmp_path / "cifar-10-binary.tar.gz"
    zeros.write_bytes(b"\0" * tarball["bytes"])
    with pytest.raises(DatakitError, match=r"it is zero-filled from byte 0 \(an unfinished download\?\)"):
        cifar.fetch("cifar10", tmp_path / "dest", from_archive=zeros)
    assert_nothing_complete(tmp_path / "dest")


@pytest.mark.parametrize("checked", [False, True])
def test_zeros_after_a_valid_prefix(tarball, tmp_path, checked):
    prefix = tarball["data"][:100_000]
    partial = tmp_path / "cifar-10-binary.tar.gz"
    partial.write_bytes(prefix + b"\0" * (tarball["bytes"] - len(prefix)))
    start = len(prefix.rstrip(b"\0"))
    dest = tmp_path / "dest"
    if checked:  # the checksum fails first; the line says why
        match = rf"{partial}: is zero-filled from byte {start} \(an unfinished download\?\); checksum mismatch"
        kw = {"md5": tarball["md5"], "size": tarball["bytes"]}
    else:  # no checksum: extraction starts, meets the zeros, and the temporary tree is removed
        match = rf"it is zero-filled from byte {start} \(an unfinished download\?\)"
        kw = {}
    with pytest.raises(DatakitError, match=match):
        cifar.fetch("cifar10", dest, from_archive=partial, **kw)
    assert_nothing_complete(dest)


def test_archive_problem_finds_nothing_in_a_whole_archive(tarball):
    assert fetch.archive_problem(tarball["path"]) is None


# --- 5. two fetches into one destination -------------------------------------------------------------

def test_two_fetches_at_once_one_refuses(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.throttle = 0.05  # ~320 KiB/s: the first fetch takes about a second
    dest = tmp_path / "dest"
    argv = ("fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball["md5"])
    first = popen_cli(*argv, "--json")
    try:
        wait_for(lambda: loopback.requests)  # it holds the lock and is downloading
        assert (dest / fetch.LOCK).read_text().strip() == str(first.pid)
        second = cli_subprocess(*argv)
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"{dest}: another fetch (pid {first.pid}) is writing into this folder" in line
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert json.loads(out)["archive"]["md5"] == tarball["md5"]
    assert len(loopback.requests) == 1  # the refused fetch sent nothing
    assert names(dest) == [FOLDER]  # the lock file is gone with its holder's exit
    assert cifar.load(dest, "train")[0].shape == (100, 32, 32, 3)


def test_lock_of_a_killed_fetch_is_not_stuck(loopback, tarball, tmp_path):
    url = loopback.serve(PATH10, tarball["data"])
    loopback.stall = 30.0  # headers, then nothing: the fetch sits inside the lock
    dest = tmp_path / "dest"
    victim = popen_cli("fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball["md5"],
                       "--timeout", "60")
    try:
        wait_for(lambda: loopback.requests and (dest / fetch.LOCK).is_file()
                 and (dest / fetch.LOCK).read_text().strip() == str(victim.pid))
        with pytest.raises(DatakitError, match=f"another fetch \\(pid {victim.pid}\\)"):
            cifar.fetch("cifar10", dest, url=url, md5=tarball["md5"], backoff=0)
    finally:
        victim.kill()  # SIGKILL: no finally, no cleanup in the victim
        victim.wait(10)
    assert (dest / fetch.LOCK).exists()  # the file stays behind, but the kernel dropped the flock
    loopback.stall = 0.0
    result = cifar.fetch("cifar10", dest, url=url, md5=tarball["md5"], backoff=0)
    assert result["fetched"] and names(dest) == [FOLDER]


def test_waiting_fetch_finds_the_finished_install(tarball, tmp_path):
    """Taking the lock after another fetch finished: the install is reused, nothing extracted twice."""
    dest = tmp_path / "dest"
    cifar.fetch("cifar10", dest, from_archive=tarball["path"])
    with fetch.dest_lock(dest):
        pass
    assert cifar.fetch("cifar10", dest, from_archive=tarball["path"])["fetched"] is False
    assert names(dest) == [FOLDER]


# --- 6. a disk that fills up or turns read-only --------------------------------------------------------

class _FailingFile:
    def __init__(self, f, budget: int, err: int):
        self._f, self._budget, self._err = f, budget, err

    def write(self, data):
        if len(data) > self._budget:
            n = self._budget
            if n:
                self._f.write(bytes(data[:n]))
            self._budget = 0
            if n:
                return n
            raise OSError(self._err, os.strerror(self._err))
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fail_writes(monkeypatch, module, suffix: str, budget: int, err: int):
    """Files opened for writing by `module` whose name ends with `suffix` take `budget` bytes, then fail."""
    real = open

    def fake_open(file, mode="r", *args, **kw):
        f = real(file, mode, *args, **kw)
        if any(c in mode for c in "wa") and str(file).endswith(suffix):
            return _FailingFile(f, budget, err)
        return f

    if module is tarfile:
        monkeypatch.setattr(tarfile, "bltn_open", fake_open)
    else:
        monkeypatch.setattr(module, "open", fake_open, raising=False)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_disk_error_during_download_keeps_the_part_for_resume(loopback, tarball, tmp_path, capsys, monkeypatch,
                                                             err):
    url = loopback.serve(PATH10, tarball["data"])
    fail_writes(monkeypatch, fetch, ".part", 150_000, err)
    code = main(["fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--md5", tarball["md5"], "--json"])
    line = one_error_line(capsys.readouterr().err)
    part = tmp_path / "cifar-10-binary.tar.gz.part"
    assert code == 1
    assert f"{part}: cannot write: {os.strerror(err)}; 150000 bytes kept there, a rerun resumes from them" in line
    assert len(loopback.requests) == 1  # a local error is not retried
    assert_nothing_complete(tmp_path, allowed=[part.name])
    monkeypatch.undo()
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], backoff=0)
    assert loopback.requests[-1]["range"] == "bytes=150000-" and result["download"]["resumed"] == 1
    assert names(tmp_path) == [FOLDER]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_disk_error_during_extraction_keeps_the_verified_download(loopback, tarball, tmp_path, capsys,
                                                                 monkeypatch, err):
    url = loopback.serve(PATH10, tarball["data"])
    fail_writes(monkeypatch, tarfile, "data_batch_3.bin", 10_000, err)
    code = main(["fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--md5", tarball["md5"], "--json"])
    line = one_error_line(capsys.readouterr().err)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    assert code == 1
    assert f"{FOLDER}/data_batch_3.bin: cannot write: {os.strerror(err)}; nothing was installed, the verified " \
           f"download is kept in {archive}" in line
    assert_nothing_complete(tmp_path, allowed=[archive.name])  # no folder, no marker, no temporary tree
    monkeypatch.undo()
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball["md5"], backoff=0)
    assert len(loopback.requests) == 1 and result["download"] is None  # no second download
    assert result["fetched"] and names(tmp_path) == [FOLDER]


def test_disk_full_when_writing_the_marker(tarball, tmp_path, monkeypatch):
    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(fetch, "write_text", full)
    with pytest.raises(DatakitError, match=f"{fetch.MARKER}: cannot write: No space left on device; nothing was "
                                           "installed$"):
        cifar.fetch("cifar10", tmp_path / "dest", from_archive=tarball["path"])
    assert_nothing_complete(tmp_path / "dest")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro=False) -> a fresh tmpfs folder; skipped where mounting is not allowed."""
    mounted = []

    def mount(size: str, ro: bool = False) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_real_full_disk_during_download(loopback, tarball, tmp_path, tmpfs):
    url = loopback.serve(PATH10, tarball["data"])
    dest = tmpfs("128k")
    done = cli_subprocess("fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball["md5"])
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and "cifar-10-binary.tar.gz.part: cannot write: No space left on device" in line
    assert "kept there, a rerun resumes from them" in line
    assert_nothing_complete(dest, allowed=["cifar-10-binary.tar.gz.part"])


def test_real_full_disk_during_extraction(loopback, tarball, tmp_path, tmpfs):
    url = loopback.serve(PATH10, tarball["data"])
    dest = tmpfs("400k")  # the archive fits (about 290 KiB), its tree (about 340 KiB) does not
    done = cli_subprocess("fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball["md5"])
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and "cannot write: No space left on device; nothing was installed" in line
    assert_nothing_complete(dest, allowed=["cifar-10-binary.tar.gz"])


def test_read_only_destination(loopback, tarball, tmp_path, tmpfs):
    url = loopback.serve(PATH10, tarball["data"])
    dest = tmpfs("1m", ro=True)
    done = cli_subprocess("fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball["md5"])
    line = one_error_line(done.stderr)
    assert done.returncode == 1
    assert f"{dest / fetch.LOCK}: cannot write: Read-only file system" in line
    assert loopback.requests == []  # refused before any download
