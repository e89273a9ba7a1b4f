"""Shared fixtures: small synthetic UTKFace folders with every quirk of a real dump."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def utk_src(tmp_path_factory):
    """A nasty UTKFace-style folder: 12 clean 64-px pictures per race x gender cell plus every quirk."""
    from datakit.testing import synthetic

    dest = tmp_path_factory.mktemp("utk-src")
    info = synthetic.make_utk_folder(dest, per_cell=12, races=(0, 1, 2, 3), seed=7, broken=True, size=64)
    return dest, info


@pytest.fixture(scope="session")
def utk_build(utk_src, tmp_path_factory):
    """build-utk of `utk_src` at its native size (plain JPEGs are copied byte for byte)."""
    from datakit.datasets import utk

    src, info = utk_src
    out = tmp_path_factory.mktemp("utk-build") / "out"
    manifest = utk.build(src, out, per_class=10, size=64, val_fraction=0.2, test_fraction=0.1, seed=3, workers=2)
    return src, out, manifest, info


def synthetic_build(tmp_path_factory, name: str, per_cell: int, size: int, val_fraction: float, seed: int,
                    src_seed: int):
    """A clean build-utk output of a synthetic folder (all three formats): the shared fixture recipe."""
    from datakit.testing import synthetic
    from datakit.datasets import utk

    src = tmp_path_factory.mktemp(f"{name}-src")
    synthetic.make_utk_folder(src, per_cell=per_cell, seed=src_seed, size=size)
    out = tmp_path_factory.mktemp(f"{name}-build") / "out"
    utk.build(src, out, per_class=per_cell, size=size, val_fraction=val_fraction, seed=seed, workers=2)
    return out


def run_cli(capsys, *argv):
    """(exit code, the --json object or stdout text, stderr) of one `datakit` command run in-process."""
    import json

    from datakit_cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if "--json" in argv else captured.out, captured.err


class SerialExecutor:
    """An executor that runs each task at once in the calling thread (map and submit), so that an
    alarm interrupts a read that blocks and the order of reads is the order of calls."""

    map = staticmethod(map)

    @staticmethod
    def submit(fn, *args):
        from concurrent.futures import Future

        done = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            done.set_exception(exc)
        return done
