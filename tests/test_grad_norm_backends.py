"""GradientNormLogger on the jax and torch backends: the values of TensorFlow.

One subprocess per backend (`tests/_grad_norm_backend_worker.py`, both
started at once, with TensorFlow hidden from them) trains a small MLP from the
same initial weights and batches through several scenarios; each value it
logs (History, step logs, TensorBoard event files read back here) is compared
with the reference computed in that process by the backend's own autodiff and
plain SGD in numpy, and with what GradientNormLogger logs on TensorFlow in
this process for the same run.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from _inputs import make_inputs

from keras_trainkit.callbacks import GradientNormLogger

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_grad_norm_backend_worker.py")
# "torch_device": torch with the update count kept on the device (the path
# for an optimizer on an accelerator), run on the CPU.
RUNS = {"jax": "jax", "torch": "torch", "torch_device": "torch"}
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(RUNS[b]) is None,
                                                      reason=f"{RUNS[b]} is not installed")) for b in RUNS]
LAYERS = ("hidden", "out")


def read_scalars(run_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    events = sorted(acc.Tensors(tag), key=lambda e: e.step)
    return np.array([e.step for e in events]), np.array([e.tensor_proto.float_val[0] for e in events])


def tensorflow_runs(root, x, y, weights):
    """The worker's first scenarios on TensorFlow, logged into root/<scenario>."""

    def build(optimizer):
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                                  keras.layers.Dense(1, name="out")], name="mlp")
        model.compile(optimizer, "mse")
        model.set_weights(weights)
        return model

    def fit(model, logger, epochs=2):
        model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[logger])

    fit(build(keras.optimizers.SGD(0.05)),
        GradientNormLogger(log_dir=str(root / "full"), per_layer=True, weight_norms=True))
    fit(build(keras.optimizers.SGD(0.05, global_clipnorm=0.5)), GradientNormLogger(log_dir=str(root / "clip")),
        epochs=1)
    fit(build(keras.optimizers.SGD(0.05, gradient_accumulation_steps=2)),
        GradientNormLogger(log_dir=str(root / "accumulate"), update_freq=2))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grad_norm_backends")
    x, y, weights = make_inputs(root / "inputs.npz", seed=3)
    procs = {}
    for name, backend in RUNS.items():
        if importlib.util.find_spec(backend) is None:
            continue
        out = root / name
        out.mkdir()
        env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
               "PYTHONWARNINGS": "ignore"}
        flags = ["--device-counts"] if name == "torch_device" else []
        procs[name] = subprocess.Popen(
            [sys.executable, WORKER, str(root / "inputs.npz"), str(out), "--hide-tensorflow", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        tensorflow_runs(root / "tensorflow", x, y, weights)  # while the workers run
        results = {}
        for backend, proc in procs.items():
            _, err = proc.communicate(timeout=240)
            results[backend] = (proc.returncode, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return root, results


@pytest.fixture
def run(runs, request):
    root, results = runs
    backend = request.node.callspec.params["backend"]
    returncode, err = results[backend]
    assert returncode == 0, err[-4000:]
    with open(root / backend / "result.json") as f:
        result = json.load(f)
    assert result["backend"] == RUNS[backend]
    return result, root / backend, root / "tensorflow"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_value_matches_autodiff_and_tensorflow(run, backend):
    result, logs, tf_logs = run
    full = result["full"]
    reference = full["reference"]
    run_dir, tf_dir = logs / "full" / "train", tf_logs / "full" / "train"
    tags = ["grad_norm"] + [f"{kind}/mlp/{layer}" for kind in ("grad_norm", "weight_norm", "update_ratio")
                            for layer in LAYERS]
    for tag in tags:
        steps, values = read_scalars(run_dir, tag)
        assert list(steps) == list(range(1, 9)), tag
        rtol = 1e-4 if tag.startswith("update_ratio") else 1e-5
        np.testing.assert_allclose(values, reference[tag], rtol=rtol, err_msg=tag)
        tf_steps, tf_values = read_scalars(tf_dir, tag)
        assert list(tf_steps) == list(steps)
        np.testing.assert_allclose(values, tf_values, rtol=rtol, err_msg=f"{tag} vs TensorFlow")
    norms = reference["grad_norm"]
    history = full["history"]
    np.testing.assert_allclose(history["grad_norm"], [np.mean(norms[:4]), np.mean(norms[4:])], rtol=1e-5)
    assert history["grad_nonfinite"] == [0, 0]
    # batch_logs=True: running means of the epoch so far in every step's logs.
    running = [np.mean(norms[e * 4:e * 4 + i + 1]) for e in range(2) for i in range(4)]
    np.testing.assert_allclose([s["grad_norm"] for s in full["steps"]], running, rtol=1e-5)
    assert all(s["grad_nonfinite"] == 0 for s in full["steps"])
    # Measuring changes nothing: the same weights as a plain fit; nothing left on the model.
    assert full["weights_vs_plain"] <= 1e-7
    assert full["after"] == full["plain"] and full["after"]["patched"] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_last_batch(run, backend):
    """60 samples, batches of 16: the last one of 12 (on JAX a second trace of
    the step in the middle of each epoch)."""
    result, logs, _ = run
    partial = result["partial"]
    reference = partial["reference"]
    for tag in ("grad_norm", "grad_norm/mlp/out", "weight_norm/mlp/hidden", "update_ratio/mlp/out"):
        steps, values = read_scalars(logs / "partial" / "train", tag)
        assert list(steps) == list(range(1, 9)), tag
        np.testing.assert_allclose(values, reference[tag], rtol=1e-4 if "ratio" in tag else 1e-5, err_msg=tag)
    norms = reference["grad_norm"]
    np.testing.assert_allclose(partial["history"]["grad_norm"], [np.mean(norms[:4]), np.mean(norms[4:])], rtol=1e-5)
    running = [np.mean(norms[e * 4:e * 4 + i + 1]) for e in range(2) for i in range(4)]
    np.testing.assert_allclose([s["grad_norm"] for s in partial["steps"]], running, rtol=1e-5)
    assert partial["history"]["loss"][-1] < partial["history"]["loss"][0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_and_gradient_accumulation(run, backend):
    result, logs, tf_logs = run
    clip = result["clip"]["reference"]
    for tag in ("grad_norm", "grad_norm_clipped"):
        steps, values = read_scalars(logs / "clip" / "train", tag)
        assert list(steps) == [1, 2, 3, 4]
        np.testing.assert_allclose(values, clip[tag], rtol=1e-5, err_msg=tag)
        np.testing.assert_allclose(values, read_scalars(tf_logs / "clip" / "train", tag)[1], rtol=1e-5)
    assert max(clip["grad_norm_clipped"]) == pytest.approx(0.5) and min(clip["grad_norm"]) > 0.5
    np.testing.assert_allclose(result["clip"]["history"]["grad_norm_clipped"], [0.5], rtol=1e-5)
    # Two batches an update: 4 updates in 2 epochs, every 2nd recorded.
    acc = result["accumulate"]
    norms = acc["reference"]["grad_norm"]
    steps, values = read_scalars(logs / "accumulate" / "train", "grad_norm")
    assert list(steps) == [2, 4]
    np.testing.assert_allclose(values, [norms[1], norms[3]], rtol=1e-5)
    np.testing.assert_allclose(values, read_scalars(tf_logs / "accumulate" / "train", "grad_norm")[1], rtol=1e-5)
    np.testing.assert_allclose(acc["history"]["grad_norm"], [np.mean(norms[:2]), np.mean(norms[2:])], rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_scaling_nonfinite_updates_and_stop(run, backend):
    result, logs, _ = run
    nonfinite = result["nonfinite"]
    # Batch 2 of each epoch has an inf: skipped by the LossScaleOptimizer,
    # counted over the fit, not recorded; the others unscaled.
    assert nonfinite["history"]["grad_nonfinite"] == [1, 2]
    steps, values = read_scalars(logs / "nonfinite" / "train", "grad_norm")
    assert list(steps) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(values, nonfinite["reference"]["grad_norm"], rtol=1e-4)
    norms = nonfinite["reference"]["grad_norm"]
    np.testing.assert_allclose(nonfinite["history"]["grad_norm"], [np.mean(norms[:3]), np.mean(norms[3:])],
                               rtol=1e-4)
    # stop_on_nonfinite: stopped after the second batch of the first epoch.
    assert nonfinite["stopped_steps"] == 2
    assert nonfinite["stopped_history"]["grad_nonfinite"] == [1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_numbers_run_on_across_fits(run, backend):
    result, logs, _ = run
    norms = result["two_fits"]["reference"]["grad_norm"]
    steps, values = read_scalars(logs / "two_fits" / "train", "grad_norm")
    assert list(steps) == [3, 6, 9, 12, 15]
    np.testing.assert_allclose(values, [norms[s - 1] for s in steps], rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_buffer_and_multi_optimizer(run, backend):
    result, logs, _ = run
    norms = result["full"]["reference"]["grad_norm"]  # the same run, SGD(0.05), 2 epochs
    assert len(result["capacity"]["warnings"]) == 2
    assert "2 TensorBoard records were dropped" in result["capacity"]["warnings"][0]
    steps, values = read_scalars(logs / "capacity" / "train", "grad_norm")
    assert list(steps) == [3, 4, 7, 8]
    np.testing.assert_allclose(values, [norms[s - 1] for s in steps], rtol=1e-5)
    steps, values = read_scalars(logs / "multi" / "train", "grad_norm")
    assert list(steps) == [1, 2, 3, 4]
    assert values[0] == pytest.approx(norms[0], rel=1e-5)
    assert np.isfinite(result["multi"]["history"]["grad_norm"]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_fit_leaves_nothing_behind(run, backend):
    failure = run[0]["failure"]
    # The fit raised after its second update: the model holds those two
    # updates (on JAX, written back from the step state), no patch, no metric.
    assert failure["after"] == failure["plain"] == failure["after_plain_fit"]
    assert failure["weights_after_failure_vs_reference"] < 1e-6
    # A plain fit afterwards trains as from there.
    assert failure["weights_then_vs_reference"] < 1e-6
    assert list(failure["history"]) == ["loss"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_files_written_without_tensorflow(run, backend):
    result, logs, _ = run
    assert result["tensorflow_imported"] is False  # hidden: `import tensorflow` failed there
    files = os.listdir(logs / "full" / "train")
    assert len(files) == 1 and files[0].startswith("events.out.tfevents.") and files[0].endswith(".trainkit.v2")
    from tensorboard.backend.event_processing import event_file_loader

    events = list(event_file_loader.EventFileLoader(str(logs / "full" / "train" / files[0])).Load())
    assert events[0].file_version == "brain.Event:2"
    # One event per column (norm, 2 layers x 3) and update (8).
    assert sum(len(e.summary.value) for e in events) == 7 * 8
