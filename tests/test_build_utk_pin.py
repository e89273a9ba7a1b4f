"""build-utk's output bytes are pinned: the generic builder must reproduce them exactly.

The expected digests in tests/data/build_utk_pin.json were recorded with the build-utk of commit
4cd048c (before build-utk became a preset of `datakit build`, when it had no near-duplicate
grouping), by running this module as a script there; the test builds with near_duplicates="keep".
They depend on the synthetic fixture's encoder (OpenCV/Pillow JPEG) as installed by the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PIN = Path(__file__).parent / "data" / "build_utk_pin.json"
FIELDS = ("classes", "races", "size", "splits", "counts", "available", "outputs", "skipped", "ignored",
          "duplicates")
CASES = {"native": dict(per_class=10, size=64, val_fraction=0.2, test_fraction=0.1, seed=3),
         "resized": dict(per_class=9, size=48, val_fraction=0.25, test_fraction=0.0, seed=11,
                         races=(0, 1, 2, 3), formats=("tfrecord", "folders"))}


def pinned_build(tmp: Path, case: str, **extra) -> dict:
    from datakit.testing import synthetic
    from datakit.datasets import utk

    src = tmp / "src"
    if not src.exists():
        synthetic.make_utk_folder(src, per_cell=12, races=(0, 1, 2, 3), seed=7, broken=True, size=64)
    out = tmp / f"out-{case}"
    manifest = utk.build(src, out, workers=2, **CASES[case], **extra)
    files = {rel: digest for rel, digest in manifest["files"].items() if not rel.startswith("hdf5/")}
    return {"files": files, **{k: manifest[k] for k in FIELDS}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_utk_output_bytes_equal_the_pinned_build(tmp_path, case):
    expected = json.loads(PIN.read_text())[case]
    got = json.loads(json.dumps(pinned_build(tmp_path, case, near_duplicates="keep")))
    assert set(got["files"]) == set(expected["files"])
    assert got["files"] == expected["files"]
    for key in FIELDS:
        assert got[key] == expected[key], key


if __name__ == "__main__":  # record the pin (once, before the change)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        PIN.write_text(json.dumps({case: pinned_build(Path(tmp), case) for case in sorted(CASES)}, indent=1) + "\n")
    print(f"wrote {PIN}", file=sys.stderr)
