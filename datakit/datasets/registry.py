"""Open any built or fetched folder as its `Dataset`.

Each dataset package registers its class (`register(key, cls)`) when imported; `open_dataset`
imports every package under `datakit/datasets/` (and its `dataset` module when it has one) on
first use, so a new dataset is one package that registers itself. A build output dispatches on
its manifest's `"dataset"` ("utk" for manifests older than that key; a dataset with no
registered class opens as a plain `BuildDataset`); a folder without a manifest goes to the first
registered class whose `claims(root)` says it is one of its own (CIFAR's fetched folders).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
from pathlib import Path

from datakit.errors import DatakitError

_CLASSES: dict[str, type] = {}
_loaded = False


def register(key: str, cls: type) -> None:
    """Make `open_dataset` open datasets of registry name `key` as `cls`."""
    _CLASSES[key] = cls


def registered() -> dict[str, type]:
    """{key: class} of every dataset package found."""
    _load_packages()
    return dict(_CLASSES)


def _load_packages() -> None:
    global _loaded
    if _loaded:
        return
    import datakit.datasets as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        name = f"{pkg.__name__}.{info.name}"
        importlib.import_module(name)
        if importlib.util.find_spec(f"{name}.dataset") is not None:
            importlib.import_module(f"{name}.dataset")
    _loaded = True


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatakitError(f"{path}: unreadable manifest ({exc})") from None
    from datakit.datasets.built import BUILD_COMMANDS

    if not isinstance(manifest, dict) or not isinstance(manifest.get("datakit"), dict) \
            or manifest["datakit"].get("command") not in BUILD_COMMANDS:
        raise DatakitError(f"{path}: not a datakit build-utk or build manifest")
    return manifest


def open_dataset(path, label_mode: str | None = None):
    """The `Dataset` of a build output or a fetched folder (CIFAR-10/100); DatakitError otherwise.

    label_mode: CIFAR-100 "fine" (default) or "coarse"; ignored by builds.
    """
    from datakit.datasets.built import BuildDataset

    _load_packages()
    root = Path(path)
    if not root.exists():
        raise DatakitError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatakitError(f"{root}: not a folder (expected a build-utk output or a CIFAR folder)")
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
        cls = _CLASSES.get(str(manifest.get("dataset", "utk")), BuildDataset)
        if not (isinstance(cls, type) and issubclass(cls, BuildDataset)):
            raise DatakitError(f"{manifest_path}: dataset {manifest.get('dataset')!r} is not a build")
        return cls(root, manifest)
    if (root / ".datakit-build").exists():
        raise DatakitError(f"{root}: incomplete build-utk output (no manifest.json: the build did not finish)")
    for cls in dict.fromkeys(_CLASSES.values()):
        claims = getattr(cls, "claims", None)
        if claims is not None and claims(root):
            return cls(root, label_mode)
    raise DatakitError(f"{root}: neither a build-utk output (no manifest.json) nor a CIFAR folder "
                       f"(no cifar-10-batches-bin/ or cifar-100-binary/)")
