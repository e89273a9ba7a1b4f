"""The summary of a build manifest: the figures a user looks at first (the CLI's --json object)."""

from __future__ import annotations

from pathlib import Path



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
        "near_duplicates": _near(manifest.get("near_duplicates") or {"mode": "keep"}),
        "outputs": {fmt: str(out / fmt) for fmt in manifest["outputs"]},
    }


def _near(entry: dict) -> dict:
    return {"mode": entry.get("mode", "keep"), "groups": len(entry.get("groups", [])),
            "pictures_in_groups": sum(len(g["files"]) for g in entry.get("groups", [])),
            "conflicting": len(entry.get("conflicting", []))}

