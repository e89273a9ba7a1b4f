import json

from datakit_cli.main import main


def test_demo_runs_every_step(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    steps = result["steps"]
    assert "build-utk" in steps
    build = steps["build-utk"]["summary"]
    assert all(n == 32 for n in (sum(build["counts"][s][c] for s in build["counts"]) for c in build["classes"]))
    assert (tmp_path / "build-utk" / "build" / "manifest.json").exists()
    trained = steps["train-utk"]
    assert trained["epochs"] == 3 and trained["report"]["model"] == "compact"
    assert trained["report"]["input_shape"] == [42, 42, 3]          # resized to 48 px in the pipeline, cropped 0.88
    assert len(trained["per_class_accuracy"]) == 8
    assert (tmp_path / "train-utk" / "run" / "confusion.png").exists()
