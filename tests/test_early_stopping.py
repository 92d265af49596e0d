"""Unit tests of EarlyStopping: hooks driven with synthetic logs and a stub model.

The stub model's weights at epoch `e` are all equal to `e`, so restored weights
name the epoch they came from.
"""

from __future__ import annotations

import copy
import math
import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keras_trainkit.callbacks import EarlyStopping

MISSING = object()


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Overrides conftest's: these tests build (almost) no Keras objects, and
    `clear_session()`'s default `gc.collect()` costs ~0.3 s a test here."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)


class StubVariable:
    def __init__(self, value):
        self.value = np.asarray(value, dtype="float32")

    def numpy(self):
        return self.value.copy()

    def assign(self, value):
        self.value = np.asarray(value, dtype="float32").copy()


class StubOptimizer:
    def __init__(self, n_trainable, use_ema=False):
        self.variables = [StubVariable(0.0), StubVariable(np.zeros(3))]
        self.use_ema = use_ema
        if use_ema:
            self._model_variables_moving_average = [StubVariable(np.zeros(2)) for _ in range(n_trainable)]

    def mark(self, epoch):
        for var in self.variables:
            var.assign(np.full_like(var.value, 1000 + epoch))
        for var in getattr(self, "_model_variables_moving_average", []):
            var.assign(np.full_like(var.value, 100 + epoch))


class StubModel:
    """What EarlyStopping (ours and Keras') touches: weights, stop flag, metrics."""

    def __init__(self, optimizer=None):
        self.trainable_variables = [StubVariable(np.zeros(2)), StubVariable(np.zeros(2))]
        self.non_trainable_variables = [StubVariable(np.zeros(2))]
        self.stop_training = False
        self.metrics = []
        self.optimizer = optimizer

    @property
    def weights(self):
        return self.trainable_variables + self.non_trainable_variables

    def get_weights(self):
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        for var, w in zip(self.weights, weights, strict=True):
            var.assign(w)

    def mark(self, epoch):
        for var in self.weights:
            var.assign(np.full_like(var.value, epoch))
        if self.optimizer is not None:
            self.optimizer.mark(epoch)

    def marker(self):
        """The epoch the current weights come from."""
        values = {float(w.flat[0]) for w in self.get_weights()}
        assert len(values) == 1, values
        return values.pop()

    def __deepcopy__(self, memo):
        raise AssertionError("the model must never be deep-copied")


def drive(cb, values, model=None, monitor="val_loss", params_epochs=None, start=0, end=True):
    """Runs `cb` through a training of len(values) epochs; returns per-epoch rows."""
    model = model if model is not None else StubModel()
    cb.set_model(model)
    cb.set_params({"epochs": params_epochs or len(values), "verbose": 0})
    cb.on_train_begin()
    rows = []
    for epoch in range(start, len(values)):
        cb.on_epoch_begin(epoch)
        model.mark(epoch)
        logs = {"loss": 1.0}
        if values[epoch] is not MISSING:
            logs[monitor] = values[epoch]
        cb.on_epoch_end(epoch, logs)
        rows.append((epoch, model.stop_training, cb.wait, cb.best, cb.best_epoch, logs))
        if model.stop_training:
            break
    if end:
        cb.on_train_end()
    return model, rows


def same_float(a, b):
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------- drop-in parity
def run_both(values, **kwargs):
    keras_cb = keras.callbacks.EarlyStopping(**kwargs)
    ours = EarlyStopping(**kwargs, best_epoch_key=None)
    keras_model, keras_rows = drive(keras_cb, values)
    our_model, our_rows = drive(ours, values)
    return (keras_cb, keras_model, keras_rows), (ours, our_model, our_rows)


def assert_same_as_keras(values, **kwargs):
    (k, km, krows), (o, om, orows) = run_both(values, **kwargs)
    assert [r[:3] for r in orows] == [r[:3] for r in krows]  # epoch, stop flag, wait
    for kr, orow in zip(krows, orows, strict=True):
        assert same_float(orow[3], kr[3]) and orow[4] == kr[4]
    assert o.stopped_epoch == k.stopped_epoch
    assert o.best_epoch == k.best_epoch
    assert om.marker() == km.marker()
    return o, om


PARITY_CASES = [
    # values, kwargs, expected (stopped_epoch, best_epoch)
    ([1.0, 0.9, 0.95, 0.97, 0.99, 0.8], dict(patience=2), (3, 1)),
    ([1.0, 0.9, 0.95, 0.97, 0.99, 0.8], dict(patience=0), (2, 1)),
    ([1.0, 0.95, 0.92, 0.9, 0.8], dict(patience=1, min_delta=0.04), (2, 1)),
    ([0.1, 0.2, 0.15, 0.25, 0.24, 0.23], dict(patience=2, mode="max", monitor="val_loss"), (5, 3)),
    # baseline: improvements that miss it do not reset the count, but an
    # improving epoch never stops training.
    ([1.0, 0.9, 0.8, 0.7, 0.6], dict(patience=2, baseline=0.5), (0, 4)),
    ([1.0, 0.9, 0.95, 0.97], dict(patience=2, baseline=0.5), (2, 1)),
    ([1.0, 0.9, 0.4, 0.7, 0.6, 0.5], dict(patience=2, baseline=0.5), (4, 2)),
    # warm-up epochs are ignored entirely.
    ([0.1, 0.2, 0.9, 0.95, 0.97], dict(patience=1, start_from_epoch=2), (3, 2)),
    ([1.0, 0.9, 0.8], dict(patience=1), (0, 2)),
    # a NaN never improves on a finite best (without check_finite).
    ([1.0, float("nan"), float("nan"), 0.5], dict(patience=2), (2, 0)),
    ([float("nan"), 1.0, 0.5], dict(patience=1), (1, 0)),
    ([1.0, float("inf"), 0.5], dict(patience=1), (1, 0)),
    # compared in float32 like Keras: 1 - 1e-9 is not below 1.
    ([1.0, 1.0 - 1e-9, 0.9], dict(patience=0), (1, 0)),
    ([1.0, 1.0 + 1e-9, 0.9], dict(patience=0, mode="max"), (1, 0)),
]


@pytest.mark.parametrize(("values", "kwargs", "expected"), PARITY_CASES)
def test_matches_keras_on_synthetic_logs(values, kwargs, expected):
    kwargs = {"restore_best_weights": True, **kwargs}
    ours, model = assert_same_as_keras(values, **kwargs)
    assert (ours.stopped_epoch, ours.best_epoch) == expected
    assert model.marker() == expected[1]


values_st = st.lists(
    st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.0 - 1e-9, 1.05, 2.0, -1.0]),
              st.floats(-10, 10, allow_nan=False, width=32),
              st.just(float("nan"))),
    min_size=1, max_size=12,
)


@settings(max_examples=int(os.environ.get("TRAINKIT_HYPOTHESIS_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=values_st,
    patience=st.integers(0, 3),
    min_delta=st.sampled_from([0.0, 0.05, 0.5]),
    mode=st.sampled_from(["min", "max", "auto"]),
    baseline=st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0])),
    start_from_epoch=st.integers(0, 3),
    restore=st.booleans(),
)
# A float32 subnormal: TensorFlow's comparison (Keras') flushes it to zero.
@example(values=[0.0, -7.497507303523501e-41], patience=0, min_delta=0.0, mode="min", baseline=None,
         start_from_epoch=0, restore=False)
@example(values=[1e-39, 0.0], patience=0, min_delta=0.0, mode="max", baseline=None, start_from_epoch=0,
         restore=True)
def test_matches_keras_property(values, patience, min_delta, mode, baseline, start_from_epoch, restore):
    assert_same_as_keras(
        values, patience=patience, min_delta=min_delta, mode=mode, baseline=baseline,
        start_from_epoch=start_from_epoch, restore_best_weights=restore,
    )


@pytest.fixture(scope="module")
def compiled_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy",
                  metrics=["acc", "mae", keras.metrics.AUC(name="auc"), keras.metrics.Precision(name="p")])
    model.evaluate(np.zeros((4, 3)), np.array([0, 1, 0, 1]), verbose=0)  # builds the metrics
    return model


@pytest.mark.parametrize(("monitor", "direction"), [
    ("val_loss", "min"), ("loss", "min"), ("acc", "max"), ("val_acc", "max"), ("val_auc", "max"),
    ("auc", "max"), ("val_mae", "min"), ("p", "max"),
])
def test_auto_mode_infers_like_keras(compiled_model, monitor, direction):
    ours = EarlyStopping(monitor=monitor)
    ours.set_model(compiled_model)
    ours.on_train_begin()
    ours.on_epoch_end(0, {monitor: 1.0})
    keras_cb = keras.callbacks.EarlyStopping(monitor=monitor)
    keras_cb.set_model(compiled_model)
    keras_cb._set_monitor_op()
    assert ours.direction == direction
    assert keras_cb.monitor_op is (keras.ops.greater if direction == "max" else keras.ops.less)


def test_auto_mode_unknown_metric_raises_like_keras(compiled_model):
    ours = EarlyStopping(monitor="val_mystery")
    ours.set_model(compiled_model)
    ours.on_train_begin()
    with pytest.raises(ValueError, match=r"monitor='val_mystery'.*mode='min'"):
        ours.on_epoch_end(0, {"val_mystery": 1.0})
    keras_cb = keras.callbacks.EarlyStopping(monitor="val_mystery")
    keras_cb.set_model(compiled_model)
    with pytest.raises(ValueError):
        keras_cb.on_epoch_end(0, {"val_mystery": 1.0})


def test_defaults_match_keras():
    import inspect

    ours = inspect.signature(EarlyStopping).parameters
    theirs = inspect.signature(keras.callbacks.EarlyStopping).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, p in theirs.items():
        assert ours[name].default == p.default, name
    extra = [p for name, p in ours.items() if name not in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)


# ------------------------------------------------------------ missing monitor
def test_missing_monitor_warns_like_keras():
    with pytest.warns(UserWarning, match=r"Early stopping conditioned on metric `val_loss` which is not available"):
        _, rows = drive(EarlyStopping(patience=0), [MISSING, MISSING])
    assert not any(r[1] for r in rows)
    with pytest.warns(UserWarning, match="Available metrics are: loss"):
        drive(keras.callbacks.EarlyStopping(patience=0), [MISSING])


def test_missing_monitor_raises_with_require_monitor():
    cb = EarlyStopping(require_monitor=True)
    with pytest.raises(ValueError, match=r"`monitor`.*available: loss.*Received: monitor='val_loss'"):
        drive(cb, [MISSING])
    drive(EarlyStopping(require_monitor=True), [1.0, 0.5])  # present: fine


# -------------------------------------------------------------- bad arguments
BAD_ARGUMENTS = [
    ("patience", -1), ("patience", 1.5), ("patience", True),
    ("mode", "minimum"), ("mode", None),
    ("min_delta", -0.1), ("min_delta", float("nan")), ("min_delta", "0.1"),
    ("min_delta_kind", "percent"),
    ("start_from_epoch", -2), ("verbose", -1),
    ("baseline", float("inf")), ("baseline", "low"),
    ("restore_best_weights", "yes"), ("check_finite", 1), ("require_monitor", None),
    ("stopping_threshold", float("nan")), ("divergence_threshold", "big"),
    ("monitor", ""), ("monitor", 3), ("backup_dir", ""), ("backup_dir", 5),
    ("best_epoch_key", ""),
]


@pytest.mark.parametrize(("name", "value"), BAD_ARGUMENTS)
def test_bad_argument_names_argument_and_value(name, value):
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}={value!r}".replace("(", r"\(")):
        EarlyStopping(**{name: value})


@pytest.mark.parametrize("name", ["restore_optimizer_state", "weights_on_disk"])
def test_options_needing_restore_best_weights(name):
    with pytest.raises(ValueError, match=rf"`{name}` needs `restore_best_weights=True`"):
        EarlyStopping(**{name: True})
    EarlyStopping(restore_best_weights=True, **{name: True})


@pytest.mark.parametrize(("mode", "stop", "div"), [("min", 1.0, 0.5), ("min", 1.0, 1.0), ("max", 0.5, 1.0)])
def test_inconsistent_thresholds(mode, stop, div):
    with pytest.raises(ValueError, match=r"`stopping_threshold`.*divergence_threshold"):
        EarlyStopping(mode=mode, stopping_threshold=stop, divergence_threshold=div)


def test_inconsistent_thresholds_detected_after_auto_inference():
    cb = EarlyStopping(stopping_threshold=1.0, divergence_threshold=0.5)  # val_loss: min
    with pytest.raises(ValueError, match="stopping_threshold"):
        drive(cb, [1.0])


# ------------------------------------------------------------------ check_finite
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_stops_at_once_and_restores(bad):
    cb = EarlyStopping(patience=10, check_finite=True, restore_best_weights=True)
    model, rows = drive(cb, [1.0, 0.5, 0.7, bad, 0.1])
    assert rows[-1][0] == 3 and rows[-1][1]
    assert (cb.stopped_epoch, cb.stop_reason, cb.best_epoch, cb.best) == (3, "non_finite", 1, 0.5)
    assert model.marker() == 1


def test_check_finite_applies_during_warm_up():
    cb = EarlyStopping(patience=10, check_finite=True, start_from_epoch=5)
    _, rows = drive(cb, [1.0, float("nan"), 0.5])
    assert len(rows) == 2 and cb.stop_reason == "non_finite" and cb.best is None


# -------------------------------------------------------------------- thresholds
@pytest.mark.parametrize(("mode", "values", "threshold", "stopped"), [
    ("min", [1.0, 0.5, 0.2, 0.1], 0.2, 2),   # reaching the threshold is enough
    ("min", [1.0, 0.5, 0.21, 0.1], 0.2, 3),
    ("max", [0.1, 0.5, 0.9, 0.95], 0.9, 2),
])
def test_stopping_threshold(mode, values, threshold, stopped):
    cb = EarlyStopping(mode=mode, patience=10, stopping_threshold=threshold, restore_best_weights=True)
    model, _ = drive(cb, values)
    assert (cb.stopped_epoch, cb.stop_reason, cb.best_epoch) == (stopped, "stopping_threshold", stopped)
    assert model.marker() == stopped


@pytest.mark.parametrize(("mode", "values", "threshold", "stopped"), [
    ("min", [1.0, 0.5, 10.0, 10.5, 0.1], 10.0, 3),  # equal is not past it
    ("max", [1.0, 0.5, 0.3, 0.2], 0.4, 2),
])
def test_divergence_threshold(mode, values, threshold, stopped):
    cb = EarlyStopping(mode=mode, patience=10, divergence_threshold=threshold, restore_best_weights=True)
    model, _ = drive(cb, values)
    assert (cb.stopped_epoch, cb.stop_reason) == (stopped, "divergence_threshold")
    assert model.marker() == cb.best_epoch == (1 if mode == "min" else 0)


def test_thresholds_wait_for_start_from_epoch():
    cb = EarlyStopping(patience=10, start_from_epoch=2, stopping_threshold=0.5, divergence_threshold=5.0)
    drive(cb, [0.1, 9.0, 1.0, 0.4])
    assert (cb.stopped_epoch, cb.stop_reason) == (3, "stopping_threshold")


# ------------------------------------------------------------------- min_delta
@pytest.mark.parametrize(("mode", "best", "current", "improves"), [
    ("min", 10.0, 9.5, False), ("min", 10.0, 8.9, True),      # needs x < 10 - 1
    ("min", -10.0, -10.5, False), ("min", -10.0, -11.5, True),  # magnitude: x < -11
    ("max", 10.0, 10.5, False), ("max", 10.0, 11.5, True),
    ("max", -10.0, -9.5, False), ("max", -10.0, -8.9, True),
    ("min", 0.0, -1e-9, True),
])
def test_relative_min_delta(mode, best, current, improves):
    cb = EarlyStopping(mode=mode, patience=5, min_delta=0.1, min_delta_kind="relative")
    drive(cb, [best, current])
    assert (cb.best_epoch == 1) is improves


def test_relative_min_delta_equals_absolute_scaled():
    values = [4.0, 3.7, 3.5, 3.3, 3.28, 3.0, 2.99]
    rel = EarlyStopping(patience=1, min_delta=0.05, min_delta_kind="relative")
    drive(rel, values)
    # Relative 5% of a best near 3.5 is ~0.17: 3.3 < 3.5-0.175 improves, 3.28 does not, stop at 4.
    assert (rel.best_epoch, rel.stopped_epoch) == (3, 4)


# ------------------------------------------------------------- restore & records
def test_restore_on_natural_end_and_records():
    cb = EarlyStopping(patience=5, restore_best_weights=True)
    model, rows = drive(cb, [1.0, 0.4, 0.6, 0.7])
    assert (cb.stop_reason, cb.stopped_epoch, cb.best_epoch, cb.best) == ("completed", 0, 1, 0.4)
    assert model.marker() == 1
    assert [r[5]["best_epoch"] for r in rows] == [0, 1, 1, 1]


def test_restore_when_another_callback_stops():
    cb = EarlyStopping(patience=5, restore_best_weights=True)
    model, _ = drive(cb, [1.0, 0.4, 0.6], end=False)
    model.stop_training = True
    cb.on_train_end()
    assert cb.stop_reason == "external" and model.marker() == 1


def test_no_restore_by_default():
    model, _ = drive(EarlyStopping(patience=5), [1.0, 0.4, 0.6, 0.7])
    assert model.marker() == 3


def test_best_epoch_key_in_logs():
    cb = EarlyStopping(patience=5, start_from_epoch=2, best_epoch_key="es_best")
    _, rows = drive(cb, [0.1, 0.2, 0.9, 0.5, 0.7])
    assert [r[5]["es_best"] for r in rows] == [-1, -1, 2, 3, 3]
    _, rows = drive(EarlyStopping(best_epoch_key=None), [1.0])
    assert set(rows[0][5]) == {"loss", "val_loss"}


def test_restore_optimizer_state():
    model = StubModel(StubOptimizer(2))
    cb = EarlyStopping(patience=1, restore_best_weights=True, restore_optimizer_state=True)
    drive(cb, [1.0, 0.4, 0.6, 0.7], model=model)
    assert model.marker() == 1
    assert [float(v.value.flat[0]) for v in model.optimizer.variables] == [1001.0, 1001.0]


def test_optimizer_untouched_without_restore_optimizer_state():
    model = StubModel(StubOptimizer(2))
    drive(EarlyStopping(patience=5, restore_best_weights=True), [1.0, 0.4, 0.6, 0.7], model=model)
    assert model.marker() == 1
    assert [float(v.value.flat[0]) for v in model.optimizer.variables] == [1003.0, 1003.0]


def test_ema_weights_of_best_epoch_restored():
    model = StubModel(StubOptimizer(2, use_ema=True))
    drive(EarlyStopping(patience=1, restore_best_weights=True), [1.0, 0.4, 0.6, 0.7], model=model)
    # Trainable variables get the best epoch's EMA; non-trainable ones its raw values.
    assert [float(v.value.flat[0]) for v in model.trainable_variables] == [101.0, 101.0]
    assert [float(v.value.flat[0]) for v in model.non_trainable_variables] == [1.0]


def test_weights_on_disk(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cb = EarlyStopping(patience=1, restore_best_weights=True, weights_on_disk=True)
    model, _ = drive(cb, [1.0, 0.4, 0.6], end=False)
    assert cb.best_weights is None
    (tmp_dir,) = os.listdir(tmp_path)
    assert os.listdir(tmp_path / tmp_dir) == ["early_stopping_best-000001.npz"]
    cb.on_train_end()
    assert model.marker() == 1 and os.listdir(tmp_path) == []


def test_memory_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    drive(cb, [1.0, 0.4, 0.6])
    assert os.listdir(tmp_path) == [] and len(cb.best_weights) == 3


def test_verbose_messages(capsys):
    drive(EarlyStopping(patience=1, restore_best_weights=True, verbose=1), [1.0, 0.4, 0.6])
    assert capsys.readouterr().out.splitlines() == [
        "Epoch 3: early stopping", "Restoring model weights from the end of the best epoch: 2.",
    ]
    drive(EarlyStopping(check_finite=True, verbose=1), [1.0, float("nan")])
    assert capsys.readouterr().out.splitlines() == ["Epoch 2: early stopping (non_finite)"]


def test_reusable_across_fits():
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    drive(cb, [1.0, 0.2, 0.6])
    model, _ = drive(cb, [5.0, 4.0, 3.0, 3.5])  # fresh state: 0.2 is forgotten
    assert (cb.best, cb.best_epoch, cb.stop_reason, cb.stopped_epoch) == (3.0, 2, "patience", 3)
    assert model.marker() == 2


def test_deepcopy_copies_configuration_not_model():
    cb = EarlyStopping(patience=2, restore_best_weights=True, min_delta=0.1)
    drive(cb, [1.0, 0.5, 0.6])
    clone = copy.deepcopy(cb)  # StubModel.__deepcopy__ raises if the model is copied
    assert clone.model is None and clone.patience == 2 and clone.best == 0.5
    assert clone.best_weights is not cb.best_weights
    model, _ = drive(clone, [3.0, 2.0, 2.5, 2.6, 2.7])
    assert (clone.best_epoch, clone.stopped_epoch) == (1, 3) and model.marker() == 1
    assert cb.best == 0.5  # the original is untouched


# ------------------------------------------------------------------------ resume
def resumable(tmp_path, **kwargs):
    return EarlyStopping(patience=3, restore_best_weights=True, backup_dir=str(tmp_path / "es"), **kwargs)


VALUES = [1.0, 0.8, 0.5, 0.6, 0.7, 0.55, 0.4]  # best 2, stop at 5 with patience 3


def test_resume_continues_patience_best_and_weights(tmp_path):
    reference, _ = drive(resumable(tmp_path / "ref"), VALUES)
    assert reference.marker() == 2
    first = resumable(tmp_path)
    drive(first, VALUES[:4], params_epochs=len(VALUES), end=False)  # "killed" after epoch 3
    assert sorted(os.listdir(tmp_path / "es")) == [
        "early_stopping_best-000002.npz", "early_stopping_state-000003.json", "early_stopping_state-000004.json",
    ]
    second = resumable(tmp_path)  # a new process: nothing in memory
    model, rows = drive(second, VALUES, start=4)
    assert [r[:3] for r in rows] == [(4, False, 2), (5, True, 3)]
    assert (second.best, second.best_epoch, second.stopped_epoch, second.stop_reason) == (0.5, 2, 5, "patience")
    assert model.marker() == 2
    assert not (tmp_path / "es").exists()  # cleared when training ended


def test_resume_without_backup_dir_resets_like_keras(tmp_path):
    cb = EarlyStopping(patience=3, restore_best_weights=True)
    drive(cb, VALUES[:4], end=False)
    model, _ = drive(cb, VALUES, start=4)
    assert cb.best_epoch == 6 and model.marker() == 6  # not the uninterrupted result


def test_resume_from_previous_slot(tmp_path):
    # Killed after EarlyStopping saved epoch 3 but before BackupAndRestore did:
    # the run resumes at epoch 3, for which the previous state is still there.
    first = resumable(tmp_path)
    drive(first, VALUES[:4], end=False)
    second = resumable(tmp_path)
    model, rows = drive(second, VALUES, start=3)
    assert rows[0][2] == 1 and second.stopped_epoch == 5 and model.marker() == 2


def test_resume_with_weights_on_disk(tmp_path):
    drive(resumable(tmp_path, weights_on_disk=True), VALUES[:4], end=False)
    second = resumable(tmp_path, weights_on_disk=True)
    model, _ = drive(second, VALUES, start=4)
    assert second.best_weights is None and model.marker() == 2 and second.stopped_epoch == 5


def test_resume_of_a_run_already_stopped(tmp_path):
    # Killed after EarlyStopping stopped at epoch 5 but before training ended.
    drive(resumable(tmp_path), VALUES[:6], end=False)
    second = resumable(tmp_path)
    model, rows = drive(second, VALUES, start=6)
    assert rows == [(6, True, 3, 0.5, 2, rows[0][5])]
    assert (second.stop_reason, second.stopped_epoch) == ("patience", 5) and model.marker() == 2


def test_resume_with_no_epoch_left(tmp_path):
    drive(resumable(tmp_path), VALUES[:3] + [0.6, 0.7], params_epochs=5, end=False)
    second = resumable(tmp_path)
    model, rows = drive(second, VALUES[:5], start=5)
    assert rows == [] and second.best_epoch == 2 and model.marker() == 2


def test_fresh_start_discards_stale_state(tmp_path):
    drive(resumable(tmp_path), VALUES[:4], end=False)
    cb = resumable(tmp_path)
    drive(cb, [9.0, 8.0, 7.0])
    assert (cb.best, cb.best_epoch, cb.stop_reason) == (7.0, 2, "completed")


def test_missing_state_for_resumed_epoch_warns(tmp_path):
    drive(resumable(tmp_path), VALUES[:5], end=False)  # states for 4 and 5
    with pytest.warns(UserWarning, match=r"no saved state for epoch 2.*saved: \[4, 5\]"):
        drive(resumable(tmp_path), VALUES, start=2)


def test_resume_with_other_monitor_raises(tmp_path):
    drive(resumable(tmp_path), VALUES[:4], end=False)
    cb = EarlyStopping(monitor="val_acc", mode="max", backup_dir=str(tmp_path / "es"))
    with pytest.raises(ValueError, match=r"`backup_dir`.*'val_loss'"):
        drive(cb, VALUES, start=4, monitor="val_acc")


def test_state_files_are_atomic_and_pruned(tmp_path):
    cb = resumable(tmp_path)
    model = StubModel()
    cb.set_model(model)
    cb.set_params({"epochs": 20})
    cb.on_train_begin()
    for epoch, value in enumerate([5.0, 4.0, 3.0, 3.5, 2.0, 2.5, 2.6]):
        cb.on_epoch_begin(epoch)
        model.mark(epoch)
        cb.on_epoch_end(epoch, {"val_loss": value})
        names = sorted(os.listdir(tmp_path / "es"))
        assert not [n for n in names if n.startswith(".tmp")]
        states = [n for n in names if n.startswith("early_stopping_state")]
        assert states[-1] == f"early_stopping_state-{epoch + 1:06d}.json" and len(states) <= 2
        assert len([n for n in names if n.endswith(".npz")]) <= 2


# ------------------------------------------------ monitored arrays, monitor_op
ONE_NUMBER = {
    "np.float32": np.float32,
    "np.float64": np.float64,
    "0-d float32 array": lambda x: np.array(x, dtype="float32"),
    "one-element float32 array": lambda x: np.array([x], dtype="float32"),
    "1x1 float64 array": lambda x: np.array([[x]]),
    "0-d tensor": lambda x: keras.ops.convert_to_tensor(x, dtype="float32"),
    "one-element tensor": lambda x: keras.ops.convert_to_tensor([x], dtype="float32"),
}


def as_float(x):
    return None if x is None else float(np.asarray(keras.ops.convert_to_numpy(x)).reshape(()))


@pytest.mark.parametrize("wrap", list(ONE_NUMBER.values()), ids=list(ONE_NUMBER))
@pytest.mark.parametrize(("values", "kwargs"), [
    ([1.0, 0.9, 0.895, 0.97, 0.99, 0.8], dict(patience=1, min_delta=0.01)),
    ([0.61818177, 0.62962955, 0.62962955, 0.7, 0.69], dict(patience=1, mode="max", baseline=0.65)),
])
def test_one_element_arrays_and_tensors_decide_like_keras(wrap, values, kwargs):
    # e.g. keras.metrics.F1Score(average=None) on one output logs a (1,) array.
    wrapped = [wrap(x) for x in values]
    keras_cb = keras.callbacks.EarlyStopping(restore_best_weights=True, **kwargs)
    ours = EarlyStopping(restore_best_weights=True, best_epoch_key=None, **kwargs)
    keras_model, keras_rows = drive(keras_cb, wrapped)
    our_model, our_rows = drive(ours, wrapped)
    assert [r[:3] for r in our_rows] == [r[:3] for r in keras_rows]
    assert [(as_float(r[3]), r[4]) for r in our_rows] == [(as_float(r[3]), r[4]) for r in keras_rows]
    assert (ours.stopped_epoch, ours.best_epoch) == (keras_cb.stopped_epoch, keras_cb.best_epoch)
    assert ours.stopped_epoch > 0 and our_model.marker() == keras_model.marker()
    assert isinstance(ours.best, float)


@pytest.mark.parametrize("value", [np.array([0.5, 0.6]), np.zeros((1, 3)), np.array([]), "0.5"])
def test_monitored_value_not_one_number_raises(value):
    with pytest.raises(ValueError, match=r"monitor='val_f1'.*average=|average=.*monitor='val_f1'"):
        drive(EarlyStopping(monitor="val_f1", mode="max"), [0.5, value], monitor="val_f1")


@pytest.mark.parametrize(("kwargs", "monitor", "op", "signed_delta"), [
    (dict(mode="min"), "val_loss", keras.ops.less, -0.1),
    (dict(mode="max"), "val_loss", keras.ops.greater, 0.1),
    (dict(), "val_loss", keras.ops.less, -0.1),
    (dict(), "val_auc", keras.ops.greater, 0.1),
    (dict(), "mae", keras.ops.less, -0.1),
])
def test_monitor_op_and_min_delta_like_keras(compiled_model, kwargs, monitor, op, signed_delta):
    from keras_trainkit._keras_hooks import monitor_callback_class

    ours = EarlyStopping(monitor=monitor, min_delta=0.1, **kwargs)
    keras_cb = keras.callbacks.EarlyStopping(monitor=monitor, min_delta=0.1, **kwargs)
    assert isinstance(ours, monitor_callback_class())
    assert ours.monitor_op is keras_cb.monitor_op is None and ours.direction is None
    for cb in (ours, keras_cb):
        cb.set_model(compiled_model)
        cb.on_train_begin()
        cb.on_epoch_end(0, {monitor: 1.0})
    assert ours.monitor_op is keras_cb.monitor_op is op
    assert ours.min_delta == keras_cb.min_delta == signed_delta
    assert ours.direction == ("min" if op is keras.ops.less else "max")
    ours.on_train_begin()  # each fit() resolves again
    assert ours.monitor_op is None and ours.min_delta == 0.1


def test_values_beyond_float32_compare_as_infinite():
    cb = EarlyStopping(patience=1)
    _, rows = drive(cb, [1.0, 1e300, 0.5])  # Keras' ops.less raises on 1e300
    assert [r[2] for r in rows] == [0, 1] and (cb.best_epoch, cb.stopped_epoch) == (0, 1)
    cb = EarlyStopping(patience=1, mode="max")
    drive(cb, [1.0, 1e300])
    assert (cb.best, cb.best_epoch) == (1e300, 1)


def test_a_monitor_op_set_by_hand_is_called():
    # Keras' own two operations are compared on the host (the same float32
    # comparison); any other `monitor_op` is called as Keras would.
    cb = EarlyStopping(mode="min")
    cb.monitor_op = keras.ops.less
    assert not cb.is_improvement(1.0, 1.0) and cb.is_improvement(np.nextafter(np.float32(1), np.float32(0)), 1.0)
    cb.monitor_op = keras.ops.less_equal
    assert cb.is_improvement(1.0, 1.0) and not cb.is_improvement(1.5, 1.0)
    cb.monitor_op = keras.ops.greater
    assert cb.is_improvement(1.5, 1.0) and not cb.is_improvement(float("nan"), 1.0)


def test_deepcopy_leaves_out_the_temporary_directory(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cb = EarlyStopping(patience=5, restore_best_weights=True, weights_on_disk=True)
    model, _ = drive(cb, [1.0, 0.4, 0.6], end=False)  # its best weights are in its temporary directory
    clone = copy.deepcopy(cb)
    assert (clone.model, clone.params, clone.best, clone.best_epoch) == (None, None, 0.4, 1)
    other, _ = drive(clone, [3.0, 2.0, 1.0, 2.5])  # makes and removes a directory of its own
    assert other.marker() == 2 and len(os.listdir(tmp_path)) == 1
    cb.on_train_end()  # the original still has its file
    assert model.marker() == 1 and os.listdir(tmp_path) == []


def test_resume_with_other_mode_raises(tmp_path):
    drive(resumable(tmp_path), VALUES[:4], end=False)  # val_loss, auto: "min"
    cb = EarlyStopping(mode="max", backup_dir=str(tmp_path / "es"))
    with pytest.raises(ValueError, match=r"`backup_dir`.*'val_loss' \(min\).*mode 'max'"):
        drive(cb, VALUES, start=4)
    drive(resumable(tmp_path, mode="min"), VALUES, start=4)  # same direction: fine
