"""tf.data service: `datakit serve` processes on 127.0.0.1, exactly-once, killed workers, bounded failures.

Each worker runs in its own folder holding tag.txt ("w0", "w1", ...); datasets that read the relative
path "tag.txt" therefore say which worker produced each element (the path is opened by the worker).
Every wait is bounded (see tests/service_procs.py); every process is stopped in fixture finalizers.
"""

from __future__ import annotations

import collections
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from datakit import service
from datakit.errors import DatakitError
from service_procs import Cluster, consume, take

pytestmark = pytest.mark.slow


def _worker_dirs(root, n):
    dirs = []
    for i in range(n):
        d = root / f"w{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "tag.txt").write_text(f"w{i}\n")
        dirs.append(d)
    return dirs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    c = Cluster(root / "logs", workers=2, worker_dirs=_worker_dirs(root, 2))
    yield c
    c.stop()


def _tagged(ds):
    import tensorflow as tf

    return ds.map(lambda x: (x, tf.strings.strip(tf.io.read_file("tag.txt"))))


def _run(ds, timeout=60.0):
    """All elements of a finite dataset, within `timeout` seconds."""
    out: queue.Queue = queue.Queue()
    consume(ds, out, threading.Event())
    return take(out, None, timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ checks without servers


def test_addresses_and_modes_are_checked():
    assert service.parse_address("grpc://10.0.0.5:5050") == ("10.0.0.5", 5050)
    assert service.parse_address("node-3.example:6000") == ("node-3.example", 6000)
    assert service.target("[::1]:5050") == "grpc://[::1]:5050"
    for bad in ("", "localhost", "grpc://host", "http://host:5050", "host:0", "host:70000", "host:port"):
        with pytest.raises(DatakitError, match="address"):
            service.parse_address(bad)
    with pytest.raises(DatakitError, match="processing_mode 'epochs'"):
        service.distribute(None, "grpc://127.0.0.1:5050", "epochs")
    with pytest.raises(DatakitError, match="--fault-tolerant needs --work-dir"):
        service.start_dispatcher(0, None, fault_tolerant=True)
    with pytest.raises(DatakitError, match="worker_address"):
        service.worker_config("127.0.0.1:5050", worker_address="host:1234")


def test_unreachable_dispatcher_fails_fast_with_one_line():
    import tensorflow as tf

    port = _free_port()  # nothing listens there any more
    t = time.monotonic()
    with pytest.raises(DatakitError) as err:
        service.distribute(tf.data.Dataset.range(3), f"grpc://127.0.0.1:{port}", "parallel_epochs", timeout=2)
    assert time.monotonic() - t < 10
    assert f"127.0.0.1:{port} unreachable" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatakitError, match="cannot resolve host"):
        service.check_reachable("grpc://no-such-host.invalid:5050", timeout=2)


def test_cli_refuses_bad_setups_quickly(tmp_path):
    """Unreachable dispatcher (worker side), busy port, fault tolerance without work dir: exit 1, one line."""
    port = _free_port()
    cmd = [sys.executable, "-m", "datakit_cli.main", "serve"]
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        cases = [
            (["worker", "--dispatcher", f"127.0.0.1:{port}", "--connect-timeout", "1"], f"127.0.0.1:{port} unreachable"),
            (["dispatcher", "--port", str(busy.getsockname()[1])], "already in use"),
            (["dispatcher", "--fault-tolerant"], "--fault-tolerant needs --work-dir"),
        ]
        for args, message in cases:
            t = time.monotonic()
            r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=60)
            assert r.returncode == 1, (args, r.stderr)
            assert message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
            assert time.monotonic() - t < 30


# ------------------------------------------------------------------ through two worker processes


def test_distributed_epoch_delivers_every_example_once(cluster):
    import tensorflow as tf

    got = _run(service.distribute(_tagged(tf.data.Dataset.range(400)), cluster.address, "distributed_epoch"))
    ids = collections.Counter(int(i) for i, _ in got)
    assert ids == collections.Counter(range(400))
    by_worker = collections.Counter(tag.decode() for _, tag in got)
    assert set(by_worker) == {"w0", "w1"}, by_worker  # really split across both workers


def test_distributed_epoch_of_record_files_with_batches(cluster, tmp_path):
    """Files of fixed-length records (id + payload), batched on the workers: every record once."""
    import tensorflow as tf

    files, n = [], 0
    for f in range(6):
        count = 37 + 11 * f
        ids = np.arange(n, n + count, dtype="<u8")
        records = np.zeros((count, 24), np.uint8)
        records[:, :8] = ids.view(np.uint8).reshape(count, 8)
        records[:, 8:] = (ids[:, None] * 7 + np.arange(16)) % 251
        path = tmp_path / f"part-{f}.bin"
        path.write_bytes(records.tobytes())
        files.append(str(path))
        n += count

    def decode(rec):
        raw = tf.io.decode_raw(rec, tf.uint8)
        return tf.bitcast(tf.reshape(raw[:8], [1, 8]), tf.int64)[0], raw[8:]

    ds = tf.data.FixedLengthRecordDataset(files, 24).map(decode).batch(10)
    got = _run(service.distribute(ds, cluster.address, "distributed_epoch"))
    ids = np.concatenate([b[0] for b in got])
    payload = np.concatenate([b[1] for b in got])
    assert sorted(ids.tolist()) == list(range(n))
    assert np.array_equal(payload, (ids[:, None] * 7 + np.arange(16)) % 251)  # records intact
    assert sum(len(b[0]) < 10 for b in got) <= 2  # each worker may end on a partial batch


def test_parallel_epochs_gives_each_worker_a_full_epoch(cluster):
    import tensorflow as tf

    got = _run(service.distribute(_tagged(tf.data.Dataset.range(150)), cluster.address, "parallel_epochs"))
    per_worker = collections.defaultdict(list)
    for i, tag in got:
        per_worker[tag.decode()].append(int(i))
    assert set(per_worker) == {"w0", "w1"}
    for ids in per_worker.values():
        assert sorted(ids) == list(range(150))


# ------------------------------------------------------------------ datakit.pipelines through the service

BITS = [(10 + 2 * (k // 6), 8 + 2 * (k % 6)) for k in range(12)]  # inside the 24x24 centre crop


def _id_images(n: int) -> np.ndarray:
    """Grey images whose id is written as 12 black/white pixels that survive centre crop + standardization."""
    images = np.full((n, 32, 32, 3), 128, np.uint8)
    for k, (r, c) in enumerate(BITS):
        images[:, r, c, :] = np.where((np.arange(n) >> k) & 1, 255, 0)[:, None]
    return images


def _decode_ids(batch_images) -> np.ndarray:
    x = np.asarray(batch_images)  # [B, 24, 24, 3] standardized: white > 0 > black
    return sum((x[:, r - 4, c - 4, 0] > 0).astype(np.int64) << k for k, (r, c) in enumerate(BITS))


@pytest.fixture(scope="module")
def id_cifar(tmp_path_factory):
    """CIFAR-10 and CIFAR-100 folders whose test split images carry their record index."""
    from datakit.testing import synthetic_cifar

    root = tmp_path_factory.mktemp("id-cifar")
    n = 700  # 3 chunks of pipelines.SERVICE_CHUNK records: splits for both workers
    synthetic_cifar.make_cifar10_dir(root / "c10", train_per_batch=64, test=8)
    (root / "c10" / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(
        synthetic_cifar.encode_records(_id_images(n), np.arange(n) % 10))
    synthetic_cifar.make_cifar100_dir(root / "c100", train=64, test=8)
    (root / "c100" / "cifar-100-binary" / "test.bin").write_bytes(
        synthetic_cifar.encode_records(_id_images(n), np.arange(n) % 20, np.arange(n) % 100))
    return root, n


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_cifar10_eval_split_distributed_epoch_exactly_once(cluster, id_cifar, impl):
    from datakit import pipelines

    root, n = id_cifar
    p = pipelines.cifar10(root / "c10", split="test", batch_size=64, impl=impl, shuffle=False,
                          service=cluster.address, processing_mode="distributed_epoch")
    assert "via tf.data service" in p.source
    assert p.service == cluster.address and p.processing_mode == "distributed_epoch"  # fields, not parsed
    got = _run(p.dataset)
    ids = np.concatenate([_decode_ids(x) for x, _ in got])
    labels = np.concatenate([y for _, y in got])
    assert sorted(ids.tolist()) == list(range(n))  # every example exactly once
    assert np.array_equal(labels, ids % 10)        # and with its own label
    assert all(x.shape[1:] == (24, 24, 3) for x, _ in got)


def test_cifar100_parallel_epochs_gives_two_epochs(cluster, id_cifar):
    from datakit import pipelines

    root, n = id_cifar
    p = pipelines.cifar100(root / "c100", split="test", batch_size=50, label_mode="coarse", shuffle=False,
                           service=cluster.address, processing_mode="parallel_epochs")
    got = _run(p.dataset)
    ids = np.concatenate([_decode_ids(x) for x, _ in got])
    assert collections.Counter(ids.tolist()) == collections.Counter({i: 2 for i in range(n)})  # one epoch per worker
    assert np.array_equal(np.concatenate([y for _, y in got]), ids % 20)


@pytest.fixture
def global_seed():
    """A global TensorFlow seed, as `datakit train` sets: unseeded ops become deterministic, on every worker alike."""
    import tensorflow as tf

    tf.random.set_seed(5)
    yield
    tf.random.set_seed(None)


def test_cifar10_train_augments_on_the_workers(cluster, id_cifar, global_seed):
    """Repeating augmented train batches arrive; the workers draw independently (no duplicate batches)."""
    from datakit import pipelines

    root, _ = id_cifar
    p = pipelines.cifar10(root / "c10", split="train", batch_size=32, seed=3, repeat=True, service=cluster.address)
    assert p.seed is None  # not applied through the service
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = consume(p.dataset, out, stop)
    batches = take(out, 40, 60)
    stop.set()
    thread.join(30)
    x, y = batches[0]
    assert x.shape == (32, 24, 24, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-3)  # standardized on the workers
    digests = {hash(b[0].tobytes()) for b in batches}
    assert len(digests) == len(batches)


def test_parallel_epochs_workers_shuffle_differently(cluster, id_cifar, global_seed):
    """Under a global seed, two workers must still send their epochs in different orders."""
    from datakit import augment, pipelines

    root, n = id_cifar
    p = pipelines.cifar10(root / "c10", split="test", batch_size=50, shuffle=True, augment=augment.Augment().for_eval(),
                          service=cluster.address, processing_mode="parallel_epochs")
    got = _run(p.dataset)
    batches = [frozenset(_decode_ids(x).tolist()) for x, _ in got]
    ids = collections.Counter(i for b in batches for i in b)
    assert ids == collections.Counter({i: 2 for i in range(n)})  # one shuffled epoch per worker
    assert len(set(batches)) == len(batches)  # ...not the same batches twice


def test_utk_through_the_service(cluster, utk_build):
    from datakit import pipelines

    _, out, manifest, _ = utk_build
    for fmt in ("tfrecord", "folders"):
        local = _run(pipelines.utk(out, split="val", format=fmt, batch_size=8).dataset)
        served = _run(pipelines.utk(out, split="val", format=fmt, batch_size=8, service=cluster.address,
                                    processing_mode="distributed_epoch").dataset)
        count = lambda batches: collections.Counter(np.concatenate([y for _, y in batches]).tolist())  # noqa: E731
        assert count(served) == count(local) and sum(count(local).values()) > 0
        assert served[0][0].shape[1:] == local[0][0].shape[1:]
    with pytest.raises(DatakitError, match="hdf5"):
        pipelines.utk(out, split="val", format="hdf5", service=cluster.address)
    with pytest.raises(DatakitError, match="reads files"):
        pipelines.from_arrays(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), service=cluster.address)


def test_train_and_bench_aug_take_service(cluster, utk_build, id_cifar, tmp_path):
    """`datakit train utk --service` (distributed_epoch epochs) and `datakit bench-aug --service` end to end."""
    import json

    _, out, _, _ = utk_build
    cmd = [sys.executable, "-m", "datakit_cli.main"]
    r = subprocess.run(cmd + ["train", "utk", "--data", str(out), "--epochs", "1", "--out", str(tmp_path / "run"),
                              "--service", cluster.address, "--json"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["service"] == cluster.address and result["processing_mode"] == "distributed_epoch"
    assert result["epochs"] == 1
    root, _ = id_cifar
    r = subprocess.run(cmd + ["bench-aug", "--data", str(root / "c10"), "--service", cluster.address, "--batch", "32",
                              "--steps", "3", "--rounds", "1", "--min-seconds", "0.1", "--impl", "fast", "--json"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["service"] == cluster.address and result["results"][0]["images_per_sec"] > 0


# ------------------------------------------------------------------ faults


@pytest.fixture(scope="module")
def kill_cluster(tmp_path_factory):
    """Three workers of their own for the tests that kill one (a dead worker stays on the dispatcher's list)."""
    root = tmp_path_factory.mktemp("service-kill")
    c = Cluster(root / "logs", workers=3, worker_dirs=_worker_dirs(root, 3))
    yield c
    c.stop()


def _stream(c: Cluster, mode: str):
    import tensorflow as tf

    ds = _tagged(tf.data.Dataset.range(10**6)).batch(8)
    if mode == "parallel_epochs":
        ds = ds.repeat()
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = consume(service.distribute(ds, c.address, mode), out, stop)
    return out, stop, thread


def _tag(batch) -> str:
    return batch[1][0].decode()


def _until_from(out, tags: set, timeout: float = 60.0) -> list:
    """Batches until each of `tags` has sent one (workers join a job one by one), within `timeout`."""
    got, deadline = [], time.monotonic() + timeout
    while not tags <= {_tag(b) for b in got}:
        got += take(out, 1, max(0.1, deadline - time.monotonic()))
    return got


def _finish(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(30)


def _live_tags(c: Cluster) -> set:
    return {f"w{i}" for i, w in enumerate(c.workers) if w.proc.poll() is None}


def test_parallel_epochs_survives_a_killed_worker(kill_cluster):
    c = kill_cluster
    victim = c.workers[-1]
    assert victim.proc.poll() is None
    out, stop, thread = _stream(c, "parallel_epochs")
    before = _until_from(out, _live_tags(c))  # every worker feeds the trainer
    victim.kill()  # SIGKILL mid-epoch
    after = take(out, 400, 60)  # the trainer keeps receiving batches...
    _finish(stop, thread)
    assert len(before) > 0
    late = {_tag(b) for b in after[-200:]}  # ...from the survivors, once the victim's in-flight batches are drained
    assert late and late <= _live_tags(c), late


def test_distributed_epoch_with_a_killed_worker_is_at_most_once(kill_cluster):
    """Documented behaviour: survivors take the remaining splits; the dead worker's in-flight ones are lost."""
    c = kill_cluster
    victim = c.workers[1]
    out, stop, thread = _stream(c, "distributed_epoch")
    before = _until_from(out, _live_tags(c))
    victim.kill()
    after = take(out, 400, 60)
    _finish(stop, thread)
    ids = np.concatenate([b[0] for b in before + after])
    assert len(np.unique(ids)) == len(ids)  # never delivered twice
    late = {_tag(b) for b in after[-200:]}
    assert late and late <= _live_tags(c), late


def test_servers_stop_cleanly_on_sigint_and_sigterm(kill_cluster):
    """Last test of the module: SIGINT / SIGTERM stop a worker and the dispatcher, exit 0, final JSON object."""
    c = kill_cluster
    worker = c.workers[0]
    worker.signal(signal.SIGINT)
    c.dispatcher.signal(signal.SIGTERM)
    for server, sig in ((worker, "SIGINT"), (c.dispatcher, "SIGTERM")):
        server.proc.wait(30)
        assert server.proc.returncode == 0, server.tail()
        final = server.stdout()[-1]
        assert final["ok"] is True and final["stopped_by"] == sig
