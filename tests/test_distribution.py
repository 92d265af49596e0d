"""The learning-rate callbacks and GradientNormLogger under real distribution.

Real processes (`tests/_dist_worker.py`), started at once:

- two workers of a `tf.distribute.MultiWorkerMirroredStrategy` (TF_CONFIG with
  two localhost ports), against the same fit on one worker in this process;
- one JAX process with two CPU devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`), the fit on one
  device and under `keras.distribution.DataParallel`.

Each fit has `ReduceLROnPlateau`, `WarmUp` + `CosineDecay` and
`GradientNormLogger(per_layer=True)`; every model is fitted twice with the
same callbacks (the second fit runs the step compiled for the first). The rate of every update must equal the
single-replica run's exactly, and every logged norm the norm of the global
batch's gradient at the weights the distributed run started that update
from (a GradientTape here).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from _inputs import make_inputs

from keras_trainkit import callbacks as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_dist_worker.py")
HAS_JAX = importlib.util.find_spec("jax") is not None


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def single_worker_run(x, y, weights, log_dir):
    """The workers' two fits (tests/_dist_worker.py `train_twice`) on one
    TensorFlow replica: `(first, second)`."""
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="mlp")
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.set_weights(weights)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    same = [plateau, C.WarmUp(3), C.CosineDecay(12), C.GradientNormLogger(log_dir=log_dir, per_layer=True)]
    runs = []
    for _ in range(2):
        record = Record()
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[*same, record])
        runs.append({"rates": record.rates, "history": history.history, "weights": model.get_weights()})
    return runs


def batch_gradients(x, y, step, weights):
    """The full batch's gradient of update `step` (of an epoch of 4) at
    `weights`, by a GradientTape on plain TensorFlow ops."""
    start = (step % 4) * 16
    xb, yb = x[start:start + 16], y[start:start + 16]
    ws = [tf.Variable(np.asarray(w, "float32")) for w in weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((tf.tanh(xb @ ws[0] + ws[1]) @ ws[2] + ws[3] - yb) ** 2)
    return [g.numpy().astype(np.float64) for g in tape.gradient(loss, ws)]


def global_batch_norms(x, y, weights_before):
    """Per update: the global L2 norm of the full batch's gradient (and per
    layer) at the given weights."""
    out = {"grad_norm": [], "grad_norm/mlp/hidden": [], "grad_norm/mlp/out": []}
    for step, ws in enumerate(weights_before):
        grads = batch_gradients(x, y, step, ws)
        out["grad_norm"].append(np.sqrt(sum(np.sum(g ** 2) for g in grads)))
        out["grad_norm/mlp/hidden"].append(np.sqrt(np.sum(grads[0] ** 2) + np.sum(grads[1] ** 2)))
        out["grad_norm/mlp/out"].append(np.sqrt(np.sum(grads[2] ** 2) + np.sum(grads[3] ** 2)))
    return out


def read_scalars(run_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    events = sorted(acc.Tensors(tag), key=lambda e: e.step)
    return np.array([e.step for e in events]), np.array([e.tensor_proto.float_val[0] for e in events])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribution")
    x, y, weights = make_inputs(root / "inputs.npz", seed=5)
    base_env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {}
    ports = ",".join(map(str, free_ports(2)))
    for index in (0, 1):
        env = {**base_env, "KERAS_BACKEND": "tensorflow"}
        env.pop("TF_CONFIG", None)
        procs[f"worker{index}"] = subprocess.Popen(
            [sys.executable, WORKER, "mwms", str(root / "inputs.npz"), str(root), str(index), ports],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if HAS_JAX:
        env = {**base_env, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        procs["jax"] = subprocess.Popen([sys.executable, WORKER, "jax-data-parallel", str(root / "inputs.npz"),
                                         str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env)
    errors = {}
    try:
        single = single_worker_run(x, y, weights, str(root / "single"))  # while they run
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=240)
            errors[name] = (proc.returncode, err[-4000:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return root, x, y, single, errors


def load(runs, name, file):
    root, *_, errors = runs
    returncode, err = errors[name]
    assert returncode == 0, err
    with open(root / file) as f:
        return json.load(f)


def test_multi_worker_mirrored_two_processes(runs):
    root, x, y, singles, _ = runs
    workers = [load(runs, f"worker{i}", f"worker{i}.json") for i in (0, 1)]
    assert [w["replicas"] for w in workers] == [2, 2]
    for worker in workers:
        # Every update's rate: exactly the single worker's (WarmUp, CosineDecay
        # and ReduceLROnPlateau's halvings, in the optimizer's own variable),
        # in both fits; the second runs the step compiled for the first.
        assert worker["again"]["reused"]
        for run, single in ((worker, singles[0]), (worker["again"], singles[1])):
            assert run["rates"] == single["rates"]
            assert run["history"]["learning_rate"] == single["history"]["learning_rate"]
            np.testing.assert_allclose(run["history"]["loss"], single["history"]["loss"], rtol=1e-5)
            for a, b in zip(run["weights"], single["weights"]):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert singles[0]["rates"][3] == pytest.approx(0.05) and len(set(singles[0]["rates"])) == 12
    # The second fit's warm-up and decay run on from update 13, rescaled by
    # the first fit's three halvings.
    assert len(singles[1]["rates"]) == 12 and singles[1]["rates"][0] < singles[0]["rates"][-1]
    # The chief's norms: of the all-reduced gradient, i.e. the global batch's;
    # both fits write into one run (updates 1-24).
    chief = workers[0]
    expected = global_batch_norms(x, y, chief["weights_before"] + chief["again"]["weights_before"])
    for tag, values in expected.items():
        steps, logged = read_scalars(root / "logs0" / "train", tag)
        assert list(steps) == list(range(1, 25)), (tag, list(steps), sorted(os.listdir(root / "logs0" / "train")))
        np.testing.assert_allclose(logged, values, rtol=1e-5, err_msg=tag)
    for run, first in ((chief, 0), (chief["again"], 12)):
        np.testing.assert_allclose(run["history"]["grad_norm"],
                                   [np.mean(expected["grad_norm"][first + i:first + i + 4]) for i in (0, 4, 8)],
                                   rtol=1e-5)
    # Each update of the second fit applies the rate it reports: w' = w - rate * g (SGD).
    ws = chief["again"]["weights_before"] + [chief["again"]["weights"]]
    for k in range(12):
        grads = batch_gradients(x, y, k, ws[k])
        for w, w_next, g in zip(ws[k], ws[k + 1], grads):
            np.testing.assert_allclose(w_next, np.asarray(w) - chief["again"]["rates"][k] * g, rtol=1e-4, atol=1e-6)
    assert workers[1]["history"]["grad_norm"] == workers[0]["history"]["grad_norm"]
    assert not os.path.exists(root / "logs1")  # only the chief writes summaries


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
def test_jax_data_parallel_two_devices(runs):
    root, x, y, *_ = runs
    result = load(runs, "jax", "jax.json")
    assert result["devices"] == 2 and result["kernel_sharding"] == "NamedSharding"
    single, parallel = result["single"], result["data_parallel"]
    assert parallel["rates"] == single["rates"]
    assert parallel["history"]["learning_rate"] == single["history"]["learning_rate"]
    assert len(set(single["rates"])) == 12
    for name, run in (("single", single), ("data_parallel", parallel)):
        # Both fits with the same callbacks write into one run: updates 1-24.
        again = result[f"{name}_again"]
        expected = global_batch_norms(x, y, run["weights_before"] + again["weights_before"])
        for tag, values in expected.items():
            steps, logged = read_scalars(root / f"jax_{name}" / "train", tag)
            assert list(steps) == list(range(1, 25)), tag
            np.testing.assert_allclose(logged, values, rtol=1e-5, err_msg=f"{name}: {tag}")
        for fit_run, first in ((run, 0), (again, 12)):
            np.testing.assert_allclose(fit_run["history"]["grad_norm"],
                                       [np.mean(expected["grad_norm"][first + i:first + i + 4]) for i in (0, 4, 8)],
                                       rtol=1e-5)
        assert again["reused"]  # the second fit compiled nothing
    np.testing.assert_allclose(parallel["history"]["grad_norm"], single["history"]["grad_norm"], rtol=1e-5)
    # The second fits (the steps of the first, rates rescaled by ReduceLROnPlateau) agree too,
    # and each of their updates applies the rate it reports: w' = w - rate * g (SGD).
    again, parallel_again = result["single_again"], result["data_parallel_again"]
    assert parallel_again["rates"] == again["rates"] and len(again["rates"]) == 12
    for run in (again, parallel_again):
        ws = run["weights_before"]
        for k in range(11):
            grads = batch_gradients(x, y, k, ws[k])
            for w, w_next, g in zip(ws[k], ws[k + 1], grads):
                np.testing.assert_allclose(w_next, np.asarray(w) - run["rates"][k] * g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(parallel_again["history"]["loss"], again["history"]["loss"], rtol=1e-5)
    for a, b in zip(parallel_again["weights"], again["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Validation and evaluate() before and after the fit work with the
    # logger's metric joining and leaving the model's state.
    assert "val_grad_norm" not in parallel["history"] and len(parallel["history"]["val_loss"]) == 3
    assert result["evaluate"][1] == pytest.approx(parallel_again["history"]["val_loss"][-1], rel=1e-6)
    for a, b in zip(parallel["weights"], single["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
