"""datakit bench-aug: the measuring logic (datakit.bench) and the CLI command, on tiny runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")

from datakit import bench, pipelines  # noqa: E402
from datakit.testing import synthetic_cifar
from datakit.errors import DatakitError  # noqa: E402
from datakit_cli.main import main  # noqa: E402

TINY = dict(batch=16, steps=2, rounds=2, warmup=1, min_seconds=0.0, images=128)


def test_bench_measures_every_impl_side_by_side():
    r = bench.bench_aug(threads=3, impls=("reference", "fast", "crop+cast"), device="cpu", **TINY)
    assert [x["impl"] for x in r["results"]] == ["reference", "fast", "crop+cast"]
    for x in r["results"]:
        assert x["images_per_sec"] > 0 and x["batches"] >= 2 * 2 and x["device"] == "cpu"
        assert x["min_images_per_sec"] <= x["images_per_sec"] <= x["max_images_per_sec"]
        assert abs(x["ms_per_batch"] - 1000 * 16 / x["images_per_sec"]) < 1e-3
    by = {x["impl"]: x["images_per_sec"] for x in r["results"]}
    assert r["fast_over_reference"] == round(by["fast"] / by["reference"], 2)
    assert r["fast_of_bound"] == round(by["fast"] / by["crop+cast"], 3)
    assert r["threads"] == 3 and r["batch"] == 16 and r["device"] == "cpu"
    assert "synthetic" in r["data"]
    from datakit_cli.bench_aug import render

    text = render(r)
    assert "fast / reference" in text and "crop+cast" in text


def test_oversubscription_is_reported(monkeypatch):
    monkeypatch.setattr(bench, "cores", lambda: 2)
    r = bench.bench_aug(threads=16, impls=("fast",), device="cpu", **TINY)
    assert any("16 threads on 2 cores" in n for n in r["notes"])
    assert "fast_over_reference" not in r


def test_bad_options():
    with pytest.raises(DatakitError, match="impls"):
        bench.bench_aug(impls=("turbo",), **TINY)
    with pytest.raises(DatakitError, match="fewer images than one batch"):
        bench.bench_aug(impls=("fast",), device="cpu", **{**TINY, "images": 8})


def test_cli_json_on_cifar_data(tmp_path, capsys):
    synthetic_cifar.make_cifar10_dir(tmp_path, train_per_batch=20, test=10)
    code = main(["bench-aug", "--threads", "2", "--batch", "16", "--steps", "2", "--rounds", "1",
                 "--min-seconds", "0", "--data", str(tmp_path), "--impl", "fast,reference", "--device", "cpu",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] and out["command"] == "bench-aug"
    assert out["threads"] == 2 and out["batch"] == 16 and out["device"] == "cpu"
    assert [x["impl"] for x in out["results"]] == ["fast", "reference"]
    assert all(x["images_per_sec"] > 0 for x in out["results"])
    assert "CIFAR-10 train, 100 images" in out["data"]


def test_cli_gpu_without_gpu_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: [])
    code = main(["bench-aug", "--device", "gpu", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "sees no GPU" in err


def test_cli_json_puts_the_keras_peers_beside_the_fast_path(capsys):
    code = main(["bench-aug", "--threads", "2", "--batch", "16", "--steps", "2", "--rounds", "1", "--min-seconds", "0",
                 "--images", "64", "--impl", "fast,keras-layers,datakit-layer", "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [x["impl"] for x in out["results"]] == ["fast", "keras-layers", "datakit-layer"]
    by = {x["impl"]: x for x in out["results"]}
    assert all(x["images_per_sec"] > 0 and x["batches"] >= 2 for x in by.values())
    assert "RandomCrop, RandomFlip, RandomBrightness, RandomContrast" in by["keras-layers"]["augment"]
    assert "AugmentLayer" in by["datakit-layer"]["augment"]
    assert out["fast_over_keras_layers"] == round(by["fast"]["images_per_sec"] / by["keras-layers"]["images_per_sec"], 2)
    assert out["layer_over_keras_layers"] == round(
        by["datakit-layer"]["images_per_sec"] / by["keras-layers"]["images_per_sec"], 2)
    from datakit_cli.bench_aug import render

    assert "datakit-layer / keras-layers" in render(out)


def test_keras_stack_is_the_tutorial_chain_in_stock_layers():
    """Ranges as the Augment config's: delta within +-63, contrast factor in [0.2, 1.8], then standardized."""
    import numpy as np

    stack = bench.keras_tutorial_stack(bench.Augment(), (32, 32), seed=0)
    assert [type(layer).__name__ for layer in stack.layers] == ["RandomCrop", "RandomFlip", "RandomBrightness",
                                                                "RandomContrast", "Lambda"]
    crop, _, brightness, contrast, _ = (layer.get_config() for layer in stack.layers)
    assert (crop["height"], crop["width"]) == (24, 24)
    assert np.allclose(np.array(brightness["factor"]) * 255, [-63, 63]) and tuple(brightness["value_range"]) == (0, 255)
    assert np.allclose(contrast["factor"], (0.8, 0.8))  # [1 - 0.8, 1 + 0.8]
    x, _ = synthetic_cifar.cifar10_arrays(8, np.random.default_rng(0))
    out = stack(x, training=True).numpy()
    assert out.shape == (8, 24, 24, 3)
    assert abs(out.mean(axis=(1, 2, 3))).max() < 1e-4 and abs(out.std(axis=(1, 2, 3)) - 1).max() < 1e-3


def test_peers_do_not_run_on_a_service():
    with pytest.raises(DatakitError, match="not on a tf.data service"):
        bench.bench_aug(impls=("keras-layers",), service="grpc://localhost:5050", **TINY)


@pytest.mark.parametrize("consumer", ["graph", "python"])
def test_both_consumers_measure_and_say_which(consumer):
    r = bench.bench_aug(threads=2, impls=("fast", "datakit-layer"), device="cpu", consumer=consumer, **TINY)
    assert r["consumer"] == consumer
    assert all(x["images_per_sec"] > 0 and x["batches"] >= 2 * 2 for x in r["results"])


def test_every_window_reads_a_fresh_iterator(monkeypatch):
    """An idle pipeline must not keep filling its buffers while another is timed: one taker (one
    iterator) per window, plus one per implementation for the warm-up."""
    made = []
    real = bench._taker

    def counting(pipe, consumer):
        made.append(consumer)
        return real(pipe, consumer)

    monkeypatch.setattr(bench, "_taker", counting)
    bench.bench_aug(threads=2, impls=("fast", "crop+cast"), device="cpu", **TINY)
    assert len(made) == 2 * (1 + TINY["rounds"]) and set(made) == {"graph"}


def test_bad_consumer_names_the_parameter(capsys):
    with pytest.raises(DatakitError, match="consumer") as info:
        bench.bench_aug(impls=("fast",), device="cpu", consumer="loop", **TINY)
    assert info.value.param == "consumer"
    code = main(["bench-aug", "--consumer", "python", "--threads", "2", "--batch", "16", "--steps", "2", "--rounds",
                 "1", "--min-seconds", "0", "--images", "64", "--impl", "fast", "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["consumer"] == "python"
