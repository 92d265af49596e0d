"""How the callbacks attach to fit(): all or nothing, undone however fit() ends.

Every failure path is followed by a real fit whose per-update rates are
asserted: a plain fit() trains at the compiled rate, a fit() with our callbacks
at the schedule's, and the model, its optimizer, `train_step`,
`train_function`, `evaluate` and the learning rate are as before the failed fit.
"""

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import callbacks as C
from keras_trainkit import schedules as S
from keras_trainkit.callbacks import _session

N, BATCH = 64, 16  # 4 updates per epoch


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype("float32")
    return x, (x @ rng.normal(size=(4, 1))).astype("float32")


def model_with(optimizer=None, layers=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), *(layers or []), keras.layers.Dense(3, activation="tanh",
                                                                                      name="hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(optimizer or keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)  # as fit() would: not our change
    return model


class Rates(keras.callbacks.Callback):
    """`(update, optimizer.learning_rate)` before every batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.seen.append((int(opt.iterations), float(opt.learning_rate)))


class Snapshot:
    """What a failed fit must leave as it was."""

    def __init__(self, model):
        opt = model.optimizer
        self.model, self.optimizer = model, opt
        self.rate_slot = opt._learning_rate
        self.rate = float(opt.learning_rate)
        self.model_attrs = {k for k in ("train_step", "evaluate", "train_function") if k in model.__dict__}
        self.optimizer_attrs = set(opt.__dict__)
        self.trainable = [layer.trainable for layer in model.layers]
        self.sigint = signal.getsignal(signal.SIGINT)

    def assert_unchanged(self, train_function=None):
        model, opt = self.model, self.optimizer
        assert opt._learning_rate is self.rate_slot
        assert float(opt.learning_rate) == pytest.approx(self.rate)
        assert "apply" not in opt.__dict__ and set(opt.__dict__) == self.optimizer_attrs
        assert "train_step" not in model.__dict__ and "evaluate" not in model.__dict__
        if train_function is not None:
            assert model.train_function is train_function
        assert [layer.trainable for layer in model.layers] == self.trainable
        assert signal.getsignal(signal.SIGINT) is self.sigint
        assert _session.Session.of(model) is None


class KerasMade(keras.callbacks.Callback):
    """The train function Keras made for this fit, before any epoch."""

    def on_train_begin(self, logs=None):
        self.train_function = self.model.train_function


class Raise(keras.callbacks.Callback):
    def __init__(self, hook, at, error):
        super().__init__()
        self.at, self.error = at, error
        setattr(self, hook, self._maybe_raise)

    def _maybe_raise(self, index, logs=None):
        if index == self.at:
            raise self.error


def fit(model, callbacks, epochs=2, **kwargs):
    x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks,
                     **kwargs)


def assert_follow_up_fits(model):
    """A plain fit trains at the compiled rate; a fit with callbacks at the schedule."""
    rates = Rates()
    fit(model, [rates], epochs=1)
    assert [r for _, r in rates.seen] == pytest.approx([0.1] * 4)
    rates = Rates()
    start = int(model.optimizer.iterations)
    fit(model, [C.WarmUp(6, initial_learning_rate=0.01), C.ExponentialDecay(4, 0.5), rates], epochs=1)
    steps = np.array([s for s, _ in rates.seen])
    assert list(steps) == list(range(start, start + 4))
    np.testing.assert_allclose([r for _, r in rates.seen],
                               S.WarmUp(S.ExponentialDecay(0.1, 4, 0.5), 6, 0.01)(steps), rtol=1e-6)


FAILURES = [
    ("keyboard-interrupt-batch", lambda: Raise("on_train_batch_end", 2, KeyboardInterrupt())),
    ("error-epoch-end", lambda: Raise("on_epoch_end", 0, RuntimeError("boom"))),
    ("error-epoch-begin", lambda: Raise("on_epoch_begin", 1, RuntimeError("boom"))),
    ("keyboard-interrupt-test-batch", lambda: Raise("on_test_batch_end", 0, KeyboardInterrupt())),
]


@pytest.mark.parametrize("name,make", FAILURES, ids=[f[0] for f in FAILURES])
def test_exception_from_a_callback_leaves_nothing_behind(name, make):
    model = model_with()
    fit(model, [], epochs=1)  # a train function exists before the failing fit
    before = Snapshot(model)
    made = KerasMade()
    x, y = data()
    with pytest.raises((KeyboardInterrupt, RuntimeError)):
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, validation_data=(x, y),
                  callbacks=[made, C.WarmUp(8, initial_learning_rate=0.002), C.CosineDecay(20),
                             C.GradientNormLogger(batch_logs=True), make()])
    before.assert_unchanged(made.train_function)
    assert_follow_up_fits(model)


def test_a_repeated_fit_reuses_the_step_a_failed_fit_leaves_it(monkeypatch):
    """A fit with the same callbacks as the model's last one runs the step
    compiled for it: nothing is traced (as Keras reuses its own). A failed
    fit leaves the kept step as it found it; `compile()` (a new optimizer and
    Keras function) and other callbacks compile anew. The kept step does not
    keep the model alive."""
    import gc
    import weakref

    from keras_trainkit.callbacks import _lr_control

    traces = []
    rate_at = _lr_control.RateController.rate_at
    monkeypatch.setattr(_lr_control.RateController, "rate_at",
                        lambda self, step: traces.append(1) or rate_at(self, step))

    def traced(model, callbacks, **kwargs):
        count = len(traces)
        fit(model, callbacks, epochs=1, **kwargs)
        return len(traces) > count

    model = model_with()
    warm, logger = C.WarmUp(6, initial_learning_rate=0.01), C.GradientNormLogger()
    assert traced(model, [warm, logger])
    assert not traced(model, [warm, logger])
    assert not traced(model, [C.WarmUp(6, initial_learning_rate=0.01), logger])  # an equal schedule
    kept = model.__dict__["_keras_trainkit_compiled_step"]
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, [warm, logger, Raise("on_epoch_end", 0, RuntimeError("boom"))])
    assert model.__dict__["_keras_trainkit_compiled_step"] is kept
    with pytest.raises(RuntimeError, match="boom"):  # compiles its own, then fails: the kept one is back
        fit(model, [C.WarmUp(9), logger, Raise("on_epoch_end", 0, RuntimeError("boom"))])
    assert model.__dict__["_keras_trainkit_compiled_step"] is kept
    assert not traced(model, [warm, logger])
    assert traced(model, [C.WarmUp(7, initial_learning_rate=0.01), logger])  # another schedule
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rates = Rates()
    assert traced(model, [warm, logger, rates])
    steps = np.array([s for s, _ in rates.seen])
    np.testing.assert_allclose([r for _, r in rates.seen], S.WarmUp(0.1, 6, 0.01)(steps), rtol=1e-6)
    gone = weakref.ref(model)
    del model, warm, logger, rates, kept  # the callbacks hold their last model, as Keras' do
    gc.collect()
    assert gone() is None


class _Finite(keras.layers.Layer):
    """Fails inside the compiled step on a non-finite input."""

    def call(self, x):
        return tf.debugging.check_numerics(x, "non-finite input")


def test_exception_inside_the_compiled_step_leaves_nothing_behind():
    model = model_with(layers=[_Finite()])
    before = Snapshot(model)
    x, y = data()
    bad = x.copy()
    bad[40] = np.nan  # the 3rd batch
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite input"):
        model.fit(bad, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                  callbacks=[C.WarmUp(8), C.GradientNormLogger(), keras.callbacks.ReduceLROnPlateau()])
    before.assert_unchanged()
    assert_follow_up_fits(model)


def test_error_in_validation_leaves_nothing_behind():
    model = model_with()
    before = Snapshot(model)
    x, y = data()
    with pytest.raises(Exception):  # noqa: B017 - any error Keras raises for mismatched shapes
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
                  validation_data=(x[:, :3], y), callbacks=[C.StepDecay(step_size=2)])
    before.assert_unchanged()
    assert_follow_up_fits(model)


def test_rejected_configuration_changes_nothing_then_a_valid_fit_works():
    model = model_with()
    fit(model, [], epochs=1)
    before = Snapshot(model)
    made = KerasMade()
    with pytest.raises(ValueError, match="At most one decay learning-rate callback") as info:
        fit(model, [made, C.StepDecay(2), C.CosineDecay(10)])
    assert "received 2 for optimizer" in str(info.value) and "StepDecay, CosineDecay" in str(info.value)
    before.assert_unchanged(made.train_function)
    assert int(model.optimizer.iterations) == 4  # not a single step
    with pytest.raises(ValueError, match="At most one decay"):  # the same message again, not "3"
        fit(model, [C.StepDecay(2), C.CosineDecay(10)])
    assert_follow_up_fits(model)


def test_another_callbacks_on_train_begin_failing_after_ours_changes_nothing():
    model = model_with()
    before = Snapshot(model)
    with pytest.raises(RuntimeError):
        fit(model, [C.WarmUp(4), C.GradientNormLogger(), keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: (_ for _ in ()).throw(RuntimeError("no")))])
    before.assert_unchanged()
    assert_follow_up_fits(model)


def test_what_escapes_the_guards_is_healed_at_the_next_touch():
    """An exception in Keras' own loop code (here `reset_metrics`, between two
    guarded calls) leaves the session behind; whatever touches it next heals it."""
    for touch in ("plain-fit", "read-rate", "evaluate", "fit-with-callbacks"):
        model = model_with()
        before = Snapshot(model)
        calls = []

        def reset_metrics(calls=calls):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("in Keras' loop")

        object.__setattr__(model, "reset_metrics", reset_metrics)
        with pytest.raises(RuntimeError, match="Keras' loop"):
            fit(model, [C.WarmUp(8, initial_learning_rate=0.002), C.GradientNormLogger()], epochs=3)
        object.__delattr__(model, "reset_metrics")
        assert _session.Session.of(model) is not None  # left behind...
        if touch == "read-rate":
            assert float(model.optimizer.learning_rate) == pytest.approx(0.1)
        elif touch == "evaluate":
            x, y = data()
            model.evaluate(x, y, verbose=0)
        if touch in ("read-rate", "evaluate"):
            before.assert_unchanged()
        assert_follow_up_fits(model)  # ...until touched
        before.assert_unchanged()


def test_gradual_unfreezing_flags_restored_when_the_fit_fails():
    model = model_with()
    before = Snapshot(model)
    with pytest.raises(RuntimeError):
        fit(model, [C.GradualUnfreezing(["hidden"], every=2), Raise("on_epoch_end", 0, RuntimeError("x"))],
            epochs=3)
    before.assert_unchanged()
    # When it ends normally the flags stay as reached.
    fit(model, [C.GradualUnfreezing(["hidden"], unfreeze_at=[5])], epochs=1)
    assert model.get_layer("hidden").trainable is False


WORKER = textwrap.dedent("""
    import os, sys, signal, threading, json
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras, numpy as np
    from keras_trainkit import callbacks as C
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 4)).astype("float32"); y = x.sum(1, keepdims=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    slot, handler = model.optimizer._learning_rate, signal.getsignal(signal.SIGINT)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:  # a real SIGINT, from another thread, lands wherever fit() is
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()

    try:
        model.fit(x, y, batch_size=8, epochs=50, verbose=0,
                  callbacks=[C.WarmUp(1000, initial_learning_rate=0.001), C.CosineDecay(5000), Interrupt()])
        print(json.dumps({"interrupted": False}))
        sys.exit(0)
    except KeyboardInterrupt:
        pass
    rates = []
    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))
    model.fit(x[:32], y[:32], batch_size=8, epochs=1, verbose=0, callbacks=[Rates()])
    print(json.dumps({"interrupted": True, "rates": rates, "slot": model.optimizer._learning_rate is slot,
                      "handler": signal.getsignal(signal.SIGINT) is handler,
                      "patched": sorted(k for k in ("train_step", "evaluate") if k in model.__dict__)}))
""")


def test_ctrl_c_mid_fit_then_a_plain_fit(tmp_path):
    """A real SIGINT in a subprocess, then a plain fit in the same process."""
    import json

    script = tmp_path / "interrupt.py"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["interrupted"]
    assert out["rates"] == pytest.approx([0.1] * 4)
    assert out["slot"] and out["handler"] and out["patched"] == []
