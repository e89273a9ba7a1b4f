"""Past one machine: TensorFlow's tf.data service (`tf.data.experimental.service`) for datakit pipelines.

A dispatcher hands out work; workers run the input pipeline (reading and augmenting) and stream
elements to the trainers. datakit does not distribute anything itself: it starts TensorFlow's
servers (`serve_dispatcher`, `serve_worker`, run by `datakit serve ...`) and applies TensorFlow's
`distribute` transformation to a pipeline (`distribute`), after checking the address and mode and
that the dispatcher answers within a bounded time (TensorFlow's client itself keeps retrying).

Processing modes (TensorFlow's names):
- "parallel_epochs": every worker runs the whole dataset; the trainer gets the union of their
  streams. A worker that dies simply stops contributing; the others keep going.
- "distributed_epoch": the dispatcher splits the source (files, ranges) across the workers, so each
  element is delivered once per epoch while no worker fails. Splits held by a worker that dies are
  not re-delivered (at-most-once), and (TensorFlow 2.21, observed) the trainer's iterator then does
  not reach the end of that epoch: it keeps waiting for the dead worker's task.
The files a pipeline reads are opened by the workers: they need the same path on every worker.
"""

from __future__ import annotations

import errno
import re
import signal
import socket
import sys
import threading
import time
from typing import Callable

from datakit.errors import DatakitError

MODES = ("parallel_epochs", "distributed_epoch")
DEFAULT_DISPATCHER_PORT = 5050
CONNECT_TIMEOUT = 5.0

_ADDRESS = re.compile(r"^(?:(?P<proto>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d+)$")


def _tf():
    import tensorflow as tf

    return tf


def parse_address(text: str, what: str = "service") -> tuple[str, int]:
    """'grpc://HOST:PORT' or 'HOST:PORT' -> (host, port); anything else is a one-line error."""
    m = _ADDRESS.match(str(text or "").strip())
    if not m:
        raise DatakitError(f"{what} address {text!r}: expected grpc://HOST:PORT or HOST:PORT")
    if m.group("proto") not in (None, "grpc"):
        raise DatakitError(f"{what} address {text!r}: protocol {m.group('proto')!r} is not supported "
                           "(the tf.data service speaks grpc://)")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise DatakitError(f"{what} address {text!r}: port {port} is outside 1..65535")
    return m.group("host").strip("[]"), port


def target(service: str) -> str:
    """The 'grpc://HOST:PORT' form TensorFlow expects as `service`."""
    host, port = parse_address(service)
    return f"grpc://{_join(host, port)}"


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_reachable(service: str, timeout: float = CONNECT_TIMEOUT, what: str = "dispatcher") -> None:
    """Raise DatakitError within ~`timeout` seconds when nothing accepts TCP connections at the address.

    TensorFlow's client would otherwise retry the dispatcher silently for a long time (a hang from the
    user's point of view). A TCP connect proves something listens there, not that it is a dispatcher.
    """
    host, port = parse_address(service, what)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.timeout:
        reason = f"no answer within {timeout:g} s"
    except socket.gaierror as exc:
        reason = f"cannot resolve host {host!r} ({exc.strerror or exc})"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise DatakitError(f"{what} grpc://{_join(host, port)} unreachable: {reason} "
                       f"(is `datakit serve dispatcher --port {port}` running there?)")


def check_mode(processing_mode: str) -> str:
    if processing_mode not in MODES:
        raise DatakitError(f"processing_mode {processing_mode!r}: expected one of {', '.join(MODES)}")
    return processing_mode


def distribute(dataset, service: str, processing_mode: str = "parallel_epochs", job_name: str | None = None,
               timeout: float = CONNECT_TIMEOUT, compression: str | None = None):
    """`dataset` with its processing moved to the tf.data service at `service` (grpc://HOST:PORT).

    Everything before this call runs on the workers (so the files it reads must exist there);
    iterating the result asks the dispatcher for a job and streams the workers' elements.
    `job_name` lets several trainers share one job (each element goes to one of them).
    compression: None (default) or "AUTO" (TensorFlow's default, snappy). Augmented float32 pixels
    gain little from it and it costs CPU at both ends: measured on this 2-core machine, CIFAR batches
    through one local worker arrived at ~69k images/s without and ~35k with; "AUTO" may still pay on
    a slow network.
    """
    check_mode(processing_mode)
    address = target(service)
    if job_name is not None and not str(job_name).strip():
        raise DatakitError("job_name must be a non-empty string or None")
    check_reachable(address, timeout)
    tf = _tf()
    if compression not in (None, "AUTO"):
        raise DatakitError(f"compression {compression!r}: expected None or 'AUTO'")
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=processing_mode, service=address, job_name=job_name, compression=compression))


def record_chunks(files, record_bytes: int, chunk: int = 1000, cycle_length: int = 1):
    """Raw records of fixed-length record files, as a dataset whose *splits* are chunks of `chunk` records.

    Why: under "distributed_epoch" the dispatcher hands out splits of the dataset's source. Over a
    list of files, FixedLengthRecordDataset splits by file (CIFAR-100 train is one file: one worker
    would do everything); here the source is a table of (file, header_bytes, footer_bytes) slices,
    each read by a FixedLengthRecordDataset on a worker. The graph holds the table, not the data.
    cycle_length > 1 interleaves that many chunks (mixes the order); 1 keeps file order.
    """
    import os

    tf = _tf()
    names, heads, tails = [], [], []
    for f in files:
        size = os.path.getsize(f)
        n, rest = divmod(size, record_bytes)
        if rest or n == 0:
            raise DatakitError(f"{f}: {size} bytes is not a positive whole number of {record_bytes}-byte records")
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            names.append(str(f))
            heads.append(a * record_bytes)
            tails.append((n - b) * record_bytes)
    table = tf.data.Dataset.from_tensor_slices((names, tf.constant(heads, tf.int64), tf.constant(tails, tf.int64)))

    def read(name, head, tail):
        return tf.data.FixedLengthRecordDataset(name, record_bytes, header_bytes=head, footer_bytes=tail)

    if cycle_length > 1:
        return table.interleave(read, cycle_length=cycle_length, block_length=1)
    return table.flat_map(read)


# ---------------------------------------------------------------- servers


def _check_dispatcher_options(port: int, work_dir: str | None, fault_tolerant: bool) -> None:
    if not 0 <= int(port) < 65536:
        raise DatakitError(f"port={port}: expected 0 (any free port) or 1..65535", param="port")
    if fault_tolerant and not work_dir:
        raise DatakitError("--fault-tolerant needs --work-dir DIR (the dispatcher journals its state there)")


def dispatcher_config(port: int = DEFAULT_DISPATCHER_PORT, work_dir: str | None = None, fault_tolerant: bool = False):
    """DispatcherConfig; with fault_tolerant, the dispatcher journals its state in work_dir before answering."""
    _check_dispatcher_options(port, work_dir, fault_tolerant)
    return _tf().data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=str(work_dir) if work_dir else None, fault_tolerant_mode=bool(fault_tolerant))


def _worker_kwargs(dispatcher: str, port: int, worker_address: str | None) -> dict:
    """Checked WorkerConfig arguments (no TensorFlow import, so bad options fail fast)."""
    host, dport = parse_address(dispatcher, "dispatcher")
    if not 0 <= int(port) < 65536:
        raise DatakitError(f"port={port}: expected 0 (any free port) or 1..65535", param="port")
    kw = {"dispatcher_address": _join(host, dport), "port": int(port)}
    if worker_address:
        if not re.match(r"^[A-Za-z0-9_.\-\[\]:]+$", worker_address) or worker_address.count(":") == 1:
            raise DatakitError(f"worker_address={worker_address!r}: expected a host name or IP (no port)",
                               param="worker_address")
        wa = f"[{worker_address}]" if ":" in worker_address and not worker_address.startswith("[") else worker_address
        kw.update(worker_address=f"{wa}:%port%", data_transfer_address=f"{wa}:%dts_port%")
    return kw


def worker_config(dispatcher: str, port: int = 0, worker_address: str | None = None):
    """WorkerConfig; `worker_address` is the host name trainers use to reach this worker (default localhost)."""
    kw = _worker_kwargs(dispatcher, port, worker_address)
    return _tf().data.experimental.service.WorkerConfig(**kw)


def check_port_free(port: int, what: str) -> None:
    """gRPC binds with SO_REUSEPORT, so a second server on a busy port would start silently and share it."""
    if not port:
        return
    for family, addr in ((socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            sock.bind(addr)
            return
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DatakitError(f"{what}: port {port} is already in use (another dispatcher or worker?); "
                                   "pick another --port") from None
        finally:
            sock.close()


def _start(make, what: str):
    try:
        return make()
    except Exception as exc:  # tf.errors.* from the gRPC server start
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatakitError(f"cannot start the {what}: {msg}") from None


def start_dispatcher(port: int = DEFAULT_DISPATCHER_PORT, work_dir: str | None = None, fault_tolerant: bool = False):
    """A started DispatchServer (in this process); `bound_port(server)` is the real port."""
    _check_dispatcher_options(port, work_dir, fault_tolerant)
    check_port_free(int(port), "dispatcher")
    config = dispatcher_config(port, work_dir, fault_tolerant)
    tf = _tf()
    return _start(lambda: tf.data.experimental.service.DispatchServer(config), f"dispatcher on port {port}")


def start_worker(dispatcher: str, port: int = 0, worker_address: str | None = None,
                 connect_timeout: float = 60.0):
    """A started WorkerServer registered with `dispatcher`, which must answer within `connect_timeout` s."""
    _worker_kwargs(dispatcher, port, worker_address)
    check_port_free(int(port), "worker")
    _wait_reachable(dispatcher, connect_timeout)
    config = worker_config(dispatcher, port, worker_address)
    tf = _tf()
    return _start(lambda: tf.data.experimental.service.WorkerServer(config), f"worker on port {port}")


def _wait_reachable(address: str, timeout: float) -> None:
    """Retry the TCP check until `timeout` (workers may start a little before their dispatcher)."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            return check_reachable(address, timeout=min(CONNECT_TIMEOUT, max(0.5, deadline - time.monotonic())))
        except DatakitError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def bound_port(server) -> int:
    return int(server._server.bound_port())


def num_workers(dispatcher_server) -> int:
    return int(dispatcher_server._num_workers())


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_until_signalled(describe: Callable[[], str | None] | None = None, log: Callable[[str], None] = _log,
                        poll: float = 0.5) -> str:
    """Block until SIGINT or SIGTERM; returns the signal's name.

    `describe()` is polled and logged whenever its answer changes (e.g. the dispatcher's worker count).
    Signal handlers can only be installed from the main thread; elsewhere this waits for KeyboardInterrupt.
    """
    stop = threading.Event()
    got: list[str] = []

    def handler(signum, _frame):
        got.append(signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    last = None
    try:
        while not stop.wait(poll):
            if describe is not None:
                now = describe()
                if now != last and now is not None:
                    log(now)
                    last = now
    except KeyboardInterrupt:
        got.append("SIGINT")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return got[0] if got else "SIGINT"


_SERVING: list = []


def _end_process_at_exit(server) -> None:
    """Leave `server` running until the process ends, then end it with os._exit(0) (stdio flushed first).

    Why not server.stop(): TensorFlow's stop waits for the requests in flight (observed ~10 s while a
    trainer still streams), holding the GIL, so it can neither be bounded nor interrupted, and the
    server's destructor calls it again at interpreter exit. Exiting closes the sockets at once: a worker
    holds nothing worth draining (TensorFlow: workers may be freely restarted or removed), and a
    fault-tolerant dispatcher has journaled its state before answering each request.
    """
    import atexit
    import os

    def _exit() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(0)

    _SERVING.append(server)
    if len(_SERVING) == 1:
        atexit.register(_exit)


def serve_dispatcher(port: int = DEFAULT_DISPATCHER_PORT, work_dir: str | None = None, fault_tolerant: bool = False,
                     on_ready: Callable[[dict], None] | None = None, log: Callable[[str], None] = _log) -> dict:
    """Run a dispatcher in the foreground until SIGINT/SIGTERM; logs where it listens and its worker count.

    Meant to own its process: after it returns, the process ends with exit status 0 when Python exits
    (see `_end_process_at_exit`)."""
    server = start_dispatcher(port, work_dir, fault_tolerant)
    info = {"role": "dispatcher", "port": bound_port(server),
            "address": f"grpc://{_join(socket.gethostname(), bound_port(server))}",
            "work_dir": str(work_dir) if work_dir else None, "fault_tolerant": bool(fault_tolerant)}
    log(f"dispatcher listening on port {info['port']} (workers and trainers use {info['address']}"
        f"{'; journal in ' + info['work_dir'] if fault_tolerant else ''})")
    if on_ready:
        on_ready(dict(info))
    _end_process_at_exit(server)
    info["stopped_by"] = run_until_signalled(lambda: f"dispatcher: {num_workers(server)} worker(s) registered", log)
    log(f"dispatcher stopped ({info['stopped_by']})")
    return info


def serve_worker(dispatcher: str, port: int = 0, worker_address: str | None = None, connect_timeout: float = 60.0,
                 on_ready: Callable[[dict], None] | None = None, log: Callable[[str], None] = _log) -> dict:
    """Run a worker in the foreground until SIGINT/SIGTERM (owns its process, like `serve_dispatcher`)."""
    server = start_worker(dispatcher, port, worker_address, connect_timeout)
    host = worker_address or "localhost"
    info = {"role": "worker", "port": bound_port(server), "address": _join(host, bound_port(server)),
            "dispatcher": target(dispatcher)}
    log(f"worker listening on {info['address']} (dispatcher {info['dispatcher']})")
    if on_ready:
        on_ready(dict(info))
    _end_process_at_exit(server)
    info["stopped_by"] = run_until_signalled(None, log)
    log(f"worker stopped ({info['stopped_by']})")
    return info
