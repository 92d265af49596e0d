"""LR callbacks inside fit(): per-update rates, composition, resume, interplay."""

import copy
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import callbacks as C
from keras_trainkit import schedules as S

N, BATCH = 96, 16  # 6 updates per epoch


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    return x, y


def model_with(optimizer, seed=0, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer, "mse", **compile_kwargs)
    return model


class Recorder(keras.callbacks.Callback):
    """Records, before every batch, the update count and the rate the
    optimizer is about to use (`optimizer.learning_rate`, Keras' public view)."""

    def __init__(self):
        super().__init__()
        self.steps, self.rates = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.steps.append(int(self.model.optimizer.iterations))
        self.rates.append(float(self.model.optimizer.learning_rate))


def fit(model, callbacks, epochs=3, **kwargs):
    x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)


def assert_rates(recorder, schedule):
    steps = np.array(recorder.steps)
    np.testing.assert_allclose(recorder.rates, schedule(steps), rtol=1e-6, atol=1e-10)


CALLBACK_CASES = [
    (lambda: C.StepDecay(step_size=4, gamma=0.5), S.StepDecay(0.05, step_size=4, gamma=0.5)),
    (lambda: C.StepDecay(milestones=[3, 7, 11], gamma=0.3), S.StepDecay(0.05, milestones=[3, 7, 11], gamma=0.3)),
    (lambda: C.ExponentialDecay(decay_steps=5, decay_rate=0.5, staircase=True), S.ExponentialDecay(0.05, 5, 0.5, True)),
    (lambda: C.PolynomialDecay(decay_steps=10, end_learning_rate=0.001, power=2.0), S.PolynomialDecay(0.05, 10, 0.001, 2.0)),
    (lambda: C.InverseTimeDecay(decay_steps=3, decay_rate=1.0), S.InverseTimeDecay(0.05, 3, 1.0)),
    (lambda: C.CosineDecay(decay_steps=12, alpha=0.1), S.CosineDecay(0.05, 12, alpha=0.1)),
    (lambda: C.CosineDecay(decay_steps=4, restarts=True, t_mul=1.5, m_mul=0.8), S.CosineDecayRestarts(0.05, 4, 1.5, 0.8)),
    (lambda: C.WarmUp(warmup_steps=9, initial_learning_rate=0.005, shape="cosine"), S.WarmUp(0.05, 9, 0.005, "cosine")),
    (lambda: C.LearningRateSchedule(keras.optimizers.schedules.PiecewiseConstantDecay([4, 10], [0.1, 0.02, 0.001])),
     S.JoinSchedules([0.1, 0.02, 0.001], [5, 11])),
]


@pytest.mark.parametrize("make_cb,expected", CALLBACK_CASES, ids=lambda c: type(c).__name__ if isinstance(c, S.Schedule) else "")
def test_each_callback_steps_per_update_across_epochs(make_cb, expected):
    rec = Recorder()
    model = model_with(keras.optimizers.SGD(0.05))
    history = fit(model, [make_cb(), rec])
    assert rec.steps == list(range(0, 18))
    assert_rates(rec, expected)
    # History gets the epoch's last rate; the optimizer gets its own rate back.
    np.testing.assert_allclose(history.history["learning_rate"], expected(np.array([5, 11, 17])), rtol=1e-6)
    assert isinstance(model.optimizer._learning_rate, keras.Variable)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)


def test_composition_matches_composed_schedule_object_whatever_the_order():
    composed = S.WarmUp(S.ExponentialDecay(0.05, 4, 0.7), 7, initial_learning_rate=0.001)
    runs = []
    for order in (0, 1):
        cbs = [C.WarmUp(7, initial_learning_rate=0.001), C.ExponentialDecay(4, 0.7)]
        rec = Recorder()
        model = model_with(keras.optimizers.Adam(0.05))
        fit(model, (cbs if order == 0 else cbs[::-1]) + [rec])
        assert_rates(rec, composed)
        runs.append(model.get_weights())
    # Independent reference: Keras' own optimizer driven by the schedule object.
    reference = model_with(keras.optimizers.Adam(composed))
    fit(reference, [])
    for run in runs:
        for a, b in zip(run, reference.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_second_fit_continues_instead_of_restarting():
    cbs = [C.WarmUp(8), C.CosineDecay(20)]
    rec = Recorder()
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, cbs + [rec], epochs=1)
    fit(model, cbs + [rec], epochs=2)
    assert rec.steps == list(range(0, 18))
    assert_rates(rec, S.WarmUp(S.CosineDecay(0.05, 20), 8))


def test_base_rate_defaults_to_optimizer_rate_and_can_be_overridden():
    rec = Recorder()
    fit(model_with(keras.optimizers.SGD(0.02)), [C.ExponentialDecay(6, 0.5), rec], epochs=1)
    assert_rates(rec, S.ExponentialDecay(0.02, 6, 0.5))
    rec = Recorder()
    fit(model_with(keras.optimizers.SGD(0.02)), [C.ExponentialDecay(6, 0.5, initial_learning_rate=0.3), rec], epochs=1)
    assert_rates(rec, S.ExponentialDecay(0.3, 6, 0.5))


def test_works_when_compiled_with_a_schedule():
    compiled = keras.optimizers.schedules.ExponentialDecay(0.04, 5, 0.5)
    # Keras' own callback cannot touch it.
    with pytest.raises(TypeError):
        fit(model_with(keras.optimizers.SGD(compiled)), [keras.callbacks.LearningRateScheduler(lambda e, lr: lr)], epochs=1)
    # WarmUp wraps the compiled schedule...
    rec = Recorder()
    model = model_with(keras.optimizers.SGD(compiled))
    fit(model, [C.WarmUp(5, initial_learning_rate=0.001), rec])
    assert_rates(rec, S.WarmUp(compiled, 5, 0.001))
    assert model.optimizer._learning_rate is compiled
    # ...and a decay callback replaces it, starting from its value at step 0.
    rec = Recorder()
    fit(model_with(keras.optimizers.SGD(compiled)), [C.InverseTimeDecay(2, 1.0), rec])
    assert_rates(rec, S.InverseTimeDecay(0.04, 2, 1.0))


def test_reduce_lr_on_plateau_scales_the_schedule():
    # mode="max" on the loss: the loss falls, so every epoch after the first
    # (which sets the reference) counts as a plateau.
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    rec = Recorder()
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, [C.PolynomialDecay(30, end_learning_rate=0.0, power=1.0), plateau, rec], epochs=4)
    steps = np.array(rec.steps)
    reductions = np.maximum(steps // 6 - 1, 0)  # at the end of epochs 2 and 3
    expected = S.PolynomialDecay(0.05, 30, 0.0)(steps) * 0.5 ** reductions
    np.testing.assert_allclose(rec.rates, expected, rtol=1e-5)
    # The reductions (at the ends of epochs 2, 3 and 4) live in the optimizer's
    # own rate variable (what checkpoints and model.save store), which the
    # schedule reads as its base.
    assert float(model.optimizer._learning_rate.numpy()) == pytest.approx(0.05 * 0.5 ** 3)
    assert isinstance(model.optimizer._learning_rate, keras.Variable)


@pytest.mark.parametrize("plateau_first", [False, True])
def test_epoch_log_rate_follows_reduce_lr_on_plateau(tmp_path, plateau_first):
    """Ours logs the last update's rate at the scale in effect then, even
    after a reduction at the same epoch end; placed after ours, Keras'
    ReduceLROnPlateau overwrites the entry with `optimizer.learning_rate`
    read before it reduces (the next update's rate, at the old scale)."""
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    decay = C.PolynomialDecay(30, end_learning_rate=0.0, power=1.0, log_dir=str(tmp_path))
    history = fit(model_with(keras.optimizers.SGD(0.05)), [plateau, decay] if plateau_first else [decay, plateau],
                  epochs=4)
    schedule = S.PolynomialDecay(0.05, 30, 0.0)
    last = np.array([5, 11, 17, 23])  # each epoch's last update; reductions at the ends of epochs 2 and 3
    if plateau_first:
        expected = schedule(last) * 0.5 ** np.maximum(last // 6 - 1, 0)
    else:
        expected = schedule(last + 1) * 0.5 ** np.maximum(last // 6 - 1, 0)
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    steps, values = read_scalars(str(tmp_path / "train"), "learning_rate")
    assert list(steps) == list(range(1, 25))
    np.testing.assert_allclose(values, S.PolynomialDecay(0.05, 30, 0.0)(steps - 1)
                               * 0.5 ** np.maximum((steps - 1) // 6 - 1, 0), rtol=1e-6)


class _PerRealUpdate(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, schedule, every):
        self.schedule, self.every = schedule, every

    def __call__(self, step):
        return self.schedule(keras.ops.floor_divide(step, self.every))


def test_gradient_accumulation_counts_real_updates():
    sched = S.WarmUp(S.StepDecay(0.05, step_size=2, gamma=0.5), 3)
    rec = Recorder()
    model = model_with(keras.optimizers.SGD(0.05, gradient_accumulation_steps=3))
    fit(model, [C.WarmUp(3), C.StepDecay(step_size=2, gamma=0.5), rec], epochs=2)
    assert rec.steps == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert_rates(rec, sched)
    # Keras evaluates a compiled schedule at the raw batch count under gradient
    # accumulation; the reference keys it on real updates explicitly.
    reference = model_with(keras.optimizers.SGD(_PerRealUpdate(sched, 3), gradient_accumulation_steps=3))
    fit(reference, [], epochs=2)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_epoch_log_rate_needs_no_eager_schedule_evaluation(monkeypatch):
    from keras_trainkit.callbacks import _lr_control

    eager_calls = []
    rate_at = _lr_control.RateController.rate_at

    def spy(self, step):
        eager_calls.append(tf.executing_eagerly())
        return rate_at(self, step)

    monkeypatch.setattr(_lr_control.RateController, "rate_at", spy)
    sched = S.WarmUp(S.CosineDecay(0.05, 10), 4)
    history = fit(model_with(keras.optimizers.SGD(0.05)), [C.WarmUp(4), C.CosineDecay(10)])
    np.testing.assert_allclose(history.history["learning_rate"], sched(np.array([5, 11, 17])), rtol=1e-6)
    assert eager_calls and not any(eager_calls)  # traced into the step only


def test_epoch_log_rate_when_an_epoch_ends_inside_an_accumulation_group():
    # 6 batches an epoch, updates every 4: epoch 1 applies 1 update and leaves
    # 2 batches pending; epoch 2 ends on update 3; epoch 3 (18 batches) on 4.
    sched = S.WarmUp(S.StepDecay(0.05, step_size=1, gamma=0.5), 2)
    history = fit(model_with(keras.optimizers.SGD(0.05, gradient_accumulation_steps=4)),
                  [C.WarmUp(2), C.StepDecay(step_size=1, gamma=0.5)])
    np.testing.assert_allclose(history.history["learning_rate"], sched(np.array([0, 2, 3])), rtol=1e-6)


def test_steps_per_execution_is_exact():
    sched = S.WarmUp(S.CosineDecay(0.05, 10), 4)
    model = model_with(keras.optimizers.SGD(0.05), steps_per_execution=4)
    history = fit(model, [C.WarmUp(4), C.CosineDecay(10)])
    reference = model_with(keras.optimizers.SGD(sched))
    fit(reference, [])
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(history.history["learning_rate"], sched(np.array([5, 11, 17])), rtol=1e-6)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_update):
        super().__init__()
        self.at_update = at_update

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.at_update:
            raise RuntimeError("interrupted")


def test_resume_with_backup_and_restore_continues(tmp_path):
    def callbacks():
        return [C.WarmUp(8, initial_learning_rate=0.001, log_dir=str(tmp_path / "tb")),
                C.PolynomialDecay(12, end_learning_rate=0.0)]

    sched = S.WarmUp(S.PolynomialDecay(0.05, 12, 0.0), 8, 0.001)
    full = model_with(keras.optimizers.Adam(0.05))
    fit(full, [C.WarmUp(8, initial_learning_rate=0.001), C.PolynomialDecay(12, end_learning_rate=0.0)], epochs=4)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = model_with(keras.optimizers.Adam(0.05))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, callbacks() + [backup, _Interrupt(15)], epochs=4)
    # A fresh process would rebuild everything: mimic it with a new model.
    rec = Recorder()
    resumed = model_with(keras.optimizers.Adam(0.05), seed=123)
    fit(resumed, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))] + callbacks() + [rec], epochs=4)
    assert rec.steps == list(range(12, 24))  # resumed at the start of epoch 3
    assert_rates(rec, sched)
    # TensorBoard: epochs 1-2 from the first process, 3-4 from the resumed one,
    # each update exactly once.
    steps, values = read_scalars(str(tmp_path / "tb" / "train"), "learning_rate")
    assert sorted(steps) == list(range(1, 25))
    np.testing.assert_allclose(values, sched(steps - 1), rtol=1e-6)
    for a, b in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def read_scalars(run_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    events = acc.Tensors(tag)
    return np.array([e.step for e in events]), np.array([float(keras.ops.convert_to_numpy(_tensor(e))) for e in events])


def _tensor(event):
    import tensorflow as tf

    return tf.make_ndarray(event.tensor_proto)


def test_tensorboard_scalars_per_update_without_reset(tmp_path):
    sched = S.WarmUp(S.ExponentialDecay(0.05, 5, 0.5), 4)
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, [C.WarmUp(4, log_dir=str(tmp_path)), C.ExponentialDecay(5, 0.5)], epochs=2)
    fit(model, [C.WarmUp(4, log_dir=str(tmp_path)), C.ExponentialDecay(5, 0.5)], epochs=1)
    steps, values = read_scalars(str(tmp_path / "train"), "learning_rate")
    assert list(steps) == list(range(1, 19))
    np.testing.assert_allclose(values, sched(steps - 1), rtol=1e-6)


def test_tensorboard_callback_in_the_list_gets_the_scalars(tmp_path):
    tb = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, [tb, C.StepDecay(step_size=5, gamma=0.5)], epochs=2)
    steps, values = read_scalars(str(tmp_path / "logs" / "train"), "learning_rate")
    assert list(steps) == list(range(1, 13))
    np.testing.assert_allclose(values, S.StepDecay(0.05, step_size=5, gamma=0.5)(steps - 1), rtol=1e-6)
    assert glob.glob(str(tmp_path / "logs" / "train" / "events.out.tfevents.*"))
    # Keras' callback logs `optimizer.learning_rate` at each epoch end: the
    # rate of the next update.
    steps, values = read_scalars(str(tmp_path / "logs" / "train"), "epoch_learning_rate")
    np.testing.assert_allclose(values, S.StepDecay(0.05, step_size=5, gamma=0.5)(np.array([6, 12])), rtol=1e-6)


def test_tensorboard_rates_of_a_keras_schedule_with_cond(tmp_path):
    """A foreign schedule (Keras' CosineDecay warm-up uses `ops.cond`) is
    mapped over the epoch's steps inside the compiled evaluation."""
    compiled = keras.optimizers.schedules.CosineDecay(0.01, 10, warmup_target=0.04, warmup_steps=4)
    model = model_with(keras.optimizers.SGD(compiled))
    history = fit(model, [C.WarmUp(3, initial_learning_rate=0.001, log_dir=str(tmp_path))], epochs=2)
    expected = S.WarmUp(compiled, 3, 0.001)
    steps, values = read_scalars(str(tmp_path / "train"), "learning_rate")
    assert list(steps) == list(range(1, 13))
    np.testing.assert_allclose(values, [float(expected(int(s) - 1)) for s in steps], rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], [values[5], values[11]], rtol=1e-6)


def test_model_checkpoint_mid_training_loads_and_continues(tmp_path):
    path = str(tmp_path / "ckpt.keras")
    model = model_with(keras.optimizers.Adam(0.05))
    cbs = [C.WarmUp(4), C.CosineDecay(20), keras.callbacks.ModelCheckpoint(path)]
    fit(model, cbs, epochs=2)
    loaded = keras.saving.load_model(path)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.05)
    assert int(loaded.optimizer.iterations) == 12
    assert [v.shape for v in loaded.optimizer.variables] == [v.shape for v in model.optimizer.variables]
    assert loaded.optimizer.variables[1].path.endswith("learning_rate")
    fit(loaded, [C.WarmUp(4), C.CosineDecay(20)], epochs=1)
    fit(model, [C.WarmUp(4), C.CosineDecay(20)], epochs=1)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_mixed_precision_loss_scale_optimizer():
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05))
    rec = Recorder()
    model = model_with(opt)
    fit(model, [C.ExponentialDecay(4, 0.5), rec], epochs=1)
    assert_rates(rec, S.ExponentialDecay(0.05, 4, 0.5))


def test_two_decay_callbacks_are_rejected():
    with pytest.raises(ValueError, match="At most one decay"):
        fit(model_with(keras.optimizers.SGD(0.05)), [C.ExponentialDecay(4, 0.5), C.CosineDecay(10)], epochs=1)


def test_deepcopy_before_and_after_fit():
    cb = C.WarmUp(3, log_dir=None)
    clone = copy.deepcopy(cb)
    assert clone.warmup_steps == 3 and clone is not cb
    decay = C.ExponentialDecay(4, 0.5)
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, [decay], epochs=1)
    clone = copy.deepcopy(decay)
    assert clone._model is None and clone.decay_steps == 4
    rec = Recorder()
    fit(model_with(keras.optimizers.SGD(0.01)), [clone, rec], epochs=1)
    # The clone starts from its new optimizer's own rate.
    assert_rates(rec, S.ExponentialDecay(0.01, 4, 0.5))


BAD_CALLBACKS = [
    (C.StepDecay, dict(step_size=0), "step_size"),
    (C.StepDecay, dict(step_size=3, gamma=2.0), "gamma"),
    (C.StepDecay, dict(milestones=[5, 2]), "milestones"),
    (C.StepDecay, dict(step_size=3, initial_learning_rate=-1.0), "initial_learning_rate"),
    (C.ExponentialDecay, dict(decay_steps=0, decay_rate=0.5), "decay_steps"),
    (C.ExponentialDecay, dict(decay_steps=3, decay_rate=0.0), "decay_rate"),
    (C.PolynomialDecay, dict(decay_steps=3, power=-2.0), "power"),
    (C.InverseTimeDecay, dict(decay_steps=3, decay_rate=float("inf")), "decay_rate"),
    (C.CosineDecay, dict(decay_steps=10, alpha=2.0), "alpha"),
    (C.CosineDecay, dict(decay_steps=10, restarts=True, t_mul=0.1), "t_mul"),
    (C.WarmUp, dict(warmup_steps=-3), "warmup_steps"),
    (C.WarmUp, dict(warmup_steps=3, shape="step"), "shape"),
    (C.WarmUp, dict(warmup_steps=3, initial_learning_rate=float("nan")), "initial_learning_rate"),
    (C.LearningRateSchedule, dict(schedule=None), "schedule"),
    (C.LearningRateSchedule, dict(schedule=0.1, verbose=-1), "verbose"),
]


@pytest.mark.parametrize("cls,kwargs,arg", BAD_CALLBACKS, ids=[f"{c.__name__}-{a}" for c, _, a in BAD_CALLBACKS])
def test_bad_callback_arguments_raise_in_the_constructor(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        cls(**kwargs)


def test_callback_leaves_no_trace_after_fit(tmp_path):
    model = model_with(keras.optimizers.SGD(0.05))
    fit(model, [C.WarmUp(3), C.StepDecay(step_size=2)], epochs=1)
    assert "train_step" not in model.__dict__
    before = model.get_weights()
    # A later fit without the callbacks trains at the plain rate.
    fit(model, [], epochs=1)
    reference = model_with(keras.optimizers.SGD(0.05))
    fit(reference, [C.WarmUp(3), C.StepDecay(step_size=2)], epochs=1)
    reference.optimizer.learning_rate = 0.05
    fit(reference, [], epochs=1)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    model.save(os.path.join(tmp_path, "m.keras"))
    assert keras.saving.load_model(os.path.join(tmp_path, "m.keras")).optimizer.get_config()["learning_rate"] == pytest.approx(0.05)
