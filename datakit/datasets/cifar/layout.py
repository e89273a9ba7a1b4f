"""Where a CIFAR data set sits on disk: the fetch destination, its batches folder, the files of a split."""

from __future__ import annotations

import os
from pathlib import Path

from datakit.datasets.cifar.spec import SPECS, Spec, _mode, spec
from datakit.errors import DatakitError


def default_dest(dataset: str) -> Path:
    """$DATAKIT_HOME/<dataset>, or ~/.cache/datakit/<dataset> when DATAKIT_HOME is unset."""
    home = os.environ.get("DATAKIT_HOME") or os.path.join("~", ".cache", "datakit")
    return Path(home).expanduser() / spec(dataset).key


def locate(dest: str | os.PathLike, dataset: str | None = None) -> tuple[Spec, Path]:
    """(spec, folder of the .bin files) for a fetch destination or the batches folder itself."""
    dest = Path(dest).expanduser()
    candidates = [spec(dataset)] if dataset else list(SPECS.values())
    found = []
    for s in candidates:
        for folder in (dest / s.folder, dest):
            if any((folder / f).is_file() for files in s.splits.values() for f in files):
                found.append((s, folder))
                break
    if not found:
        wanted = " or ".join(f"{s.title} ({s.folder}/)" for s in candidates)
        raise DatakitError(f"{dest}: no {wanted} found")
    if len(found) > 1:
        raise DatakitError(f"{dest}: holds both CIFAR-10 and CIFAR-100; pass the data set folder itself "
                           "or dataset='cifar10' / 'cifar100'")
    return found[0]


def split_files(s: Spec, folder: Path, split: str) -> list[Path]:
    if split not in s.splits:
        raise DatakitError(f"split {split!r}: expected one of {', '.join(s.splits)}")
    files = [folder / f for f in s.splits[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatakitError(f"{folder}: missing {', '.join(missing)} of the {s.title} {split} split")
    return files


def class_names(dest: str | os.PathLike, label_mode: str | None = None, dataset: str | None = None) -> list[str]:
    """Class names in label order, from batches.meta.txt or the CIFAR-100 label-name files."""
    s, folder = locate(dest, dataset)
    mode = _mode(s, label_mode)
    path = folder / s.names[mode]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatakitError(f"{path}: cannot read the {s.title} class names: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatakitError(f"{path}: not a text file of class names") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if len(names) != s.classes[mode] or not all(names):
        raise DatakitError(f"{path}: expected {s.classes[mode]} non-empty class names, found {len(names)} lines")
    return names
