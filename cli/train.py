"""`datakit train cifar10|build|utk`: the bundled reference trainers, with the stuck-at-chance diagnosis."""

from __future__ import annotations

import argparse
import sys
import time

from datakit_cli.common import positive_int

NAME = "train"
HELP = "train a reference model (cifar10: the TF tutorial's net; build/utk: small or seed-bad) and diagnose it"
DESCRIPTION = (
    "Train one of the bundled reference models on data from datakit.pipelines, evaluate it on held-out "
    "data and write the model (.keras), metrics.json, the history as CSV and TensorBoard logs to --out. "
    "When held-out accuracy stays within 1.5x of chance (1/K) and the training loss near ln(K), the run is "
    "flagged stuck_at_chance and a checklist is printed. --check first overfits one batch (pass: >= 95%% "
    "training accuracy within 300 steps)."
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _decay(text: str) -> float:
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1 (e.g. 0.9999), got {text!r}")
    return value


def _duration(text: str) -> float:
    from datakit.errors import DatakitError
    from datakit.train import duration_seconds

    try:
        return duration_seconds(text)
    except DatakitError:
        raise argparse.ArgumentTypeError(f"expected seconds (600) or a duration with a unit (600s, 10m), got {text!r}") \
            from None


def _every(text: str) -> str:
    from datakit.errors import DatakitError
    from datakit.train import Every

    try:
        Every.parse(text)
    except DatakitError:
        raise argparse.ArgumentTypeError(f"expected steps (500) or seconds with a unit (300s, 10m), got {text!r}") \
            from None
    return text


def _common(p) -> None:
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for model.keras, metrics.json, history.csv, tensorboard/ "
                        "(default: runs/<target>-<date>-<time>)")
    p.add_argument("--check", action="store_true",
                   help="first overfit one batch with a fresh copy of the model and report pass or fail")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the shuffling and the augmentation")
    p.add_argument("--service", default=None, metavar="grpc://HOST:PORT",
                   help="take the train batches from a tf.data service (`datakit serve`); its workers read --data "
                        "at the same path and augment (the seed then does not apply to the augmentation)")
    p.add_argument("--processing-mode", choices=("parallel_epochs", "distributed_epoch"), default=None,
                   help="tf.data service mode (default: parallel_epochs for cifar10, distributed_epoch for build)")
    p.add_argument("--checkpoint-every", type=_every, default=None, metavar="N|Ns",
                   help="write a checkpoint into OUT/checkpoints every N steps, or every N seconds with a unit "
                        "(300s, 10m); the last two are kept, one is also written at the end and at SIGINT/SIGTERM "
                        "(default: every 500 steps or 10 minutes, whichever comes first)")
    p.add_argument("--restart", action="store_true",
                   help="start over even though --out holds checkpoints (they are removed); without it a run "
                        "resumes from the newest checkpoint in --out")
    p.add_argument("--ema", type=_decay, default=None, metavar="DECAY",
                   help="keep moving averages of the weights (the tutorial's 0.9999 for long CIFAR runs) and also "
                        "report the held-out accuracy with them (model_ema.keras)")
    p.add_argument("--deterministic", action="store_true",
                   help="turn on TensorFlow's op determinism (slower): on the CPU a resumed run then ends with "
                        "the weights of an uninterrupted one")
    # Also accepted after the target (`datakit train build ... --json`); SUPPRESS keeps a --json given
    # before the target from being reset by this parser's default.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one machine-readable JSON object on stdout (progress and logs go to stderr)")


def add_arguments(p):
    from datakit.datasets.cifar import default_dest

    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    c = sub.add_parser("cifar10", help="the TensorFlow CIFAR-10 tutorial's network on 24x24 crops",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="conv5x5x64 -> pool -> LRN -> conv5x5x64 -> LRN -> pool -> 384 -> 192 -> 10, "
                                   "L2 0.004 on the hidden dense layers; inputs from datakit.pipelines.cifar10 "
                                   "(train: augmented random 24x24 crops; test: centre crops). Prints "
                                   "step, loss, examples/sec and sec/batch; ends with precision@1 on the whole "
                                   "test split.")
    c.add_argument("--data", default=str(default_dest("cifar10")), metavar="DIR",
                   help="folder holding cifar-10-batches-bin/ (as `datakit fetch-cifar10` leaves it)")
    c.add_argument("--steps", type=positive_int, default=3000, help="training steps (batches)")
    c.add_argument("--batch", type=positive_int, default=128, help="batch size")
    c.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 1e-3 for Adam; 0.1 for --schedule decay)")
    c.add_argument("--schedule", choices=("constant", "decay"), default="constant",
                   help="constant: Adam; decay: the tutorial's SGD, x0.1 every 350 epochs (for long runs)")
    c.add_argument("--impl", choices=("fast", "reference"), default="fast", help="input pipeline implementation")
    c.add_argument("--shuffle-labels", action="store_true",
                   help="control run: train on random labels (the test split keeps the true ones)")
    c.add_argument("--log-every", type=positive_int, default=10,
                   help="update the bar's step/loss/speed figures every N steps (a log line every 10 N)")
    _common(c)

    for target in ("build", "utk"):
        _build_target(sub, target)


def _build_target(sub, target: str) -> None:
    """`train build` (any builder output) and `train utk`, its first name: the same options."""
    from datakit.recipes import RECIPES

    c = RECIPES["compact"]
    u = sub.add_parser(target, help="`compact` (or `small`, or the failing `seed-bad`) on a build output"
                       if target == "build" else "`train build` under its first name (a build-utk output)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train on the build's train split with flip + mild-crop augmentation, "
                                   "validate on its val split every epoch and keep the best weights. compact "
                                   f"(default): {c.epochs} epochs of SGD with a one-cycle learning rate, label "
                                   f"smoothing {c.label_smoothing}, at {c.size} px (resized on the fly); small and "
                                   "seed-bad: Adam, the rate halved after 2 flat epochs, a stop after --patience "
                                   "flat epochs, at the build's size. Any `datakit build` or `datakit build-utk` "
                                   "output: classes from its manifest. Writes the val confusion matrix "
                                   "(confusion.png) beside the model.")
    u.add_argument("--data", required=True, metavar="BUILD_DIR", help="a `datakit build` / `build-utk` output folder")
    u.add_argument("--format", choices=("tfrecord", "hdf5", "folders"), default="tfrecord",
                   help="which of the build's outputs to read")
    u.add_argument("--model", choices=tuple(RECIPES), default="compact",
                   help="compact: BN + global-average-pooling convnet (the default); small: the seed's accepted "
                        "answer; seed-bad: the network that guessed at random")
    u.add_argument("--size", type=positive_int, default=None, metavar="S",
                   help="resize to S x S px in the pipeline (default: compact 64, or the build's size if smaller; "
                        "small / seed-bad: the build's size)")
    u.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs to train (default: compact {c.epochs}; small / seed-bad at most "
                        f"{RECIPES['small'].epochs}, early stopping usually ends them sooner)")
    u.add_argument("--batch", type=positive_int, default=None,
                   help=f"batch size (default: compact {c.batch_size}, small / seed-bad {RECIPES['small'].batch_size})")
    u.add_argument("--lr", type=_positive_float, default=None,
                   help=f"learning rate (default: compact's one-cycle peak {c.lr:g}, small / seed-bad's Adam "
                        f"{RECIPES['small'].lr:g})")
    u.add_argument("--patience", type=positive_int, default=None,
                   help=f"stop after this many epochs without a better val_accuracy (default: small / seed-bad "
                        f"{RECIPES['small'].patience}; compact runs all its epochs)")
    u.add_argument("--time-limit", type=_duration, default=None, metavar="T",
                   help="end the run after T of training (600, 600s, 10m), validating the epoch in progress "
                        "where it stands (default: no limit)")
    u.set_defaults(augment=True)  # before the option, so --help does not print "(default: True)"
    u.add_argument("--no-augment", dest="augment", action="store_false", default=argparse.SUPPRESS,
                   help="train without the flip + mild crop augmentation")
    u.add_argument("--shuffle-labels", action="store_true",
                   help="control run: every training label replaced by a random one with the split's class "
                        "frequencies (no link to the picture); validation keeps the true labels")
    _common(u)


def _default_out(target: str) -> str:
    return f"runs/{target}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args) -> dict:
    from tqdm import tqdm

    from datakit import train
    from datakit_cli.common import progress_factory

    show = not args.json
    log = (lambda line: tqdm.write(line, file=sys.stderr)) if show else None
    out = args.out or _default_out(args.target)
    control = {"checkpoint_every": args.checkpoint_every, "restart": args.restart, "ema": args.ema,
               "deterministic": args.deterministic}
    if args.target == "cifar10":
        return train.train_cifar10(args.data, steps=args.steps, batch_size=args.batch, lr=args.lr,
                                   schedule=args.schedule, out=out, check=args.check,
                                   shuffle_labels=args.shuffle_labels, seed=args.seed,
                                   impl=args.impl, log_every=args.log_every, log=log,
                                   progress=progress_factory(show), service=args.service,
                                   processing_mode=args.processing_mode, **control)
    return train.train_build(args.data, target=args.target, format=args.format, model_name=args.model, epochs=args.epochs,
                           batch_size=args.batch, shuffle_labels=args.shuffle_labels, check=args.check,
                           lr=args.lr, augment=args.augment, patience=args.patience, seed=args.seed, out=out,
                           log=log, progress=progress_factory(show), service=args.service,
                           processing_mode=args.processing_mode, size=args.size,
                           time_limit=args.time_limit, **control)


def render(result: dict) -> str:
    """Human summary of a train_cifar10 / train_build result."""
    if result.get("interrupted"):
        return (f"{result['target']}: stopped by {result['interrupted']} after step {result['steps']}; checkpoint "
                f"{result['checkpoint']}\nrun the same command again to resume (--restart to start over)")
    lines = []
    if result.get("resumed_from_step") is not None:
        lines.append(f"resumed from step {result['resumed_from_step']} ({result['checkpoint']})")
    check = result.get("check")
    if check:
        lines.append(check["line"])
    if result["target"] == "cifar10":
        lines.append(f"cifar10: {result['steps']} steps of {result['batch_size']} "
                     f"({result['optimizer']}, lr {result['learning_rate']:g}, schedule {result['schedule']})"
                     + (", SHUFFLED LABELS (control run)" if result["shuffle_labels"] else ""))
        lines.append(f"precision @ 1 = {result['test_accuracy']:.3f} on {result['test_examples']} test examples "
                     f"(test loss {result['test_loss']:.3f})")
        if result.get("test_accuracy_ema") is not None:
            lines.append(f"precision @ 1 = {result['test_accuracy_ema']:.3f} with the moving averages of the weights "
                         f"(decay {result['ema_decay']:g})")
    else:
        lines.append(f"{result['target']}: model {result['model']} on {result['format']}, {result['epochs']} of "
                     f"{result['max_epochs']} epochs, batch {result['batch_size']}, {result['num_classes']} classes"
                     + (", SHUFFLED LABELS (control run)" if result["shuffle_labels"] else ""))
        lines.append(f"best epoch {result['best_epoch']}: val_accuracy {result['val_accuracy']:.3f} "
                     f"(train accuracy {result['train_accuracy']:.3f}); chance {result['chance']:.3f}")
        if result.get("val_accuracy_ema") is not None:
            lines.append(f"val_accuracy {result['val_accuracy_ema']:.3f} with the moving averages of the last weights "
                         f"(decay {result['ema_decay']:g})")
        if result.get("still_improving"):
            lines.append("validation accuracy was still improving at the last epoch: more --epochs may help")
    per_class = result.get("per_class_accuracy") or {}
    if per_class and len(per_class) <= 20:
        shown = {k: v for k, v in per_class.items() if v is not None}
        worst = min(shown, key=shown.get) if shown else None
        lines.append("per-class accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items())
                     + (f" (lowest: {worst})" if worst else ""))
    if result.get("train_seconds") is not None and result.get("epochs"):
        lines.append(f"trained {result['train_seconds']:.0f} s ({result['train_seconds'] / result['epochs']:.1f} s/epoch); "
                     f"{result['seconds']:.0f} s in all")
    if result.get("service"):
        lines.append(f"train batches from the tf.data service {result['service']} ({result['processing_mode']})")
    lines.append(f"{result['examples_per_sec']:.1f} examples/sec, {result['sec_per_batch']:.4f} sec/batch, "
                 f"input wait {result['input_wait_fraction']:.1%} of each step")
    lines.append(f"final training loss {result['final_loss']:.3f} (ln K = {result['ln_k']:.3f}); "
                 f"stuck_at_chance: {str(result['stuck_at_chance']).lower()}")
    lines += result["diagnosis"]
    if result.get("files"):
        lines.append("wrote:")
        lines += [f"  {key:<11} {path}" for key, path in result["files"].items()]
    return "\n".join(lines)
