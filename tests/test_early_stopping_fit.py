"""EarlyStopping inside `model.fit()`: restore on every end, EMA, optimizer state,
resume after interruption (in-process and in a process killed by a signal),
deep copies, and MirroredStrategy on two logical CPU devices.

The monitored quantity is mostly injected into the logs (`score`) so that the
best and stopping epochs are known in advance while the weights really train.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_trainkit.callbacks import EarlyStopping

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _early_stopping_worker as worker  # noqa: E402

ROOT = os.path.dirname(HERE)
SCORES = worker.SCORES  # best at epoch 2; patience 3 stops at epoch 5


def make_model(optimizer=None, batch_norm=False):
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    model = keras.Sequential(layers + [keras.layers.Dense(1)])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01), loss="mse")
    return model


class Record(keras.callbacks.Callback):
    """Weights, EMA weights and optimizer variables at every epoch end."""

    def __init__(self):
        super().__init__()
        self.weights, self.ema, self.optimizer = {}, {}, {}

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.weights[epoch] = self.model.get_weights()
        self.optimizer[epoch] = [v.numpy() for v in opt.variables]
        if opt.use_ema:
            self.ema[epoch] = [a.numpy() for a in opt._model_variables_moving_average]


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


class Interrupt(keras.callbacks.Callback):
    """Simulates a crash by raising at the given hook and epoch."""

    def __init__(self, epoch, hook="on_epoch_begin"):
        super().__init__()
        setattr(self, hook, self._maybe_raise)
        self.epoch = epoch

    def _maybe_raise(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def fit(model, callbacks, epochs=worker.EPOCHS, scores=SCORES, **kwargs):
    x, y = worker.make_data()
    return model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=[worker.scores_callback(keras, scores)] + callbacks, **kwargs)


def assert_weights_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def weights_equal(actual, expected):
    return all(np.array_equal(a, e) for a, e in zip(actual, expected, strict=True))


# ------------------------------------------------------------ restore on every end
@pytest.mark.parametrize(("end", "patience", "epochs", "extra", "reason", "epochs_run"), [
    ("early stop", 3, 10, [], "patience", 6),
    ("last epoch", 10, 5, [], "completed", 5),
    ("other callback", 10, 10, [StopAt(3)], "external", 4),
])
def test_restores_best_weights_whatever_ends_training(end, patience, epochs, extra, reason, epochs_run):
    model, record = make_model(), Record()
    es = EarlyStopping(monitor="score", mode="min", patience=patience, restore_best_weights=True)
    history = fit(model, [es, record] + extra, epochs=epochs)
    assert len(history.epoch) == epochs_run and es.stop_reason == reason
    assert es.best_epoch == 2 and es.best == 0.5
    assert_weights_equal(model.get_weights(), record.weights[2])
    assert history.history["best_epoch"] == [0, 1] + [2] * (epochs_run - 2)


def test_same_decisions_as_keras_on_real_val_loss():
    (x, y), (xv, yv) = (worker.make_data(), worker.make_data())
    model = make_model(keras.optimizers.SGD(0.3, momentum=0.9))  # noisy on purpose
    kwargs = dict(monitor="val_loss", patience=2, min_delta=1e-3)
    ours, theirs = EarlyStopping(**kwargs), keras.callbacks.EarlyStopping(**kwargs)
    history = model.fit(x, y, validation_data=(xv, yv + 0.1), batch_size=16, epochs=30, shuffle=False,
                        verbose=0, callbacks=[ours, theirs])
    assert len(history.epoch) < 30  # it did stop early
    assert (ours.best, ours.best_epoch, ours.stopped_epoch, ours.wait) == (
        theirs.best, theirs.best_epoch, theirs.stopped_epoch, theirs.wait)
    assert ours.best == min(history.history["val_loss"])


def test_ema_weights_of_best_epoch_restored():
    def run(callback):
        model, record = make_model(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), batch_norm=True), Record()
        fit(model, [callback, record])
        return model, record

    model, record = run(EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True))
    trainable = {id(v): i for i, v in enumerate(model.trainable_variables)}
    expected = [record.ema[2][trainable[id(v)]] if id(v) in trainable else raw
                for v, raw in zip(model.weights, record.weights[2], strict=True)]
    assert_weights_equal(model.get_weights(), expected)
    assert not weights_equal(expected, record.weights[2])  # the EMA really differs
    assert len(model.non_trainable_variables) == 2  # BatchNormalization's statistics

    # Keras' callback puts the raw weights back over the EMA ones.
    model, record = run(keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=3,
                                                      restore_best_weights=True))
    assert_weights_equal(model.get_weights(), record.weights[2])


def test_restore_optimizer_state():
    model, record = make_model(keras.optimizers.Adam(0.01)), Record()
    es = EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True,
                       restore_optimizer_state=True)
    fit(model, [es, record])
    assert_weights_equal([v.numpy() for v in model.optimizer.variables], record.optimizer[2])
    assert int(model.optimizer.iterations.numpy()) == 3 * 4  # 3 epochs of 4 steps
    assert not weights_equal(record.optimizer[2], record.optimizer[5])


def test_weights_on_disk(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, record = make_model(), Record()
    es = EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True, weights_on_disk=True)
    fit(model, [es, record])
    assert es.best_weights is None and os.listdir(tmp_path) == []
    assert_weights_equal(model.get_weights(), record.weights[2])


def test_check_finite_on_nan_loss():
    x, y = worker.make_data()
    y[40:] = np.nan  # the loss is NaN from the third batch of each epoch on
    model = make_model()
    es = EarlyStopping(monitor="loss", check_finite=True, restore_best_weights=True)
    history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=[es])
    assert len(history.epoch) == 1 and es.stop_reason == "non_finite" and es.best is None


# ------------------------------------------------------ a monitored one-element array
def f1_model(units, optimizer):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="sigmoid")])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer, "binary_crossentropy" if units == 1 else "categorical_crossentropy",
                  metrics=[keras.metrics.F1Score(average=None, threshold=0.5, name="f1")])
    return model


def test_f1_score_average_none_single_output_like_keras():
    # F1Score(average=None) on one output logs a one-element array per epoch.
    x, y = worker.make_data()
    y = (y > 0).astype("float32")
    model, record = f1_model(1, keras.optimizers.SGD(0.05, momentum=0.9)), Record()
    ours = EarlyStopping(monitor="val_f1", patience=1, min_delta=1e-3, restore_best_weights=True)
    theirs = keras.callbacks.EarlyStopping(monitor="val_f1", patience=1, min_delta=1e-3)
    history = model.fit(x, y, validation_data=(x[::-1][:32], y[::-1][:32]), batch_size=16, epochs=30,
                        shuffle=False, verbose=0, callbacks=[ours, theirs, record])
    assert np.shape(history.history["val_f1"][0]) == (1,) and len(history.epoch) < 30
    assert ours.monitor_op is theirs.monitor_op is keras.ops.greater and ours.direction == "max"
    assert (ours.best, ours.best_epoch, ours.stopped_epoch, ours.wait) == (
        float(theirs.best[0]), theirs.best_epoch, theirs.stopped_epoch, theirs.wait)
    assert ours.best_epoch > 0 and ours.best == max(float(f[0]) for f in history.history["val_f1"])
    assert_weights_equal(model.get_weights(), record.weights[ours.best_epoch])


def test_f1_score_average_none_several_classes_raises():
    x, y = worker.make_data()
    y = keras.utils.to_categorical(np.digitize(y[:, 0], [-1.0, 1.0]), 3)
    model = f1_model(3, keras.optimizers.SGD(0.05))
    with pytest.raises(ValueError, match=r"'val_f1' with shape \(3,\).*average='macro'.*monitor='val_f1'"):
        model.fit(x, y, validation_data=(x, y), batch_size=32, epochs=2, verbose=0,
                  callbacks=[EarlyStopping(monitor="val_f1")])


# ------------------------------------------------------------ deep copy and reuse
def test_deepcopy_and_reuse_across_fits():
    # One model (plain SGD: no optimizer state to carry over) reset before
    # each fit(), so the compiled train function is reused.
    model = make_model(keras.optimizers.SGD(0.05))
    initial = model.get_weights()
    es = EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True)
    fresh_copy = copy.deepcopy(es)  # what Keras Tuner does before each trial
    fit(model, [es])
    used_copy = copy.deepcopy(es)  # after fit(): must not copy the model
    assert used_copy.model is None and es.model is model and used_copy.best_epoch == 2
    results = []
    for cb in (es, fresh_copy, used_copy):
        model.set_weights(initial)
        fit(model, [cb], scores=[3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9, 1.0, 1.0, 1.0])
        results.append((cb.best, cb.best_epoch, cb.stopped_epoch, cb.stop_reason, model.get_weights()))
    for other in results[1:]:
        assert other[:4] == results[0][:4] == (2.0, 1, 4, "patience")
        assert_weights_equal(other[4], results[0][4])


def test_keras_tuner_copies_a_used_callback_per_trial(tmp_path):
    keras_tuner = pytest.importorskip("keras_tuner")
    es = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True, weights_on_disk=True,
                       backup_dir=str(tmp_path / "es"))
    fit(make_model(), [es], epochs=2)  # now it has held a model and results

    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Choice("units", [4, 8])),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.05), "mse")
        return model

    tuner = keras_tuner.GridSearch(build, objective="loss", max_trials=2, directory=str(tmp_path / "kt"))
    x, y = worker.make_data()
    tuner.search(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[es])
    trials = list(tuner.oracle.trials.values())
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
    assert es.best_epoch == 1 and es.stop_reason == "completed"  # the original is untouched
    assert not os.path.exists(tmp_path / "es")


# ----------------------------------------------------- resume, in-process crashes
@pytest.fixture(scope="module")
def uninterrupted():
    keras.backend.clear_session()
    model = make_model()
    fit(model, [EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True,
                              restore_optimizer_state=True)])
    return model.get_weights(), [v.numpy() for v in model.optimizer.variables]


def crash_and_resume(tmp_path, early_stopping, crash):
    """Runs until `crash` raises, then again on a new model, as a restarted job would."""
    bar = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    callbacks = crash([early_stopping, bar])
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(), callbacks)
    model = make_model()
    history = fit(model, [early_stopping, bar])
    return model, history


def ours(tmp_path):
    return EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True,
                         restore_optimizer_state=True, backup_dir=str(tmp_path / "early_stopping"))


def test_resume_matches_uninterrupted_run(tmp_path, uninterrupted):
    es = ours(tmp_path)
    model, history = crash_and_resume(tmp_path, es, lambda cbs: cbs + [Interrupt(4)])
    assert history.epoch == [4, 5] and (es.best_epoch, es.stopped_epoch, es.stop_reason) == (2, 5, "patience")
    assert_weights_equal(model.get_weights(), uninterrupted[0])
    assert_weights_equal([v.numpy() for v in model.optimizer.variables], uninterrupted[1])
    assert not os.path.exists(tmp_path / "early_stopping")


def test_resume_when_crashing_between_the_two_backups(tmp_path, uninterrupted):
    # EarlyStopping saved its state for epoch 4, BackupAndRestore did not:
    # the job restarts at epoch 3 from EarlyStopping's previous state.
    es = ours(tmp_path)
    model, history = crash_and_resume(
        tmp_path, es, lambda cbs: [cbs[0], Interrupt(3, "on_epoch_end"), cbs[1]])
    assert history.epoch == [3, 4, 5]
    assert_weights_equal(model.get_weights(), uninterrupted[0])


def test_keras_early_stopping_forgets_on_resume(tmp_path, uninterrupted):
    # The control: Keras' callback restarts its patience, best value and best
    # weights, so the resumed run ends elsewhere.
    es = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=3, restore_best_weights=True)
    model, history = crash_and_resume(tmp_path, es, lambda cbs: cbs + [Interrupt(4)])
    assert history.epoch == [4, 5, 6, 7, 8, 9] and es.best_epoch == 9
    assert not weights_equal(model.get_weights(), uninterrupted[0])


# ------------------------------------------- resume, a real process killed by a signal
def run_worker(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, os.path.join(HERE, "_early_stopping_worker.py"), *args],
                            cwd=ROOT, env=env, text=True, **kwargs)


def load_result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        summary = json.load(f)
    with np.load(os.path.join(workdir, "result.npz")) as data:
        arrays = {k: data[k] for k in data}
    return summary, arrays


def worker_result(proc, load):
    """Waits for a worker started by a fixture; returns `load()` once it succeeded."""
    def result():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, (err or out or "")[-3000:]
        return load()

    return result


@pytest.fixture(scope="module", autouse=True)
def _start_workers_early(request):
    """Starts the worker processes when the module starts, so that they run
    while the in-process tests do."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    if "test_resume_after_process_killed" in selected:
        request.getfixturevalue("reference_process")
    if "test_mirrored_strategy_two_logical_cpus" in selected:
        request.getfixturevalue("mirrored_process")


@pytest.fixture(scope="module")
def reference_process(tmp_path_factory):
    """The uninterrupted run, in its own process (started early, read late)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    proc = run_worker("resume", workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield worker_result(proc, lambda: load_result(workdir))
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def mirrored_process(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mirrored") / "mirrored.json")
    proc = run_worker("mirrored", out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def load():
        with open(out) as f:
            return json.load(f)

    yield worker_result(proc, load)
    proc.kill()
    proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.long)],
                         ids=["SIGKILL", "SIGTERM"])
def test_resume_after_process_killed(tmp_path, reference_process, sig):
    workdir = str(tmp_path)
    proc = run_worker("resume", workdir, "--pause-at", "4", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()  # blocks until the worker is mid-epoch 4
        assert line.strip() == "PAUSED", proc.stderr.read()[-3000:]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -sig
    saved = sorted(os.listdir(tmp_path / "early_stopping"))
    assert saved == ["early_stopping_best-000002.npz", "early_stopping_state-000003.json",
                     "early_stopping_state-000004.json"]

    restarted = run_worker("resume", workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = restarted.communicate(timeout=240)
    assert restarted.returncode == 0, err[-3000:]
    summary, arrays = load_result(workdir)
    ref_summary, ref_arrays = reference_process()
    assert summary["epochs_run"] == [4, 5] and ref_summary["epochs_run"] == [0, 1, 2, 3, 4, 5]
    for key in ("best", "best_epoch", "stopped_epoch", "stop_reason"):
        assert summary[key] == ref_summary[key]
    assert (summary["best_epoch"], summary["stopped_epoch"]) == (2, 5)
    assert summary["leftover"] == ["result.json", "result.npz"]  # both backups cleaned up
    assert sorted(arrays) == sorted(ref_arrays)
    for key in ref_arrays:  # weights and optimizer variables, bit for bit
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)


# ---------------------------------------------------------------- MirroredStrategy
@pytest.mark.slow
def test_mirrored_strategy_two_logical_cpus(mirrored_process):
    result = mirrored_process()
    assert result["num_replicas"] == 2
    assert (result["best_epoch"], result["stopped_epoch"], result["stop_reason"]) == (2, 5, "patience")
    assert result["ema_differs_from_raw"]
    assert result["replicas_ok"] and result["values_ok"], "restored EMA weights not on every replica"
    assert result["optimizer_ok"]
    assert result["resume_ok"] and result["resumed"] == [2, 5, "patience"]
