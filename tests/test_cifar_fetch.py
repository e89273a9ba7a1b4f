"""`datakit fetch-cifar10` / `fetch-cifar100` over a loopback HTTP server: drops, resumes, restarts, errors."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import numpy as np
import pytest
from loopback_http import loopback, refused_url  # noqa: F401  (fixture)

from datakit.datasets import cifar
from datakit import fetch
from datakit.testing import synthetic_cifar
from datakit.errors import DatakitError
from datakit_cli.main import main

PATH10 = "/kriz/cifar-10-binary.tar.gz"
PATH100 = "/kriz/cifar-100-binary.tar.gz"


@pytest.fixture(scope="module")
def tarball10(tmp_path_factory):
    path = tmp_path_factory.mktemp("tar10") / "cifar-10-binary.tar.gz"
    info = synthetic_cifar.make_cifar10_tarball(path, train_per_batch=60, test=40, seed=3)
    return {**info, "data": path.read_bytes()}


@pytest.fixture(scope="module")
def tarball100(tmp_path_factory):
    path = tmp_path_factory.mktemp("tar100") / "cifar-100-binary.tar.gz"
    info = synthetic_cifar.make_cifar100_tarball(path, train=120, test=30, seed=4)
    return {**info, "data": path.read_bytes()}


def cli(capsys, *argv) -> tuple[int, dict, str]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def assert_nothing_complete(dest, folder="cifar-10-batches-bin"):
    """No final folder, no final archive: only a .part (resumable) may remain."""
    if not dest.exists():
        return
    names = sorted(p.name for p in dest.iterdir())
    assert folder not in names, names
    assert not [n for n in names if n.endswith(".tar.gz")], names
    assert not [n for n in names if n.startswith(".")], names  # no temporary extraction folder left


def test_plain_download(loopback, tarball10, tmp_path, capsys):
    url = loopback.serve(PATH10, tarball10["data"])
    dest = tmp_path / "dest"
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(dest), "--url", url, "--md5", tarball10["md5"])
    assert code == 0, err
    folder = dest / "cifar-10-batches-bin"
    assert out["folder"] == str(folder) and out["fetched"] is True
    assert out["archive"]["md5"] == tarball10["md5"] and out["archive"]["sha256"] == tarball10["sha256"]
    assert out["counts"] == {"train": 300, "test": 40}
    assert out["download"]["attempts"] == 1 and out["download"]["bytes"] == tarball10["bytes"]
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-bin"]  # archive and .part gone
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt"]:
        assert (folder / name).is_file()
    assert [r["range"] for r in loopback.requests] == [None]
    images, labels = cifar.load(dest, "test")
    assert images.shape == (40, 32, 32, 3) and labels.shape == (40,)


def test_human_output_names_folder_checksum_and_counts(loopback, tarball10, tmp_path, capsys):
    url = loopback.serve(PATH10, tarball10["data"])
    code = main(["fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--sha256", tarball10["sha256"]])
    out = capsys.readouterr().out
    assert code == 0
    assert str(tmp_path / "cifar-10-batches-bin") in out and tarball10["sha256"] in out
    assert "train 300" in out and "test 40" in out


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_resume_after_drops(loopback, tarball10, tmp_path, capsys, mode):
    url = loopback.serve(PATH10, tarball10["data"])
    k = 50_000
    loopback.drop_after, loopback.drop_requests, loopback.drop_mode = k, 3, mode
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", url,
                         "--md5", tarball10["md5"], "--tries", "3")
    assert code == 0, err
    ranges = [r["range"] for r in loopback.requests]
    if mode == "close":  # a clean FIN delivers exactly K bytes per request
        assert ranges == [None, f"bytes={k}-", f"bytes={2 * k}-", f"bytes={3 * k}-"]
    else:  # a reset may lose bytes in flight: the ranges only have to grow
        starts = [0] + [int(r[6:-1]) for r in ranges[1:]]
        assert ranges[0] is None and starts == sorted(starts) and len(ranges) == 4
    assert [r["status"] for r in loopback.requests] == [200, 206, 206, 206]
    assert out["download"]["resumed"] == 3 and out["download"]["restarted"] == 0
    assert out["archive"]["md5"] == tarball10["md5"]
    assert out["counts"] == {"train": 300, "test": 40}


def test_restart_when_server_ignores_range(loopback, tarball10, tmp_path, capsys):
    url = loopback.serve(PATH10, tarball10["data"])
    loopback.drop_after, loopback.drop_requests, loopback.ignore_range = 70_000, 1, True
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--md5", tarball10["md5"])
    assert code == 0, err
    assert [(r["range"], r["status"]) for r in loopback.requests] == [(None, 200), ("bytes=70000-", 200)]
    assert out["download"] == {**out["download"], "restarted": 1, "resumed": 0, "bytes": tarball10["bytes"]}


def test_ignored_range_and_endless_drops_give_up(loopback, tarball10, tmp_path):
    """A server that ignores Range and always drops cannot make progress: bounded tries, not a loop."""
    url = loopback.serve(PATH10, tarball10["data"])
    loopback.drop_after, loopback.drop_requests, loopback.ignore_range = 70_000, 100, True
    with pytest.raises(DatakitError, match="gave up after 3 attempts"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], tries=3, backoff=0)
    assert len(loopback.requests) == 3  # the restarts never get past the first 70,000 bytes
    assert (tmp_path / "cifar-10-binary.tar.gz.part").stat().st_size == 70_000  # one copy, never appended
    assert_nothing_complete(tmp_path)


def test_resume_across_runs_and_complete_part(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    part = tmp_path / "cifar-10-binary.tar.gz.part"
    part.write_bytes(tarball10["data"][:12345])  # left by an interrupted run
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], backoff=0)
    assert loopback.requests[0]["range"] == "bytes=12345-" and result["download"]["resumed"] == 1
    # A .part that already holds everything: the server answers 416, nothing is fetched twice.
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()  # make the folder incomplete
    part.write_bytes(tarball10["data"])
    again = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], backoff=0)
    assert loopback.requests[-1] == {"path": PATH10, "range": f"bytes={tarball10['bytes']}-", "status": 416}
    assert again["fetched"] and (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").is_file()


def test_stale_part_longer_than_file_restarts(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    (tmp_path / "cifar-10-binary.tar.gz.part").write_bytes(b"x" * (tarball10["bytes"] + 10))
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], backoff=0)
    assert result["download"]["restarted"] == 1 and result["archive"]["md5"] == tarball10["md5"]


def test_checksum_mismatch_deletes_download(loopback, tarball10, tmp_path, capsys):
    url = loopback.serve(PATH10, tarball10["data"])
    wrong = hashlib.md5(b"something else").hexdigest()
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--md5", wrong)
    assert code == 1 and out["ok"] is False
    assert wrong in out["error"] and tarball10["md5"] in out["error"] and "mismatch" in out["error"]
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # not even the .part


def test_mirror_without_checksum_uses_pinned_official_md5(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    with pytest.raises(DatakitError, match=f"expected md5 {cifar.CIFAR10.md5}, got md5 {tarball10['md5']}"):
        cifar.fetch("cifar10", tmp_path, url=url, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_404(loopback, tmp_path, capsys):
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", loopback.url("/missing.tar.gz"))
    assert code == 1 and "HTTP 404" in out["error"] and "/missing.tar.gz" in out["error"]
    assert len(err.strip().splitlines()) == 1
    assert len(loopback.requests) == 1  # a 404 is not retried
    assert_nothing_complete(tmp_path)


def test_5xx_retried_then_succeeds(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    loopback.fail_requests, loopback.fail_status = 2, 503
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], tries=3, backoff=0)
    assert [r["status"] for r in loopback.requests] == [503, 503, 200]
    assert result["download"]["attempts"] == 3


def test_5xx_after_retries_fails(loopback, tarball10, tmp_path, capsys):
    url = loopback.serve(PATH10, tarball10["data"])
    loopback.fail_requests, loopback.fail_status = 100, 502
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--tries", "3")
    assert code == 1 and "HTTP 502" in out["error"] and "3 attempts" in out["error"]
    assert len(loopback.requests) == 3
    assert_nothing_complete(tmp_path)


def test_refused_connection(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATAKIT_FETCH_BACKOFF", "0")
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--url", refused_url(), "--tries", "3")
    assert code == 1 and "refused" in out["error"].lower() and "3 attempts" in out["error"]
    assert len(err.strip().splitlines()) == 1
    assert_nothing_complete(tmp_path)


def test_timeout(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    loopback.stall = 1.0
    with pytest.raises(DatakitError, match=r"timed out after 0.2 s"):
        cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], tries=2, timeout=0.2, backoff=0)
    assert_nothing_complete(tmp_path)


def test_rerun_does_no_network_io(loopback, tarball10, tmp_path, capsys, monkeypatch):
    url = loopback.serve(PATH10, tarball10["data"])
    argv = ["fetch-cifar10", "--dest", str(tmp_path), "--url", url, "--md5", tarball10["md5"]]
    assert cli(capsys, *argv)[0] == 0

    def no_network(*args, **kw):
        raise AssertionError("network I/O on a complete destination")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    code, out, err = cli(capsys, *argv)
    assert code == 0 and out["fetched"] is False and out["download"] is None
    assert out["archive"]["md5"] == tarball10["md5"] and out["counts"] == {"train": 300, "test": 40}
    assert len(loopback.requests) == 1


def test_incomplete_folder_is_fetched_again(loopback, tarball10, tmp_path):
    url = loopback.serve(PATH10, tarball10["data"])
    cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], backoff=0)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-100])  # damaged after the fact
    result = cifar.fetch("cifar10", tmp_path, url=url, md5=tarball10["md5"], backoff=0)
    assert result["fetched"] is True and len(loopback.requests) == 2
    assert batch.stat().st_size == 60 * 3073
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]


def test_complete_folder_from_another_archive_is_an_error(loopback, tarball10, tmp_path):
    cifar.fetch("cifar10", tmp_path, from_archive=tarball10["path"])
    with pytest.raises(DatakitError, match="another destination"):
        cifar.fetch("cifar10", tmp_path, md5="0" * 32)


def test_cifar100_download_two_labels(loopback, tarball100, tmp_path, capsys):
    url = loopback.serve(PATH100, tarball100["data"])
    loopback.drop_after, loopback.drop_requests = 40_000, 1
    code, out, err = cli(capsys, "fetch-cifar100", "--dest", str(tmp_path), "--url", url,
                         "--sha256", tarball100["sha256"])
    assert code == 0, err
    folder = tmp_path / "cifar-100-binary"
    assert out["folder"] == str(folder) and out["counts"] == {"train": 120, "test": 30}
    assert out["download"]["resumed"] == 1
    assert len(out["classes"]["fine"]) == 100 and len(out["classes"]["coarse"]) == 20
    for name in ("train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"):
        assert (folder / name).is_file()
    _, fine = cifar.load(tmp_path, "train", label_mode="fine")
    _, coarse = cifar.load(tmp_path, "train", label_mode="coarse")
    assert np.array_equal(synthetic_cifar.FINE_TO_COARSE[fine], coarse)


def test_default_dest_uses_datakit_home(tmp_path, monkeypatch, tarball100):
    monkeypatch.setenv("DATAKIT_HOME", str(tmp_path / "home"))
    assert cifar.default_dest("cifar10") == tmp_path / "home" / "cifar10"
    result = cifar.fetch("cifar100", from_archive=tarball100["path"])
    assert result["folder"] == str(tmp_path / "home" / "cifar100" / "cifar-100-binary")
    monkeypatch.delenv("DATAKIT_HOME")
    assert str(cifar.default_dest("cifar100")).endswith(".cache/datakit/cifar100")


def test_bad_options(tmp_path, capsys):
    code, out, err = cli(capsys, "fetch-cifar10", "--dest", str(tmp_path), "--sha256", "abc")
    assert code == 1 and "--sha256" in out["error"]
    with pytest.raises(SystemExit):
        main(["fetch-cifar10", "--md5", "0" * 32, "--sha256", "0" * 64])
    with pytest.raises(DatakitError, match="only http"):
        fetch.download("ftp://example.org/x", tmp_path / "x")
    for url, reason in (("http://127.0.0.1:abc/x", "nonnumeric port"), ("http:///x", "no host given")):
        with pytest.raises(DatakitError, match=reason) as info:  # not retried: no "gave up after"
            fetch.download(url, tmp_path / "x", backoff=0)
        assert "gave up" not in str(info.value)
