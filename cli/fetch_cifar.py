"""Shared options and output of `datakit fetch-cifar10` and `datakit fetch-cifar100` (no logic here)."""

from __future__ import annotations

import argparse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def description(dataset: str) -> str:
    from datakit.datasets import cifar

    s = cifar.spec(dataset)
    return (
        f"Download the {s.title} binary version ({s.archive}) or take a local copy, verify its checksum before "
        f"extracting anything, extract it safely (no member may leave DIR; links and device files refuse the "
        f"archive) into a temporary folder and rename DIR/{s.folder}/ ({', '.join(s.required)}) into place when "
        "complete. Downloads stream to a .part file, retry dropped connections with backoff and resume with HTTP "
        "Range requests (base backoff: $DATAKIT_FETCH_BACKOFF seconds, default 1). A transfer that passes the "
        "archive's size is stopped and deleted; an HTML page (captive portal) is refused; one fetch at a time per "
        "DIR. Run again on a complete DIR, it does no network I/O."
    )


def add_arguments(p, dataset: str) -> None:
    from datakit.datasets import cifar
    from datakit.datasets.cifar.download import SIZE_CAP
    from datakit_cli.common import positive_int

    s = cifar.spec(dataset)
    p.add_argument("--dest", metavar="DIR", default=None,
                   help=f"destination folder (default: $DATAKIT_HOME/{s.key}, or ~/.cache/datakit/{s.key})")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help=f"download from this mirror instead of {s.url}; verified "
                        "against --md5/--sha256, or the official MD5 when neither is given")
    source.add_argument("--from-archive", metavar="PATH", default=None,
                        help=f"use this local {s.archive} instead of downloading (verified when a checksum is given)")
    digest = p.add_mutually_exclusive_group()
    digest.add_argument("--md5", metavar="HEX", default=None, help=f"expected MD5 of the archive (official: {s.md5})")
    digest.add_argument("--sha256", metavar="HEX", default=None, help="expected SHA-256 of the archive")
    p.add_argument("--size", type=positive_int, default=None, metavar="BYTES",
                   help=f"expected size of the archive in bytes (official: {s.size}, assumed whenever the official "
                   "MD5 is the one verified); a download that passes it is stopped and deleted. A download of no "
                   f"known size stops at {SIZE_CAP} bytes")
    p.add_argument("--tries", type=positive_int, default=5, metavar="N",
                   help="give up after N consecutive attempts that add no bytes")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="S", help="socket timeout in seconds")


def run(args, dataset: str) -> dict:
    from datakit.datasets import cifar
    from datakit_cli.common import progress_factory

    result = cifar.fetch(dataset, args.dest, url=args.url, md5=args.md5, sha256=args.sha256,
                         size=args.size, from_archive=args.from_archive, tries=args.tries, timeout=args.timeout,
                         progress=progress_factory(not args.json))
    return {key: result[key] for key in ("dataset", "folder", "fetched", "archive", "counts", "download", "classes")}


def render(result: dict) -> str:
    from datakit.datasets import cifar

    title = cifar.spec(result["dataset"]).title
    archive, counts = result["archive"], result["counts"]
    if not result["fetched"]:
        head = f"{title} already complete in {result['folder']} (nothing downloaded or extracted)"
    elif result["download"] is None:
        head = f"{title} extracted from {archive['source']} into {result['folder']}"
    else:
        d = result["download"]
        head = (f"{title} downloaded from {archive['source']} ({d['bytes']} bytes, {d['attempts']} requests, "
                f"{d['resumed']} resumed, {d['restarted']} restarted) and extracted into {result['folder']}")
    lines = [head,
             f"archive {archive['name']}: md5 {archive['md5']}  sha256 {archive['sha256']}",
             "records: " + ", ".join(f"{split} {n}" for split, n in counts.items())]
    for mode, names in result["classes"].items():
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        lines.append(f"classes{'' if mode == 'label' else f' ({mode})'}: {shown}")
    return "\n".join(lines)
