"""Pipeline.state() and resume=: exact, tiny positions for every dataset, impl and format."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from datakit import pipelines  # noqa: E402
from datakit.augment import Augment  # noqa: E402
from datakit.errors import DatakitError  # noqa: E402
from datakit.testing import synthetic_cifar  # noqa: E402

IMPLS = ["fast", "reference"]


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar10")
    synthetic_cifar.make_cifar10_dir(dest, train_per_batch=20, test=40, seed=1)
    return dest


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar100")
    synthetic_cifar.make_cifar100_dir(dest, train=100, test=30, seed=2)
    return dest


@pytest.fixture(scope="module")
def generic_build(utk_build, tmp_path_factory):
    """A build-utk output renamed to another dataset: what any `datakit build` output is to the pipelines."""
    _, out, _, _ = utk_build
    dest = tmp_path_factory.mktemp("generic") / "out"
    shutil.copytree(out, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["dataset"] = "not-utk-at-all"
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def batches(p, n):
    return [(x.numpy(), y.numpy()) for x, y in p.take(n)]


def assert_same(got, want):
    assert len(got) == len(want) and got
    for (x, y), (u, v) in zip(got, want):
        np.testing.assert_array_equal(y, v)
        np.testing.assert_array_equal(x, u)  # element for element, not merely close


def check_resume(make, cuts):
    """Batches after `resume=state` (taken after `cut` batches, through JSON) equal the uninterrupted
    pipeline's from that point, for each cut; make(**kw) builds a repeating pipeline."""
    first = make()
    steps = first.steps_per_epoch
    total = max(cuts) + steps + 1
    whole = batches(first, total)
    for cut in cuts:
        p = make()
        batches(p, cut)
        state = json.loads(json.dumps(p.state()))
        assert (state["epoch"], state["batch"]) == divmod(cut, steps)
        assert len(json.dumps(state)) < 1024
        resumed = make(resume=state)
        assert (resumed.epoch, resumed.batch) == divmod(cut, steps)
        assert_same(batches(resumed, total - cut), whole[cut:])


def mid_and_boundary(steps):
    return [steps + 1, 2 * steps]  # inside epoch 1; the start of epoch 2


# ------------------------------------------------------------------ every dataset, impl, shuffle


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("split", ["train", "test"])  # shuffled, augmented / file order, centre crops
def test_cifar10_resumes_exactly(cifar10_dir, impl, split):
    def make(**kw):
        return pipelines.cifar10(cifar10_dir, split=split, batch_size=16, impl=impl, seed=5, repeat=True,
                                 device="cpu", **kw)

    check_resume(make, mid_and_boundary(make().steps_per_epoch))


@pytest.mark.parametrize("impl", IMPLS)
def test_cifar100_resumes_exactly(cifar100_dir, impl):
    def make(**kw):
        return pipelines.cifar100(cifar100_dir, batch_size=16, impl=impl, seed=2, repeat=True, label_mode="coarse",
                                  device="cpu", **kw)

    check_resume(make, [3, 2 * make().steps_per_epoch])


@pytest.mark.parametrize("impl", IMPLS)
def test_streamed_cifar_resumes_exactly(cifar10_dir, impl):
    """The records streamed from the .bin files (what service workers read), shuffled in windows."""
    from datakit.datasets.cifar.dataset import CifarDataset

    src = dataclasses.replace(CifarDataset(cifar10_dir).tf_source("train"), load=None, shuffle_buffer=64)

    def make(**kw):
        return pipelines.from_source(src, "train", batch_size=16, impl=impl, seed=9, repeat=True, device="cpu", **kw)

    check_resume(make, mid_and_boundary(make().steps_per_epoch))


@pytest.mark.parametrize("fmt", ["tfrecord", "folders", "hdf5"])
@pytest.mark.parametrize("impl", IMPLS)
def test_utk_build_resumes_exactly_in_every_format(utk_build, fmt, impl):
    _, out, _, _ = utk_build

    def make(**kw):
        return pipelines.utk(out, format=fmt, batch_size=8, impl=impl, seed=4, repeat=True, device="cpu", **kw)

    check_resume(make, mid_and_boundary(make().steps_per_epoch))


@pytest.mark.parametrize("fmt", ["tfrecord", "hdf5"])
def test_generic_build_resumes_exactly_shuffled_or_not(generic_build, fmt):
    for shuffle in (True, False):
        def make(**kw):
            return pipelines.build(generic_build, format=fmt, batch_size=8, seed=1, shuffle=shuffle,
                                   drop_remainder=False, repeat=True, device="cpu", **kw)

        check_resume(make, [make().steps_per_epoch - 1, make().steps_per_epoch])


@pytest.mark.parametrize("impl", IMPLS)
def test_arrays_partial_last_batch_and_no_shuffle(impl):
    images = np.random.default_rng(0).integers(0, 255, (37, 16, 16, 3), dtype=np.uint8)
    for shuffle in (True, False):
        def make(**kw):
            return pipelines.from_arrays(images, np.arange(37), impl=impl, batch_size=8, seed=0, shuffle=shuffle,
                                         drop_remainder=False, repeat=True, crop=12, device="cpu", **kw)

        assert make().steps_per_epoch == 5
        check_resume(make, [4, 5, 7])  # the short last batch comes next; an epoch boundary; mid epoch 1


# ------------------------------------------------------------------ passes, the dataset form, devices


@pytest.mark.parametrize("impl", IMPLS)
def test_passes_of_a_non_repeating_pipeline_are_its_epochs_and_resume_mid_pass(impl):
    images = np.random.default_rng(1).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)

    def make(**kw):
        return pipelines.from_arrays(images, np.arange(40), impl=impl, batch_size=8, seed=3, crop=12, device="cpu",
                                     **kw)

    endless = batches(make(repeat=True), 15)
    p = make()
    passes = [[(x.numpy(), y.numpy()) for x, y in p] for _ in range(3)]
    assert_same(sum(passes, []), endless)  # repeat is not part of what decides the batches
    assert p.state()["epoch"] == 3 and p.state()["batch"] == 0
    q = make()
    batches(q, 2)  # an abandoned pass: the next one continues it
    assert (q.epoch, q.batch) == (0, 2)
    assert_same([(x.numpy(), y.numpy()) for x, y in q], endless[2:5])
    r = make(resume=make(repeat=True).state_at(1, 3))  # a repeating pipeline's state resumes this one
    assert_same([(x.numpy(), y.numpy()) for x, y in r], endless[8:10])
    assert_same([(x.numpy(), y.numpy()) for x, y in r], endless[10:15])


def test_the_dataset_form_starts_at_the_resumed_position(cifar10_dir):
    def make(**kw):
        return pipelines.cifar10(cifar10_dir, batch_size=16, seed=1, device="cpu", **kw)

    p = make()
    for _ in p:  # epoch 0 by iteration
        pass
    want = [(x.numpy(), y.numpy()) for x, y in p]  # epoch 1
    q = make(resume=p.state_at(1))
    assert int(q.dataset.cardinality()) == q.steps_per_epoch
    assert_same([(x.numpy(), y.numpy()) for x, y in q.dataset], want)  # what model.fit would read
    mid = make(resume=p.state_at(1, 2))  # mid-epoch: the first pass is short, so no cardinality is asserted
    assert_same([(x.numpy(), y.numpy()) for x, y in mid.dataset], want[2:])


@pytest.mark.parametrize("impl", IMPLS)
def test_resume_on_the_gpu_code_path_on_a_stand_in_device(monkeypatch, cifar10_dir, impl):
    """A state saved on the CPU resumes on the GPU path (device is not part of the state)."""
    cpu = pipelines.cifar10(cifar10_dir, batch_size=16, impl=impl, seed=2, repeat=True, device="cpu")
    whole = batches(cpu, 10)
    state = pipelines.cifar10(cifar10_dir, batch_size=16, impl=impl, seed=2, repeat=True, device="cpu").state_at(0, 7)
    monkeypatch.setattr(pipelines, "gpu_devices", lambda: ["stand-in"])
    monkeypatch.setattr(pipelines, "GPU_NAME", "/CPU:0")
    gpu = pipelines.cifar10(cifar10_dir, batch_size=16, impl=impl, seed=2, repeat=True, resume=state)
    assert gpu.device == "gpu"
    got = batches(gpu, 3)
    for (x, y), (u, v) in zip(got, whole[7:]):
        np.testing.assert_array_equal(y, v)
        np.testing.assert_allclose(x, u, atol=1e-5)
    assert gpu.state()["batch"] == 10 % gpu.steps_per_epoch  # prefetched batches are not counted


# ------------------------------------------------------------------ the state itself and refusals


def test_state_is_small_json_and_counts_only_batches_handed_out(cifar10_dir):
    p = pipelines.cifar10(cifar10_dir, batch_size=16, seed=0, repeat=True, device="cpu")
    s0 = p.state()
    assert (s0["epoch"], s0["batch"], s0["version"]) == (0, 0, 1) and "exact" not in s0
    it = iter(p)
    next(it)
    next(it)  # the prefetch has run ahead: only two were handed out
    text = json.dumps(p.state())
    assert json.loads(text)["batch"] == 2 and len(text) < 1024
    assert p.state()["source"]["dataset"] == "cifar10" and p.state()["options"]["seed"] == 0
    resumed = pipelines.cifar10(cifar10_dir, batch_size=16, seed=0, repeat=True, device="cpu", resume=text)
    assert resumed.batch == 2 and "resumed at epoch 0 batch 2" in resumed.describe()
    # device, threads and jit do not decide the batches: a state resumes across them
    pipelines.cifar10(cifar10_dir, batch_size=16, seed=0, threads=1, jit=False, device="cpu", resume=text)


def refusal(make, state) -> str:
    with pytest.raises(DatakitError) as exc:
        make(resume=state)
    assert exc.value.param == "resume"
    return str(exc.value)


def test_a_state_of_another_pipeline_is_refused_naming_what_differs(cifar10_dir, cifar100_dir):
    def c10(**kw):
        return pipelines.cifar10(cifar10_dir, **{"batch_size": 16, "seed": 3, "device": "cpu", **kw})

    state = c10().state_at(1, 2)
    assert "batch_size 16 in the state, 8 here" in refusal(lambda **kw: c10(batch_size=8, **kw), state)
    assert "seed 3 in the state, 4 here" in refusal(lambda **kw: c10(seed=4, **kw), state)
    assert 'impl "fast" in the state, "reference" here' in refusal(lambda **kw: c10(impl="reference", **kw), state)
    assert "shuffle true in the state, false here" in refusal(lambda **kw: c10(shuffle=False, **kw), state)
    assert "augment.flip true in the state, false here" in refusal(
        lambda **kw: c10(augment=Augment(flip=False), **kw), state)
    msg = refusal(lambda **kw: pipelines.cifar100(cifar100_dir, batch_size=16, seed=3, device="cpu", **kw), state)
    assert 'source.dataset "cifar10" in the state, "cifar100" here' in msg
    msg = refusal(lambda **kw: c10(split="test", **kw), c10(split="test").state_at(0, 1) | {"source": state["source"]})
    assert 'source.split "train" in the state, "test" here' in msg
    fine = pipelines.cifar100(cifar100_dir, batch_size=16, seed=3, device="cpu").state()
    assert 'source.labels "fine" in the state, "coarse" here' in refusal(
        lambda **kw: pipelines.cifar100(cifar100_dir, batch_size=16, seed=3, label_mode="coarse", device="cpu", **kw),
        fine)
    assert "batch 99 in the state, but an epoch has" in refusal(c10, state | {"batch": 99})
    assert "version" in refusal(c10, state | {"version": 7})
    assert "not a pipeline state" in refusal(c10, "{not json")
    assert "expected a Pipeline.state()" in refusal(c10, {"epoch": 1})


def test_arrays_states_know_their_arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 16, 16, 3), dtype=np.uint8)
    state = pipelines.from_arrays(images, np.arange(32), batch_size=8, seed=0, crop=12).state()
    other = images.copy()
    other[0] ^= 1
    msg = refusal(lambda **kw: pipelines.from_arrays(other, np.arange(32), batch_size=8, seed=0, crop=12, **kw), state)
    assert "source.digest" in msg


def test_unseeded_pipelines_say_their_state_is_not_exact_and_a_resume_is_refused(cifar10_dir):
    p = pipelines.cifar10(cifar10_dir, batch_size=16, device="cpu")
    next(iter(p))
    state = p.state()
    assert state["exact"] is False and "unseeded" in state["why"] and state["options"]["seed"] is None
    msg = refusal(lambda **kw: pipelines.cifar10(cifar10_dir, batch_size=16, device="cpu", **kw), state)
    assert "unseeded" in msg and "seed=" in msg
    state.pop("exact"), state.pop("why")  # a hand-edited state: still refused
    assert "unseeded" in refusal(lambda **kw: pipelines.cifar10(cifar10_dir, batch_size=16, device="cpu", **kw), state)


@pytest.fixture(scope="module")
def dispatcher():
    """An in-process dispatcher (no worker: nothing is iterated here)."""
    from datakit import service

    server = service.start_dispatcher(0)
    yield f"grpc://localhost:{service.bound_port(server)}"
    server._stop()


@pytest.mark.parametrize("mode", ["parallel_epochs", "distributed_epoch"])
def test_service_pipelines_have_inexact_states_and_refuse_resume(cifar10_dir, dispatcher, mode):
    """Through the tf.data service the workers draw with their own randomness (parallel_epochs) or the
    dispatcher owns the position (distributed_epoch): no exact resume."""
    served = pipelines.cifar10(cifar10_dir, batch_size=16, seed=1, device="cpu", service=dispatcher,
                               processing_mode=mode)
    state = served.state()
    assert state["exact"] is False and "tf.data service" in state["why"] and mode in state["why"]
    assert len(json.dumps(state)) < 1024
    local = pipelines.cifar10(cifar10_dir, batch_size=16, seed=1, device="cpu")
    assert "tf.data service" in refusal(lambda **kw: pipelines.cifar10(cifar10_dir, batch_size=16, seed=1,
                                                                       device="cpu", **kw), state)
    with pytest.raises(DatakitError, match="resume= with service=") as exc:
        pipelines.cifar10(cifar10_dir, batch_size=16, seed=1, service=dispatcher, processing_mode=mode,
                          resume=local.state())
    assert exc.value.param == "resume"
