"""The callbacks on every Keras backend: JAX and torch match TensorFlow.

`tests/_backend_worker.py` runs the same scenarios (same initial weights and
data, `shuffle=False`) in a process per backend (`KERAS_BACKEND=jax`,
`torch`); this process runs them on TensorFlow. Per-update rates agree to
1e-6, trained weights to float32 round-off, and on each backend the weights
of a run driven by our callbacks equal those of Keras' own optimizer compiled
with the same schedule (the rate is applied inside the step). On JAX our
Python runs when the step is traced, not at every step.
"""

import json
import os
import subprocess
import sys

import _backend_worker as worker
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")
DEVICE_SCENARIOS = ("plateau", "in_step", "counter_reset", "accumulation", "batch_size")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("backends")
    procs = {}
    for backend in BACKENDS:
        path = str(out / f"{backend}.json")
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": HERE}
        procs[backend] = (path, subprocess.Popen([sys.executable, os.path.join(HERE, "_backend_worker.py"), path],
                                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                 text=True))
    # torch with the rate tables indexed on the device (an accelerator's path), on the CPU.
    path = str(out / "torch_device.json")
    procs["torch_device"] = (path, subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_backend_worker.py"), path, "--device-counts", *DEVICE_SCENARIOS],
        env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": HERE}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True))
    worker.main(str(out / "tensorflow.json"), [])  # meanwhile, TensorFlow in this process
    with open(out / "tensorflow.json") as f:
        found = {"tensorflow": json.load(f)}
    for backend, (path, proc) in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{backend}: {err[-3000:]}"
        with open(path) as f:
            found[backend] = json.load(f)
    return found


def flat(weights):
    return np.concatenate([np.ravel(np.asarray(w, "float64")) for w in weights])


def close_weights(a, b, tol=2e-5):
    a, b = flat(a), flat(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(1.0, np.abs(a).max()))


@pytest.mark.parametrize("backend", ("tensorflow", *BACKENDS))
def test_each_fit_applies_its_own_callbacks(results, backend):
    """Consecutive fits of one model with other callbacks, or none: each fit
    applies its own rates (closed form), never a step traced for another
    (JAX keeps traced steps by function: a fit after one with WarmUp trained
    with the warm-up's rates, and the other way round). A fit with the same
    callbacks as the model's last one with ours (the same objects, or equal
    learning-rate callbacks) reuses its compiled step, as Keras does: nothing
    is traced, and the values are the same."""
    run = results[backend]["refits"]
    t = np.arange(15 * 8).reshape(15, 8)  # the updates of each fit
    cosine = lambda steps, decay: 0.5 * (1 + np.cos(np.pi * np.minimum(steps, decay) / decay))  # noqa: E731
    warm100 = lambda steps: np.minimum(steps / 100, 1).sum()  # noqa: E731
    expected = [8.0, np.minimum(t[1] / 10, 1).sum(), 8.0, cosine(t[3], 40).sum(), cosine(t[4], 1000).sum(), 8.0,
                warm100(t[6]), 8.0, warm100(t[8]), warm100(t[9]), warm100(t[10]), warm100(t[11]),
                warm100(t[12]), 8.0, warm100(t[14])]
    np.testing.assert_allclose(run["sums"], expected, rtol=1e-5)
    logged = [i for i, norms in enumerate(run["grad_norms"]) if norms is not None]
    assert logged == [5, 6, 11, 12, 14]
    np.testing.assert_allclose([run["grad_norms"][i] for i in logged], 1.0, rtol=1e-6)
    if backend != "torch":  # torch runs the step eagerly: nothing is traced or reused
        assert run["traced"] == [False, True, False, True, True, False, True, False,
                                 True, False, False, True, False, False, False]
    # Validation: right after each fit (the loss is the weight), with Keras'
    # own test function, except on JAX where GradientNormLogger's metric
    # joins the fit: a new one, reused by the fits that reuse the step.
    np.testing.assert_allclose(run["val_errors"], 0.0, atol=1e-4)
    expected = [0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 0, 11, 11, 0, 11] if backend == "jax" else [0] * 15
    assert run["test_functions"] == expected


@pytest.mark.parametrize("backend", ("tensorflow", *BACKENDS))
def test_each_range_test_applies_its_own_ramp(results, backend):
    """Two `lr_find` runs with other ranges on one fitted model, then a plain
    fit: each loss falls by the rates of its own ramp (closed form); on JAX the
    second used to rerun the first one's traced step."""
    run = results[backend]["range_tests"]
    for raw, (lo, hi) in zip(run["raw"], ((1e-3, 1.0), (1e-2, 0.1))):
        rates = lo * (hi / lo) ** (np.arange(5) / 4)
        np.testing.assert_allclose(np.array(raw) - raw[0], -np.cumsum(np.r_[0.0, rates[:-1]]), rtol=1e-5, atol=1e-6)
    assert run["plain_fit"] == pytest.approx(8 * 0.5, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rates_with_reduce_lr_on_plateau_and_a_second_fit(results, backend):
    tf, other = results["tensorflow"]["plateau"], results[backend]["plateau"]
    assert [s for s, _ in other["rates"]] == list(range(24))
    np.testing.assert_allclose([r for _, r in other["rates"]], [r for _, r in tf["rates"]], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(other["epoch_rates"], tf["epoch_rates"], rtol=1e-6)
    assert other["own_rate"] == pytest.approx(tf["own_rate"], rel=1e-6) == pytest.approx(0.05 * 0.25)
    close_weights(other["weights"], tf["weights"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_applied_inside_the_step(results, backend):
    run = results[backend]["in_step"]
    np.testing.assert_array_equal(flat(run["weights"]), flat(run["reference"]))
    close_weights(run["weights"], results["tensorflow"]["in_step"]["weights"])
    if backend == "jax":
        assert run["rate_at_calls"] == 1  # traced once: no per-step Python on JAX's hot path


@pytest.mark.parametrize("backend", ("tensorflow", *BACKENDS, "torch_device"))
def test_rates_follow_an_update_count_set_back(results, backend):
    """`optimizer.iterations` assigned at epoch ends (6 updates an epoch; set to
    1500 after the first, back to 2 after the second): the weights equal those
    of Keras' own compiled schedule, which reads the count in the step. On
    torch the table of the coming rates must notice both (on an accelerator,
    without reading the count)."""
    run = results[backend]["counter_reset"]
    assert run["iterations"] == 2 + 6
    close_weights(run["weights"], run["reference"], tol=1e-6)
    close_weights(run["weights"], results["tensorflow"]["counter_reset"]["weights"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_accumulation_and_steps_per_execution(results, backend):
    tf, other = results["tensorflow"], results[backend]
    np.testing.assert_allclose(other["accumulation"]["rates"], tf["accumulation"]["rates"], rtol=1e-6, atol=1e-9)
    close_weights(other["accumulation"]["weights"], tf["accumulation"]["weights"])
    spe = other["steps_per_execution"]
    if backend == "torch":
        assert "skipped" in spe  # Keras' torch trainer runs one step per call
        return
    np.testing.assert_array_equal(flat(spe["weights"]), flat(spe["reference"]))
    np.testing.assert_allclose(spe["epoch_rates"], tf["steps_per_execution"]["epoch_rates"], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_cycle_rate_and_momentum(results, backend):
    for kind in ("sgd", "adam"):
        tf, other = results["tensorflow"]["one_cycle"][kind], results[backend]["one_cycle"][kind]
        np.testing.assert_allclose([r for _, r in other["rates"]], [r for _, r in tf["rates"]], rtol=1e-6)
        np.testing.assert_allclose(other["momentum"], tf["momentum"], rtol=1e-6)
        close_weights(other["weights"], tf["weights"])  # the momentum cycles in the step too


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_size_schedule_early_stopping_and_unfreezing(results, backend):
    tf, other = results["tensorflow"], results[backend]
    assert other["batch_size"]["batch_size"] == [8, 16, 32]
    np.testing.assert_allclose([r for _, r in other["batch_size"]["rates"]],
                               [r for _, r in tf["batch_size"]["rates"]], rtol=1e-6)
    close_weights(other["batch_size"]["weights"], tf["batch_size"]["weights"])
    es = other["early_stopping"]
    assert (es["stopped_epoch"], es["best_epoch"], es["restored"]) == (1, 0, True)
    if backend == "jax":
        assert "GradualUnfreezing runs on the tensorflow and torch backends" in other["unfreezing"]["error"]
        assert "'jax'" in other["unfreezing"]["error"]
    else:
        assert other["unfreezing"]["frozen_by_epoch"] == [True, True, False]
        close_weights(other["unfreezing"]["weights"], tf["unfreezing"]["weights"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensorboard_scalars(results, backend):
    from tensorboard.backend.event_processing import event_accumulator

    run = os.path.join(results[backend]["tensorboard"]["log_dir"], "train")
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"epoch_loss", "epoch_learning_rate", "learning_rate"} <= tags
    rates = [e.tensor_proto.float_val[0] for e in acc.Tensors("learning_rate")]
    assert [e.step for e in acc.Tensors("learning_rate")] == list(range(1, 13))
    np.testing.assert_allclose(rates, 0.05 * 0.5 ** (np.arange(12) // 4), rtol=1e-6)


@pytest.mark.parametrize("backend", ("tensorflow",) + BACKENDS)
def test_schedules_evaluate_alike_on_the_host_and_compiled(results, backend):
    from keras_trainkit import schedules as S

    run = results[backend]["schedules"]
    sched = S.WarmUp(S.CosineDecayRestarts(0.1, 20, t_mul=1.5, m_mul=0.8, alpha=0.1), 10, 0.01, "cosine")
    expected = sched(np.array(run["steps"]))
    np.testing.assert_allclose(run["host"], expected, rtol=1e-6)
    np.testing.assert_allclose(run["compiled"], expected, rtol=1e-6)
    assert run["optimizer_rate"] == pytest.approx(float(sched(4)), rel=1e-6)


def test_torch_rates_indexed_on_the_device(results):
    """torch keeps a table of the coming rates; on an accelerator it is indexed
    on the device (no host read of the update count). That path, run on the
    CPU, gives TensorFlow's rates and Keras' own compiled schedule's weights."""
    tf, dev = results["tensorflow"], results["torch_device"]
    assert set(DEVICE_SCENARIOS) <= set(dev)
    assert [s for s, _ in dev["plateau"]["rates"]] == list(range(24))
    np.testing.assert_allclose([r for _, r in dev["plateau"]["rates"]], [r for _, r in tf["plateau"]["rates"]],
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dev["plateau"]["epoch_rates"], tf["plateau"]["epoch_rates"], rtol=1e-6)
    close_weights(dev["plateau"]["weights"], tf["plateau"]["weights"])
    np.testing.assert_array_equal(flat(dev["in_step"]["weights"]), flat(dev["in_step"]["reference"]))
    np.testing.assert_allclose(dev["accumulation"]["rates"], tf["accumulation"]["rates"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([r for _, r in dev["batch_size"]["rates"]],
                               [r for _, r in tf["batch_size"]["rates"]], rtol=1e-6)
    close_weights(dev["batch_size"]["weights"], tf["batch_size"]["weights"])
