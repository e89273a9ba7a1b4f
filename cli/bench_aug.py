"""`datakit bench-aug`: reference vs fast augmentation pipelines, the crop+cast bound and the Keras peers, side by side."""

from __future__ import annotations

from datakit_cli.common import positive_int, str_list

NAME = "bench-aug"
HELP = "measure the augmentation pipelines (reference, fast, crop+cast bound, Keras peers) side by side"
DESCRIPTION = (
    "Run each augmentation implementation on the same CIFAR-shaped data in one run (synthetic data "
    "unless --data names a folder holding cifar-10-batches-bin/): warm up, then alternate timed windows "
    "of each and print images/s, ms per batch, fast/reference, how close fast gets to a bare "
    "crop+cast of the same batches, and fast and the datakit Keras layer against the stock Keras "
    "preprocessing layers (keras-layers: RandomCrop, RandomFlip, RandomBrightness, RandomContrast, "
    "per-image standardization, per batch in tf.data; datakit-layer: datakit.layers.AugmentLayer in "
    "a model's forward pass). --threads sets the tf.data private thread pool and the map "
    "parallelism (16 is the CIFAR-10 tutorial's figure)."
)


def add_arguments(p):
    p.add_argument("--threads", type=positive_int, default=16, help="tf.data private thread pool and map parallelism")
    p.add_argument("--batch", type=positive_int, default=128, help="images per batch")
    p.add_argument("--steps", type=positive_int, default=50, metavar="N",
                   help="batches per timed window (at least; a window also lasts at least --min-seconds)")
    p.add_argument("--rounds", type=positive_int, default=3, help="timed windows per implementation (median reported)")
    p.add_argument("--min-seconds", type=float, default=1.0, metavar="S", help="shortest timed window")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder holding cifar-10-batches-bin/ (default, or 'synthetic': synthetic CIFAR-shaped data)")
    p.add_argument("--images", type=positive_int, default=10000, metavar="N", help="synthetic data set size")
    p.add_argument("--impl", "--impls", dest="impl", type=str_list, default=None, metavar="LIST",
                   help="comma-separated among reference, fast, crop+cast (the bound), fast-nojit (fast without XLA), "
                   "keras-layers (stock Keras layers in tf.data), datakit-layer (datakit's Keras layer in a model), "
                   "or 'all' (default: all but fast-nojit)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="auto: the GPU when TensorFlow sees one")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the pipelines")
    p.add_argument("--service", default=None, metavar="grpc://HOST:PORT",
                   help="run the pipelines on a tf.data service (`datakit serve`): the workers read --data "
                   "(same path on each; synthetic data is written under the temporary folder) and augment")
    p.add_argument("--consumer", choices=["graph", "python"], default="graph",
                   help="how batches are taken: graph (inside a compiled loop, as model.fit and tf.function training "
                   "loops take them; the default) or python (next() in a Python loop, which itself caps the rate on a "
                   "small machine); GPU pipelines and --service always use python")
    p.add_argument("--processing-mode", choices=["parallel_epochs", "distributed_epoch"], default="parallel_epochs",
                   help="tf.data service processing mode (with --service)")


def run(args) -> dict:
    from datakit import bench
    from datakit_cli.common import progress_factory

    if args.impl is None:
        impls = bench.DEFAULT_IMPLS if args.service is None else ("reference", "fast", bench.BOUND)
    else:
        impls = bench.IMPLS if args.impl == ["all"] else args.impl
    return bench.bench_aug(threads=args.threads, batch=args.batch, steps=args.steps, data=args.data,
                           impls=impls, device=args.device, rounds=args.rounds, min_seconds=args.min_seconds,
                           images=args.images, seed=args.seed, service=args.service,
                           processing_mode=args.processing_mode, consumer=args.consumer, progress=progress_factory(not args.json))


def render(result: dict) -> str:
    """The table of a `datakit.bench.bench_aug` result, the speed ratios and the notes."""
    from datakit.textfmt import table

    rows = [[r["impl"], f"{r['images_per_sec']:,.0f}", f"{r['min_images_per_sec']:,.0f}-{r['max_images_per_sec']:,.0f}",
             f"{r['ms_per_batch']:.3f}", r["batches"], r["device"]] for r in result["results"]]
    header = ["impl", "images/s (median)", "range", "ms/batch", "batches", "device"]
    lines = [f"bench-aug: {result['data']}, batch {result['batch']}, threads {result['threads']} "
             f"({result['cores']} cores), device {result['device']}, {result['rounds']} rounds, "
             f"{result['consumer']} consumer",
             table(rows, header)]
    if "fast_over_reference" in result:
        lines.append(f"fast / reference = {result['fast_over_reference']:.2f}x")
    if "fast_of_bound" in result:
        lines.append(f"fast reaches {100 * result['fast_of_bound']:.0f}% of the crop+cast bound "
                     "(a gather + cast of the same batches, one memory pass)")
    if "fast_over_keras_layers" in result:
        lines.append(f"fast / keras-layers = {result['fast_over_keras_layers']:.2f}x")
    if "layer_over_keras_layers" in result:
        lines.append(f"datakit-layer / keras-layers = {result['layer_over_keras_layers']:.2f}x")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
