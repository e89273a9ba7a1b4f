"""Human- and machine-readable summaries of a build-utk manifest."""

from __future__ import annotations

from pathlib import Path

from datakit.textfmt import table


def summary(manifest: dict, out) -> dict:
    """The figures a user looks at first (the CLI's --json object and the demo's table)."""
    out = Path(out)
    dup = manifest["duplicates"]
    return {
        "out": str(out),
        "manifest": str(out / "manifest.json"),
        "classes": manifest["classes"],
        "counts": manifest["counts"],
        "available": manifest["available"],
        "skipped": len(manifest["skipped"]),
        "ignored": len(manifest["ignored"]),
        "duplicates_dropped": sum(len(d["dropped"]) for d in dup["identical"]),
        "conflicting_duplicates": len(dup["conflicting"]),
        "outputs": {fmt: str(out / fmt) for fmt in manifest["outputs"]},
    }


def class_table(summary: dict) -> str:
    splits = list(summary["counts"])
    rows = [[name] + [summary["counts"][s].get(name, 0) for s in splits] + [summary["available"].get(name, 0)]
            for name in summary["classes"]]
    return table(rows, ["class"] + splits + ["candidates"])
