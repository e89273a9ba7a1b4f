"""`datakit` entry point: one sub-command per module, `--json` on every command.

Errors the user can act on (`datakit.DatakitError`) print as one line on stderr
(and as {"ok": false, "error": ...} on stdout with --json) and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# Command modules, in the order `datakit --help` lists them.
COMMANDS = [
    "demo",
    "build_utk",
    "build",
    "fetch_cifar10",
    "fetch_cifar100",
    "preview",
    "doctor",
    "train",
    "bench_aug",
    "serve",
]


def _load(name: str):
    return importlib.import_module(f"datakit_cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    from datakit import __version__

    parser = argparse.ArgumentParser(
        prog="datakit",
        description="Prepare UTKFace and CIFAR image datasets for TensorFlow training. "
        "Every command takes --json (one JSON object on stdout; progress and logs on stderr).",
    )
    parser.add_argument("--version", action="version", version=f"datakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.add_argument("--json", action="store_true",
                       help="print one machine-readable JSON object on stdout (progress and logs go to stderr)")
        p.set_defaults(_module=mod)
    return parser


def as_flags(exc) -> str:
    """The error's message with its Python parameter (`per_class=3`, `per_class:`) written as the
    command-line flag (`--per-class 3`, `--per-class:`)."""
    import re

    text = str(exc).strip()
    params = getattr(exc, "param", None) or ()
    for param in (params,) if isinstance(params, str) else params:
        flag = "--" + param.replace("_", "-")
        text = re.sub(rf"(?<![\w-]){re.escape(param)}=", flag + " ", text)
        text = re.sub(rf"(?<![\w-]){re.escape(param)}\b", flag, text)
    return text


def _from_tensorflow(exc) -> bool:
    """An error of the data TensorFlow reads (a record that does not decode, a file that went
    missing), as opposed to a bug: tf.errors.OpError and its kin."""
    return type(exc).__module__.startswith("tensorflow") and hasattr(exc, "message")


def tf_message(exc) -> str:
    """The reason of a TensorFlow op error, without its node names and function stacks."""
    import re

    text = str(getattr(exc, "message", exc))
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\[\[[^\]]*\]\]", "", text)
    text = re.sub(r"\[Op:[^\]]*\]( name:)?", "", text)
    return " ".join(text.split()).strip() or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Before numpy loads: datakit's matrix products are tiny, and an idle OpenBLAS helper thread
    # busy-waits after start-up on a core the build's worker processes need (CPU, not wall, time)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    from datakit.errors import DatakitError

    mod = args._module
    try:
        result = mod.run(args)
    except DatakitError as exc:
        text = as_flags(exc)
        message = text.replace("\n", " | ") if args.json else text
        print(f"datakit {mod.NAME}: error: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "command": mod.NAME, "error": text}))
        return 1
    except Exception as exc:  # noqa: BLE001 - TensorFlow's own errors on bad data: one line, not a traceback
        if not _from_tensorflow(exc):
            raise
        text = (f"TensorFlow could not read or decode the data: {tf_message(exc)} "
                "(`datakit doctor` on the data names the file and the record)")
        print(f"datakit {mod.NAME}: error: {text}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "command": mod.NAME, "error": text}))
        return 1
    except KeyboardInterrupt:
        print(f"datakit {mod.NAME}: interrupted", file=sys.stderr)
        return 130
    code = int(result.pop("_exit_code", 0)) if isinstance(result, dict) else 0
    if args.json:
        print(json.dumps({"ok": code == 0, "command": mod.NAME, **result}, default=str))
    else:
        print(mod.render(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
