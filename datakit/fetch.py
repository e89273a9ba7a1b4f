"""Download, verify and safely extract a data-set archive; generic, standard library only.

Why each piece exists:
- `download` streams to `NAME.part`, retries dropped connections with exponential backoff and
  resumes with an HTTP Range request; a server that ignores Range (200 to a range request) gets a
  clean restart, never a second copy appended. The file takes its final name only once complete
  and verified; a checksum mismatch deletes it.
- `safe_extract` refuses an archive whose members would land outside the target (`..`, absolute
  names), or that holds links or device files, before they are written; Python's `data` extraction
  filter is applied on top.
- `install_archive` extracts into a temporary folder, checks the tree, writes a marker
  (`datakit-fetch.json`, the archive's checksums and every file's size) last, then renames the
  folder into place: a folder with a valid marker is complete, so a rerun does no network I/O.
- Hostile mirrors and disks: a transfer is stopped (and its `.part` deleted) as soon as it passes the
  expected size, or `DEFAULT_LIMIT` when no size is known, so an oversized or never-ending body cannot
  fill the disk; `Content-Encoding: gzip` is undone only when the server gzipped the archive a second
  time; an HTML page (a captive portal) is named as such; a local archive that is cut short or
  zero-filled says so. A lock on `DEST/.datakit-fetch.lock` (flock: released by the kernel when its
  holder dies) keeps two fetches out of one destination; a disk that fills up or turns read-only is
  one line naming the file, with the partial download kept for the next run.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # not POSIX: fetches are not locked
    fcntl = None

from datakit import __version__
from datakit.atomic import drop_lock, remove, take_lock, write_text
from datakit.errors import DatakitError
from datakit.progress import null_progress

MARKER = "datakit-fetch.json"
BACKOFF_ENV = "DATAKIT_FETCH_BACKOFF"  # base seconds of the retry backoff (tests set it near 0)
_HEX = {"md5": 32, "sha256": 64}
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16
_MAX_SLEEP = 30.0
LOCK = ".datakit-fetch.lock"
DEFAULT_LIMIT = 1 << 30  # bytes: the most a download of unknown size may take before it is stopped
# Errors of the local disk, not of the network or the archive: retrying cannot help.
_LOCAL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_GZIP_MAGIC = b"\x1f\x8b"
_ZERO_RUN = 4096  # deflate output never holds this many zero bytes in a row; a pre-allocated file does
HTML_PAGE = "the server sent an HTML page (a captive portal or login page?) instead of the archive"


class _Transient(Exception):
    """A failure worth retrying (dropped or refused connection, timeout, 5xx)."""


class _Complete(Exception):
    """The server says the `.part` file already holds the whole resource (416 with the same size)."""


class WriteError(DatakitError):
    """A local file could not be written (disk full, quota, read-only or forbidden destination)."""


def write_error(path, exc: OSError, note: str = "") -> WriteError:
    where = exc.filename or path
    return WriteError(f"{where}: cannot write: {exc.strerror or exc}{note}")


def check_digests(md5: str | None = None, sha256: str | None = None) -> dict[str, str]:
    """{"md5": hex} / {"sha256": hex} from options, lower-cased; bad hex is an error naming the option."""
    expected = {}
    for algo, value in (("md5", md5), ("sha256", sha256)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{_HEX[algo]}}}", value):
            raise DatakitError(f"--{algo} {value!r}: expected {_HEX[algo]} hexadecimal digits")
        expected[algo] = value
    return expected


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> dict[str, str]:
    """MD5 (what CIFAR publishes) and SHA-256 of a file, in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def mismatch(expected: dict[str, str], actual: dict[str, str]) -> str | None:
    """'expected md5 X, got md5 Y' for the first differing digest, or None when all agree."""
    for algo, value in expected.items():
        if actual.get(algo) != value:
            return f"expected {algo} {value}, got {algo} {actual.get(algo)}"
    return None


def backoff_base(backoff: float | None = None) -> float:
    if backoff is not None:
        return float(backoff)
    try:
        return float(os.environ.get(BACKOFF_ENV, "1.0"))
    except ValueError:
        raise DatakitError(f"${BACKOFF_ENV}={os.environ[BACKOFF_ENV]!r}: expected a number of seconds") from None


def _bar(progress, desc: str, total: int | None):
    # tqdm scales bytes to kB/MB with unit_scale; simpler factories (null_progress) take 3 arguments.
    try:
        return progress(desc=desc, total=total, unit="B", unit_scale=True, unit_divisor=1024)
    except TypeError:
        return progress(desc=desc, total=total, unit="B")


def _reason(exc: BaseException, timeout: float | None = None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return text.replace("\n", " ")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of 'bytes START-END/TOTAL' or 'bytes */TOTAL'; None where absent."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _looks_html(head: bytes) -> bool:
    return head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _zero_from(path: Path, chunk: int = 1 << 20) -> int | None:
    """Offset where a run of at least `_ZERO_RUN` zero bytes (or zeros up to the end) begins, else None."""
    run = b"\0" * _ZERO_RUN
    offset, carry = 0, b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            data = carry + block
            i = data.find(run)
            if i >= 0:
                return offset - len(carry) + i
            carry = data[-(_ZERO_RUN - 1):]
            offset += len(block)
    tail = len(carry) - len(carry.rstrip(b"\0"))
    if tail and (tail == offset or tail >= 512):  # a shorter zero tail can be a gzip trailer's size field
        return offset - tail
    return None


def _gzip_problem(path: Path, chunk: int = 1 << 20, max_out: int = 1 << 34) -> str | None:
    """Decompress a gzip file without keeping the output: 'truncated ...', 'corrupt ...' or None."""
    d = zlib.decompressobj(wbits=31)
    read = produced = 0
    with open(path, "rb") as f:
        while not d.eof and (block := f.read(chunk)):
            read += len(block)
            try:
                produced += len(d.decompress(block, chunk))
                while d.unconsumed_tail and not d.eof:
                    produced += len(d.decompress(d.unconsumed_tail, chunk))
                    if produced > max_out:  # a bomb: not a diagnosis this function can give
                        return None
            except zlib.error as exc:
                return f"is corrupt (gzip data error near byte {read}: {exc})"
    return None if d.eof else "is truncated (gzip stream ends early)"


def archive_problem(path: str | os.PathLike) -> str | None:
    """Why a local archive cannot be a whole .tar.gz: an HTML page, empty, zero-filled, a cut or corrupt
    gzip stream; None when none of these is found. Costs one decompression pass: call it on failure."""
    path = Path(path)
    head = _head(path)
    if not head:
        return "is empty"
    if _looks_html(head):
        return "is an HTML page (a captive portal or login page saved in place of the archive?)"
    zeros = _zero_from(path)
    if zeros is not None:
        return f"is zero-filled from byte {zeros} (an unfinished download?)"
    if head.startswith(_GZIP_MAGIC):
        return _gzip_problem(path)
    return None


def _peel_gzip(part: Path, limit: int) -> bool:
    """Undo a second gzip layer that a server added as Content-Encoding; False (untouched) when the body
    is the archive itself merely labelled gzip-encoded. The decoded file is bounded by `limit` bytes."""
    out = part.with_name(part.name + ".decoded")
    d = zlib.decompressobj(wbits=31)
    written = 0
    try:
        with open(part, "rb") as src:
            first = src.read(_CHUNK)
            if not first.startswith(_GZIP_MAGIC):
                return False
            try:
                if not d.decompress(first, 2).startswith(_GZIP_MAGIC):
                    return False  # one layer down is a tar: the label was wrong, the bytes are the archive
            except zlib.error:
                return False
            d = zlib.decompressobj(wbits=31)
            src.seek(0)
            with open(out, "wb") as dst:
                while not d.eof and (block := src.read(_CHUNK)):
                    try:
                        data = d.decompress(block, _CHUNK)
                        while True:
                            written += len(data)
                            if written > limit:
                                raise DatakitError(f"the gzip-encoded body decodes to more than {limit} bytes")
                            dst.write(data)
                            if not d.unconsumed_tail or d.eof:
                                break
                            data = d.decompress(d.unconsumed_tail, _CHUNK)
                    except zlib.error as exc:
                        raise DatakitError(f"the server's Content-Encoding: gzip does not decode: {exc}") from None
            if not d.eof:
                raise DatakitError("the server's Content-Encoding: gzip stream ends early")
        os.replace(out, part)
        return True
    except OSError as exc:
        raise write_error(out, exc) from None
    finally:
        out.unlink(missing_ok=True)


class _Download:
    """One resumable transfer of `url` into `part`; `attempt()` is one HTTP request.

    `limit` is the most bytes the archive may have (its expected size, or a cap when none is known):
    an announced or received size beyond it stops the transfer for good.
    """

    def __init__(self, url: str, part: Path, timeout: float, progress, limit: int, sized: bool):
        self.url, self.part, self.timeout, self.progress = url, part, timeout, progress
        self.limit, self.sized = limit, sized
        self.total: int | None = None
        self.resumed = 0      # requests answered 206 that continued a partial file
        self.restarted = 0    # partial files thrown away (server ignored Range, or bad range)
        self.encoded = False  # a response said Content-Encoding: gzip
        self.bar = None

    def size(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def _new_bar(self, have: int):
        if self.bar is not None:
            self.bar.close()
        self.bar = _bar(self.progress, f"download {self.part.name[:-5]}", self.total)
        if have:
            self.bar.update(have)

    def _restart(self, why: str):
        self.part.unlink(missing_ok=True)
        self.restarted += 1
        raise _Transient(why)

    def _expected(self) -> str:
        if self.sized:
            return f"the expected {self.limit} bytes"
        return f"the {self.limit}-byte cap on a download of unknown size (give the archive's size to change it)"

    def _too_big(self, received: int):
        self.part.unlink(missing_ok=True)
        raise DatakitError(f"{self.url}: the server sent more than {self._expected()} ({received} bytes received); "
                           f"stopped and deleted {self.part.name}")

    def attempt(self) -> None:
        have = self.size()
        if have > self.limit:  # left by a run that knew no size, or by another file
            self.part.unlink()
            self.restarted += 1
            have = 0
        headers = {"User-Agent": f"datakit/{__version__}", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 416 and have:
                    _, total = _content_range(exc.headers.get("Content-Range"))
                    if total == have:
                        self.total = total
                        raise _Complete() from None
                    self._restart(f"HTTP 416 to a resumed request at byte {have}; starting over")
                if exc.code in _RETRY_STATUS:
                    raise _Transient(_reason(exc)) from None
                raise DatakitError(f"{self.url}: {_reason(exc)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(cause, (str, ssl.SSLCertVerificationError, http.client.InvalidURL)):
                raise DatakitError(f"{self.url}: {_reason(exc)}") from None  # retrying cannot help
            raise _Transient(_reason(exc, self.timeout)) from None
        except ValueError as exc:  # a malformed URL
            raise DatakitError(f"{self.url}: invalid URL: {exc}") from None
        with response:
            if response.status == 206 and have:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    self._restart(f"server answered byte {start} to a request for byte {have}; starting over")
                self.total, mode = total, "ab"
                self.resumed += 1
            elif response.status in (200, 206):
                if have:  # the server ignored Range: start over rather than append a second copy
                    self.restarted += 1
                have, mode = 0, "wb"
                if response.status == 206:
                    _, self.total = _content_range(response.headers.get("Content-Range"))
                else:
                    length = response.headers.get("Content-Length")
                    self.total = int(length) if length and length.isdigit() else None
            else:
                raise DatakitError(f"{self.url}: unexpected HTTP {response.status} {response.reason}")
            self._check_headers(response)
            limit = self.limit
            if self.encoded:  # a second gzip layer adds a little (stored blocks: 5 bytes in 64 KiB)
                limit += self.limit // 1000 + 4096
            if self.total is not None and self.total > limit:
                raise DatakitError(f"{self.url}: the server announces {self.total} bytes, more than "
                                   f"{self._expected()}; refusing the download")
            self._new_bar(have)
            self._receive(response, mode, have, limit)

    def _check_headers(self, response) -> None:
        kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            raise DatakitError(f"{self.url}: {HTML_PAGE} (Content-Type: {kind})")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.encoded = True
        elif encoding != "identity":
            raise DatakitError(f"{self.url}: the server sent the archive with Content-Encoding: {encoding}, which "
                               "datakit does not decode; use another mirror")

    def _receive(self, response, mode: str, have: int, limit: int) -> None:
        f = None
        try:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"connection lost after {have} bytes: {_reason(exc, self.timeout)}") from None
                if not block:
                    break
                if have == 0 and _looks_html(block):
                    raise DatakitError(f"{self.url}: {HTML_PAGE}")
                if have + len(block) > limit:
                    if f is not None:
                        f.close()
                        f = None
                    self._too_big(have + len(block))
                try:
                    if f is None:
                        f = open(self.part, mode, buffering=0)
                    view = memoryview(block)
                    while view:
                        view = view[f.write(view):]
                except OSError as exc:
                    kept = f"; {self.size()} bytes kept there, a rerun resumes from them" if self.size() else ""
                    raise write_error(self.part, exc, kept) from None
                have += len(block)
                self.bar.update(len(block))
        finally:
            if f is not None:
                f.close()
        if self.total is not None and have < self.total:
            raise _Transient(f"connection closed after {have} of {self.total} bytes")
        if self.total is not None and have > self.total:
            self._restart(f"received {have} bytes, more than the announced {self.total}; starting over")


def download(url: str, path: str | os.PathLike, *, expected: dict[str, str] | None = None, size: int | None = None,
             limit: int | None = None, tries: int = 5, backoff: float | None = None, timeout: float = 30.0,
             progress=null_progress) -> dict:
    """Download `url` to `path` through `path.part`, resuming after drops; verify `size` and `expected` digests.

    `tries` bounds consecutive failed attempts that add no new bytes (an attempt that gets further than
    any before counts as the first), so a long download on a flaky link still completes. Sleeps
    `backoff * 2**(failures-1)` seconds (capped at 30) between attempts; `backoff` defaults to
    $DATAKIT_FETCH_BACKOFF or 1. A transfer that passes `size` (or, when no size is known, `limit`,
    default `DEFAULT_LIMIT`) is stopped and its `.part` deleted. A body the server gzipped a second time
    (Content-Encoding: gzip over a .gz) is decoded. A local write error (disk full, read-only) keeps the
    `.part` for the next run. Returns {"bytes", "attempts", "resumed", "restarted", "decoded", "md5", "sha256"}.
    """
    path = Path(path)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DatakitError(f"{url}: only http:// and https:// URLs can be downloaded (use --from-archive for a local file)")
    if tries < 1:
        raise DatakitError(f"tries={tries}: expected at least 1")
    for name, value in (("size", size), ("limit", limit)):
        if value is not None and value < 1:
            raise DatakitError(f"{name}={value}: expected a positive number of bytes")
    base = backoff_base(backoff)
    part = path.with_name(path.name + ".part")
    cap = size if size is not None else (limit or DEFAULT_LIMIT)
    job = _Download(url, part, timeout, progress, cap, size is not None)
    attempts, failures, best = 0, 0, job.size()
    try:
        while True:
            attempts += 1
            try:
                job.attempt()
                break
            except _Complete:
                break
            except _Transient as exc:
                have = job.size()
                if have > best:
                    best, failures = have, 1
                else:
                    failures += 1
                if failures >= tries:
                    kept = f"; {have} bytes kept in {part} for the next run" if have else ""
                    raise DatakitError(f"{url}: {exc} (gave up after {attempts} attempts{kept})") from None
                time.sleep(min(_MAX_SLEEP, base * 2 ** (failures - 1)))
    finally:
        if job.bar is not None:
            job.bar.close()
    decoded = False
    if job.encoded:
        try:
            decoded = _peel_gzip(part, cap)
        except WriteError:
            raise
        except DatakitError as exc:
            part.unlink(missing_ok=True)
            raise DatakitError(f"{url}: {exc}; deleted the download") from None
    digests = hash_file(part)
    got = part.stat().st_size
    problem = mismatch(expected or {}, digests)
    if size is not None and got != size:
        problem = (f"{problem}; " if problem else "") + f"{got} bytes, not the expected {size}"
    if problem:
        what = "checksum mismatch" if mismatch(expected or {}, digests) else "size mismatch"
        if job.encoded:
            problem += " (the server labelled the body Content-Encoding: gzip" + (", decoded once)" if decoded else ")")
        elif _looks_html(_head(part)):
            what = HTML_PAGE
        part.unlink(missing_ok=True)
        raise DatakitError(f"{url}: {what}: {problem}; deleted the download")
    try:
        os.replace(part, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    return {"bytes": got, "attempts": attempts, "resumed": job.resumed, "restarted": job.restarted,
            "decoded": decoded, **digests}


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = Path(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in parts:
        return "would land outside the folder ('..')"
    if member.issym() or member.islnk():
        return f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    if not (member.isreg() or member.isdir()):
        return "is a device, FIFO or other special file"
    return None


def _unreadable(archive: Path, reason: str) -> str:
    found = archive_problem(archive)
    return f"{archive}: not a readable tar archive: " + (f"it {found}" if found else reason)


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike, progress=null_progress) -> int:
    """Extract a tar archive (any compression) into `target`; returns the number of members.

    Refuses the whole archive at the first member with an absolute or `..` path, a link, or a special
    file; the caller extracts into a temporary folder and deletes it on failure, so nothing escapes
    and nothing half-extracted stays behind. An archive that cannot be read is diagnosed (HTML page,
    zero-filled, gzip stream cut short); a file that cannot be written raises `WriteError`.
    """
    archive, target = Path(archive), Path(target)
    head = _head(archive)
    if not head.strip(b"\0"):  # tarfile reads zeros as an empty archive, not an error
        raise DatakitError(_unreadable(archive, "empty file"))
    count = 0
    current = None
    bar = progress(desc=f"extract {archive.name}", total=None, unit="file")

    def checked(tar: tarfile.TarFile):
        nonlocal count, current
        for member in tar:
            problem = _member_problem(member)
            if problem:
                raise DatakitError(f"{archive}: member {member.name!r} {problem}; refusing the archive")
            count += 1
            bar.update(1)
            current = member
            yield member

    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, members=checked(tar), filter="data")
            # Read the compressed stream to its end: tarfile stops at the end-of-archive blocks, and zeros
            # decoded from a zero-filled tail can look like them; the gzip trailer's CRC cannot.
            while tar.fileobj.read(1 << 20):
                pass
    except DatakitError:
        raise
    except OSError as exc:
        if exc.errno in _LOCAL_ERRNO:
            where = target / current.name if current is not None else target
            raise write_error(where, exc) from None
        raise DatakitError(_unreadable(archive, _reason(exc))) from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DatakitError(_unreadable(archive, _reason(exc))) from None
    finally:
        bar.close()
    return count


def _tree_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def installed(folder: str | os.PathLike) -> dict | None:
    """The marker of a complete install at `folder` (every recorded file present with its size), else None."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        for name, size in files.items():
            p = folder / name
            if not p.is_file() or p.stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker


@contextmanager
def dest_lock(folder: str | os.PathLike, what: str = "fetch"):
    """Hold an exclusive flock on `folder/.datakit-fetch.lock` for the block, or refuse at once.

    The kernel drops a flock when its holder exits, even by kill -9, so a dead fetch never leaves the
    folder locked. The file (holding the pid, for the message) is removed while still locked; a waiter
    that opened it before the removal notices the inode changed and locks the new file instead.
    """
    folder = Path(folder)
    path = folder / LOCK
    if fcntl is None:
        yield
        return
    try:
        fd = take_lock(path, lambda pid: f"{folder}: another {what} (pid {pid}) is writing into this folder; wait "
                                         "for it to finish, or choose another destination")
    except OSError as exc:
        raise write_error(path, exc, " (the lock that keeps two fetches apart)") from None
    try:
        yield
    finally:
        drop_lock(fd, path)


def install_archive(dest: str | os.PathLike, folder: str, *, archive_name: str, url: str | None = None,
                    from_archive: str | os.PathLike | None = None, expected: dict[str, str] | None = None,
                    size: int | None = None, limit: int | None = None, check: Callable[[Path], dict] | None = None,
                    tries: int = 5, backoff: float | None = None, timeout: float = 30.0,
                    progress=null_progress) -> dict:
    """Make `dest/folder` hold the tree of an archive's top folder `folder`, or find it already there.

    The archive comes from `url` (downloaded into `dest`, deleted after extraction) or from a local
    `from_archive` (never modified). `size` and `expected` digests are verified before extraction
    (`limit` caps a download of unknown size); `check(tree)` validates the extracted tree (raising
    DatakitError) and returns facts stored in the marker. A complete install whose recorded digests
    differ from `expected` is an error, not a silent reuse. One fetch at a time per `dest` (`dest_lock`).
    A disk that fills up or refuses writes during extraction keeps a verified download in `dest` for
    the next run. Returns the marker plus {"folder", "fetched": bool, "download": stats or None}.
    """
    dest = Path(dest).expanduser()
    final = dest / folder
    expected = expected or {}
    reused = _reuse(final, expected)
    if reused is not None:
        return reused
    if (url is None) == (from_archive is None):
        raise DatakitError("give exactly one of a URL and a local archive")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatakitError(f"{dest}: cannot create the destination folder: {exc.strerror}") from None
    with dest_lock(dest):
        reused = _reuse(final, expected)  # a fetch that held the lock just before may have finished
        if reused is not None:
            return reused
        return _install(dest, folder, archive_name, url, from_archive, expected, size, limit, check,
                        tries, backoff, timeout, progress)


def _reuse(final: Path, expected: dict[str, str]) -> dict | None:
    marker = installed(final)
    if marker is None:
        return None
    recorded = marker.get("archive", {})
    for algo, value in expected.items():
        if recorded.get(algo) != value:
            raise DatakitError(f"{final}: already holds a data set extracted from an archive with {algo} "
                               f"{recorded.get(algo)}, not the requested {value}; remove the folder or "
                               "choose another destination to fetch this one")
    return {**marker, "folder": str(final), "fetched": False, "download": None}


def _install(dest, folder, archive_name, url, from_archive, expected, size, limit, check, tries, backoff, timeout,
             progress) -> dict:
    final = dest / folder
    stats = None
    if from_archive is not None:
        archive = Path(from_archive).expanduser()
        if not archive.is_file():
            raise DatakitError(f"{archive}: no such archive file")
        got = archive.stat().st_size
        if size is not None and got != size:
            found = archive_problem(archive)
            raise DatakitError(f"{archive}: {found + '; ' if found else ''}{got} bytes, not the expected {size}")
        digests = hash_file(archive)
        problem = mismatch(expected, digests)
        if problem:
            found = archive_problem(archive)
            raise DatakitError(f"{archive}: {found + '; ' if found else ''}checksum mismatch: {problem}")
        source = str(archive)
    else:
        archive = dest / archive_name
        digests = hash_file(archive) if archive.is_file() else None  # verified by an interrupted run
        if (digests is None or not expected or mismatch(expected, digests)
                or (size is not None and archive.stat().st_size != size)):
            remove(archive)
            stats = download(url, archive, expected=expected, size=size, limit=limit, tries=tries, backoff=backoff,
                             timeout=timeout, progress=progress)
            digests = {"md5": stats["md5"], "sha256": stats["sha256"]}
        source = url
    size = archive.stat().st_size

    tmp = dest / f".{folder}.extract-{os.getpid()}"
    trash = dest / f".{folder}.old-{os.getpid()}"
    keep = False  # a verified download survives a full or read-only disk: the rerun needs no network
    try:
        remove(tmp)
        tmp.mkdir()
        safe_extract(archive, tmp, progress=progress)
        tree = tmp / folder
        if not tree.is_dir() or tree.is_symlink():
            found = sorted(p.name for p in tmp.iterdir())[:5]
            raise DatakitError(f"{source}: the archive has no top folder {folder}/ (found: {', '.join(found) or 'nothing'})")
        facts = check(tree) if check else {}
        marker = {"folder": folder, "archive": {"name": Path(source).name, "source": source, "bytes": size, **digests},
                  "files": _tree_sizes(tree), **facts}
        write_text(tree / MARKER, json.dumps(marker, indent=2) + "\n")
        if final.exists() or final.is_symlink():  # an incomplete or unmarked earlier copy
            os.replace(final, trash)
        os.replace(tree, final)
    except (WriteError, OSError) as exc:
        local = isinstance(exc, WriteError) or exc.errno in _LOCAL_ERRNO
        keep = local and from_archive is None and bool(expected) and archive.is_file()
        note = (f"; nothing was installed, the verified download is kept in {archive} (free space or fix the "
                "destination and run again: no download needed)" if keep else "; nothing was installed")
        if isinstance(exc, WriteError):
            raise WriteError(f"{exc}{note}") from None
        raise write_error(tmp, exc, note) from None
    finally:
        remove(tmp)
        remove(trash)
        if from_archive is None and not keep:
            # A download that failed verification is already gone; one that extracted (or failed to) is
            # not needed again: the marker records its checksums.
            remove(archive)
    return {**marker, "folder": str(final), "fetched": True, "download": stats}
