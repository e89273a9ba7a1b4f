"""The command-line layer: --help, --json, error lines and exit codes, and `datakit demo`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from datakit_cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build-utk", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--per-class", "--races", "--size", "--formats", "--val-fraction", "--test-fraction", "--seed",
                   "--workers", "--allow-short", "--overwrite", "--json"):
        assert option in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "build-utk" in capsys.readouterr().out


def test_build_utk_json(utk_src, tmp_path, capsys):
    src, _ = utk_src
    code, out, err = run(capsys, "build-utk", str(src), str(tmp_path / "out"), "--per-class", "3", "--size", "32",
                         "--formats", "tfrecord,hdf5", "--json")
    assert code == 0
    result = json.loads(out)  # exactly one JSON object on stdout
    assert result["ok"] is True and result["command"] == "build-utk"
    assert result["counts"]["train"]["white_male"] + result["counts"]["val"]["white_male"] == 3
    assert set(result["outputs"]) == {"tfrecord", "hdf5"}
    assert result["skipped"] > 0 and result["ignored"] == 3


def test_build_utk_human_output(utk_src, tmp_path, capsys):
    src, _ = utk_src
    code, out, err = run(capsys, "build-utk", str(src), str(tmp_path / "out"), "--per-class", "3", "--size", "32")
    assert code == 0 and "indian_female" in out and "manifest" in out


def test_errors_are_one_line_and_exit_non_zero(utk_src, tmp_path, capsys):
    src, _ = utk_src
    code, out, err = run(capsys, "build-utk", str(src), str(tmp_path / "o"), "--per-class", "999", "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False
    assert len(err.strip().splitlines()) == 1 and "fewer than --per-class 999" in err
    code, out, err = run(capsys, "build-utk", str(tmp_path / "missing"), str(tmp_path / "o"))
    assert code == 1 and "missing: not a folder" in err
    with pytest.raises(SystemExit) as exit_:
        main(["build-utk", str(src), str(tmp_path / "o"), "--races", "0,9,x"])
    assert exit_.value.code == 2
    code, out, err = run(capsys, "build-utk", str(src), str(tmp_path / "o"), "--races", "0,9")
    assert code == 1 and "outside 0-4" in err


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "datakit_cli.main", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("datakit ")


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("3", "3")])
def test_openblas_single_threaded_before_numpy_loads(preset, expected):
    """An idle OpenBLAS helper thread busy-waits on a core the build's workers need: the CLI asks
    for one thread before numpy loads (too late once it has), and leaves a user's own setting."""
    import os

    code = ("import sys, os, datakit_cli.main as m\n"
            "assert 'numpy' not in sys.modules, 'numpy loaded before main()'\n"
            "try:\n    m.main(['build-utk', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == expected
