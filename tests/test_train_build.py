"""`datakit train build` on any manifest-driven build output (not only UTKFace), and `train utk` as its alias."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import synthetic_build

from datakit_cli.main import main


@pytest.fixture(scope="module")
def generic_build(tmp_path_factory):
    """A build-utk output re-labelled as another dataset with other class names (tfrecord only): all a
    `datakit build` output gives the trainer is its manifest, shards and counts."""
    out = synthetic_build(tmp_path_factory, "tb", per_cell=16, size=32, val_fraction=0.25, seed=0, src_seed=4)
    dest = out.parent / "generic"
    shutil.copytree(out, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    names = [f"shape-{i}" for i in range(len(manifest["classes"]))]
    manifest.update(dataset="shapes", classes=names)
    manifest["counts"] = {s: dict(zip(names, c.values())) for s, c in manifest["counts"].items()}
    for key in ("fields", "class_by", "class_keys", "races"):
        manifest.pop(key, None)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest, manifest


def test_train_build_on_a_build_of_another_dataset(generic_build, tmp_path, capsys):
    dest, manifest = generic_build
    code = main(["train", "build", "--data", str(dest), "--epochs", "2", "--batch", "8", "--out",
                 str(tmp_path / "run"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] is True and result["target"] == "build"
    assert result["num_classes"] == len(manifest["classes"]) == 8 and result["chance"] == 0.125
    assert result["train_examples"] == sum(manifest["counts"]["train"].values())  # the dataset's own count
    assert result["epochs"] == 2 and result["input_shape"] == [28, 28, 3]
    assert result["service"] is None and (tmp_path / "run" / "model.keras").is_file()


def test_train_utk_is_an_alias_with_the_same_options(generic_build, tmp_path, capsys):
    from datakit_cli import train as cli_train

    dest, _ = generic_build
    code = main(["train", "utk", "--data", str(dest), "--epochs", "1", "--batch", "8", "--no-augment", "--out",
                 str(tmp_path / "run")])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("utk: model compact on tfrecord, 1 of 1 epochs, batch 8, 8 classes")
    # the same parser options under both names
    import argparse

    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    a = vars(parser.parse_args(["build", "--data", "x", "--format", "hdf5", "--patience", "2"]))
    b = vars(parser.parse_args(["utk", "--data", "x", "--format", "hdf5", "--patience", "2"]))
    assert {k: v for k, v in a.items() if k != "target"} == {k: v for k, v in b.items() if k != "target"}


def test_train_build_refuses_a_build_without_val(generic_build, tmp_path, capsys):
    dest, manifest = generic_build
    bare = tmp_path / "noval"
    shutil.copytree(dest, bare)
    m = dict(manifest, splits=[s for s in manifest["splits"] if s != "val"])
    (bare / "manifest.json").write_text(json.dumps(m))
    code = main(["train", "build", "--data", str(bare), "--json"])
    assert code == 1 and "no val split" in json.loads(capsys.readouterr().out)["error"]
