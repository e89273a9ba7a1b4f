"""Safe extraction and --from-archive: hostile members are refused, nothing escapes DIR, nothing half-done stays."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from datakit.datasets import cifar
from datakit import fetch
from datakit.testing import synthetic_cifar
from datakit.errors import DatakitError
from datakit_cli.main import main


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"owned\n", link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    else:
        data = None
    return info, data


def hostile_tarball(tmp_path, *extra) -> dict:
    return synthetic_cifar.make_cifar10_tarball(tmp_path / "hostile.tar.gz", train_per_batch=4, test=3,
                                                extra=list(extra))


def assert_refused(tmp_path, info, match):
    """The archive is refused; DIR has no data set folder and no leftovers; nothing was written beside DIR."""
    dest = tmp_path / "box" / "dest"
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(DatakitError, match=match):
        cifar.fetch("cifar10", dest, from_archive=info["path"])
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before] == ["box", "box/dest"]  # only the (empty) destination
    assert (tmp_path / "hostile.tar.gz").is_file()  # a local archive is never deleted


@pytest.mark.parametrize("name", ["../evil.txt", "cifar-10-batches-bin/../../evil.txt", "../../box/evil.txt"])
def test_member_escaping_the_folder(tmp_path, name):
    info = hostile_tarball(tmp_path, member(name))
    assert_refused(tmp_path, info, r"outside the folder")
    assert not list(tmp_path.rglob("evil.txt"))


def test_absolute_member(tmp_path):
    target = tmp_path / "abs-evil.txt"
    info = hostile_tarball(tmp_path, member(str(target)))
    assert_refused(tmp_path, info, "absolute path")
    assert not target.exists()


@pytest.mark.parametrize("kind,link,what", [
    (tarfile.SYMTYPE, "/etc/passwd", "symbolic link"),
    (tarfile.SYMTYPE, "data_batch_1.bin", "symbolic link"),  # even one pointing inside is refused
    (tarfile.LNKTYPE, "cifar-10-batches-bin/data_batch_1.bin", "hard link"),
    (tarfile.CHRTYPE, "", "device"),
    (tarfile.FIFOTYPE, "", "device, FIFO"),
])
def test_links_and_special_files(tmp_path, kind, link, what):
    info = hostile_tarball(tmp_path, member("cifar-10-batches-bin/extra", kind, link=link))
    assert_refused(tmp_path, info, what)


def test_symlink_then_write_through_it(tmp_path):
    """The classic two-step escape: a link to outside, then a file 'inside' the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    info = hostile_tarball(tmp_path, member("cifar-10-batches-bin/sub", tarfile.SYMTYPE, link=str(outside)),
                           member("cifar-10-batches-bin/sub/pwned.txt"))
    with pytest.raises(DatakitError, match="symbolic link"):
        cifar.fetch("cifar10", tmp_path / "dest", from_archive=info["path"])
    assert list(outside.iterdir()) == []


def test_refused_archive_leaves_previous_complete_copy_alone(tmp_path):
    good = synthetic_cifar.make_cifar10_tarball(tmp_path / "good.tar.gz", train_per_batch=5, test=5)
    cifar.fetch("cifar10", tmp_path / "dest", from_archive=good["path"])
    folder = tmp_path / "dest" / "cifar-10-batches-bin"
    (folder / "test_batch.bin").unlink()  # incomplete: the next run will try to replace it
    bad = hostile_tarball(tmp_path, member("../evil.txt"))
    with pytest.raises(DatakitError):
        cifar.fetch("cifar10", tmp_path / "dest", from_archive=bad["path"])
    assert (folder / "data_batch_1.bin").is_file()  # the old folder was not touched by the refused archive
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["cifar-10-batches-bin"]


def test_from_archive_with_and_without_checksum(tmp_path, capsys):
    info = synthetic_cifar.make_cifar10_tarball(tmp_path / "c.tar.gz", train_per_batch=7, test=5, seed=2)
    code = main(["fetch-cifar10", "--dest", str(tmp_path / "a"), "--from-archive", info["path"], "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"] == {"train": 35, "test": 5} and out["archive"]["md5"] == info["md5"]
    assert out["download"] is None
    code = main(["fetch-cifar10", "--dest", str(tmp_path / "b"), "--from-archive", info["path"],
                 "--md5", info["md5"], "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["fetched"] is True
    wrong = "f" * 64
    code = main(["fetch-cifar10", "--dest", str(tmp_path / "c"), "--from-archive", info["path"],
                 "--sha256", wrong, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and wrong in out["error"] and info["sha256"] in out["error"]
    assert not (tmp_path / "c" / "cifar-10-batches-bin").exists()
    assert (tmp_path / "c.tar.gz").is_file()  # the user's archive is kept


def test_from_archive_missing_or_not_a_tarball(tmp_path):
    with pytest.raises(DatakitError, match="no such archive"):
        cifar.fetch("cifar10", tmp_path / "d", from_archive=tmp_path / "nope.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08 this is not gzip at all")
    with pytest.raises(DatakitError, match="not a readable tar archive"):
        cifar.fetch("cifar10", tmp_path / "d", from_archive=junk)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == []


def test_truncated_archive(tmp_path):
    info = synthetic_cifar.make_cifar10_tarball(tmp_path / "c.tar.gz", train_per_batch=30, test=5)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes((tmp_path / "c.tar.gz").read_bytes()[: info["bytes"] // 2])
    with pytest.raises(DatakitError, match="not a readable tar archive"):
        cifar.fetch("cifar10", tmp_path / "d", from_archive=cut)
    assert list((tmp_path / "d").iterdir()) == []


def _tar_of(tmp_path, folder_name: str, files: dict[str, bytes]):
    path = tmp_path / "custom.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder_name}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_with_truncated_bin_is_refused(tmp_path):
    src = tmp_path / "src"
    synthetic_cifar.make_cifar10_dir(src, train_per_batch=5, test=5)
    folder = src / "cifar-10-batches-bin"
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["data_batch_4.bin"] = files["data_batch_4.bin"][:-7]
    path = _tar_of(tmp_path, "cifar-10-batches-bin", files)
    with pytest.raises(DatakitError, match=r"data_batch_4\.bin: has 15358 bytes, not a whole number of 3073-byte"):
        cifar.fetch("cifar10", tmp_path / "d", from_archive=path)
    assert list((tmp_path / "d").iterdir()) == []


def test_archive_missing_files_or_wrong_folder(tmp_path):
    src = tmp_path / "src"
    synthetic_cifar.make_cifar10_dir(src, train_per_batch=5, test=5)
    files = {p.name: p.read_bytes() for p in (src / "cifar-10-batches-bin").iterdir() if p.name != "test_batch.bin"}
    with pytest.raises(DatakitError, match="lacks test_batch.bin"):
        cifar.fetch("cifar10", tmp_path / "d", from_archive=_tar_of(tmp_path, "cifar-10-batches-bin", files))
    with pytest.raises(DatakitError, match="no top folder cifar-100-binary/"):
        cifar.fetch("cifar100", tmp_path / "d", from_archive=_tar_of(tmp_path, "cifar-10-batches-bin", files))
    assert list((tmp_path / "d").iterdir()) == []


def test_safe_extract_direct(tmp_path):
    """The generic extractor, outside the CIFAR wrapper: plain trees pass, `..` is refused."""
    ok = _tar_of(tmp_path, "top", {"a.txt": b"a", "sub/b.txt": b"b"})
    assert fetch.safe_extract(ok, tmp_path / "out") == 2
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_bytes() == b"b"
    bad = _tar_of(tmp_path, "top", {"../../x.txt": b"x"})
    with pytest.raises(DatakitError, match="outside the folder"):
        fetch.safe_extract(bad, tmp_path / "out2")
    assert not (tmp_path / "x.txt").exists()
