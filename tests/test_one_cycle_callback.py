"""callbacks.OneCycle: per-update rate and momentum equal to PyTorch's OneCycleLR,
applied inside the compiled step (trained weights equal a numpy reference of
Keras' SGD and Adam updates driven by torch's trajectories), across a resume,
and composed with the other callbacks.
"""

import json
import pathlib

import keras
import numpy as np
import pytest

from keras_trainkit import callbacks as C
from keras_trainkit import schedules as S

GOLDEN = np.load(pathlib.Path(__file__).parent / "golden" / "torch_one_cycle.npz")
META = json.loads(str(GOLDEN["meta"]))
BATCH = 4


def problem(updates):
    """A linear least-squares problem of `updates` batches of 4 (one epoch)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(updates * BATCH, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1 * rng.normal(size=(updates * BATCH, 1))).astype(
        "float32")
    return x, y


def linear(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer, "mse")
    return model


def reference_weights(x, y, lrs, momenta, kind):
    """Keras' SGD (momentum) or Adam update, in float64 numpy, at the given
    per-update rate and momentum (beta_1)."""
    w = np.zeros((3, 1))
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, (lr, mu) in enumerate(zip(lrs, momenta)):
        xb, yb = x[t * BATCH:(t + 1) * BATCH].astype("float64"), y[t * BATCH:(t + 1) * BATCH].astype("float64")
        g = 2.0 * xb.T @ (xb @ w - yb) / len(xb)
        if kind == "sgd":
            m = mu * m - lr * g
            w = w + m
        else:
            b2, eps = 0.999, 1e-7
            m = m + (g - m) * (1 - mu)
            v = v + (g * g - v) * (1 - b2)
            alpha = lr * np.sqrt(1 - b2 ** (t + 1)) / (1 - mu ** (t + 1))
            w = w - alpha * m / (np.sqrt(v) + eps)
    return w


class Recorder(keras.callbacks.Callback):
    def __init__(self, attribute):
        super().__init__()
        self.attribute, self.rates = attribute, []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


@pytest.mark.parametrize("name", ["cos_sgd_defaults", "linear_adam_momenta", "three_phase_half", "epochs_steps"])
def test_rate_and_momentum_per_update_match_torch(name):
    case = META["cases"][name]
    total, kind = case["total_steps"], case["optimizer"]
    lrs, momenta = GOLDEN[f"{name}__lr"], GOLDEN[f"{name}__momentum"]
    x, y = problem(total)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.5) if kind == "sgd" else keras.optimizers.Adam(0.01)
    model = linear(optimizer)
    rec = Recorder("momentum" if kind == "sgd" else "beta_1")
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                        callbacks=[C.OneCycle(**case["kwargs"], **case["momentum_kwargs"]), rec])
    np.testing.assert_allclose(rec.rates, lrs, rtol=1e-6)
    name_logged = "momentum" if kind == "sgd" else "beta_1"
    assert history.history[name_logged][-1] == pytest.approx(momenta[-1], rel=1e-6)
    expected = reference_weights(x, y, lrs, momenta, kind)
    np.testing.assert_allclose(model.get_weights()[0], expected, rtol=2e-4, atol=1e-6)
    # Given back: the optimizer's own momentum and rate, as floats.
    attribute = getattr(optimizer, name_logged)
    assert type(attribute) is float and attribute == (0.5 if kind == "sgd" else 0.9)
    assert isinstance(optimizer._learning_rate, keras.Variable)


def test_cycle_spans_the_fit_when_not_given_and_continues_across_fits():
    x, y = problem(30)
    model = linear(keras.optimizers.SGD(0.01, momentum=0.9))
    rec = Recorder("momentum")
    one_cycle = C.OneCycle(0.1)
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[one_cycle, rec])
    expected = S.OneCycle(0.1, total_steps=60)
    np.testing.assert_allclose(rec.rates, expected(np.arange(60)), rtol=1e-6)
    # A second fit with an explicit length continues at the update count.
    rec = Recorder("momentum")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[C.OneCycle(0.1, total_steps=90), rec])
    np.testing.assert_allclose(rec.rates, S.OneCycle(0.1, total_steps=90)(np.arange(60, 90)), rtol=1e-6)


def test_resume_with_backup_and_restore_is_exact(tmp_path):
    """An interrupted run resumed by BackupAndRestore ends with the weights of
    the uninterrupted one: rate and momentum follow the update count."""
    x, y = problem(10)

    def callbacks():
        return [C.OneCycle(0.05, total_steps=40, base_momentum=0.6, max_momentum=0.95)]

    full = linear(keras.optimizers.SGD(0.01, momentum=0.9))
    full.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0, callbacks=callbacks())

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")

    backup = str(tmp_path / "backup")
    first = linear(keras.optimizers.SGD(0.01, momentum=0.9))
    with pytest.raises(RuntimeError):
        first.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                  callbacks=callbacks() + [keras.callbacks.BackupAndRestore(backup), Stop()])
    resumed = linear(keras.optimizers.SGD(0.01, momentum=0.9))
    resumed.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(backup)] + callbacks())
    np.testing.assert_allclose(resumed.get_weights()[0], full.get_weights()[0], rtol=1e-5, atol=1e-7)


def test_composes_with_warm_up_and_reduce_lr_on_plateau():
    x, y = problem(10)
    model = linear(keras.optimizers.SGD(0.01, momentum=0.9))
    rec = Recorder("momentum")
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
              callbacks=[C.WarmUp(5, initial_learning_rate=0.001), C.OneCycle(None, total_steps=25), plateau, rec])
    steps = np.arange(30)
    composed = S.WarmUp(S.OneCycle(0.01, total_steps=25), 5, 0.001)(steps)
    # ReduceLROnPlateau halves the base (the optimizer's own rate, the peak) at
    # the end of epoch 2 (update 20 on).
    base = np.where(steps >= 20, 0.005, 0.01)
    expected = [S.WarmUp(S.OneCycle(b, total_steps=25), 5, 0.001)(int(t)) for b, t in zip(base, steps)]
    np.testing.assert_allclose(rec.rates[:20], composed[:20], rtol=1e-6)
    np.testing.assert_allclose(rec.rates, expected, rtol=1e-6)


BAD = [
    (dict(max_learning_rate=-1.0, total_steps=10), "max_learning_rate"),
    (dict(max_learning_rate=0.1, total_steps=0), "total_steps"),
    (dict(max_learning_rate=0.1, total_steps=10, epochs=2), "total_steps"),
    (dict(max_learning_rate=0.1, total_steps=10, pct_start=1.5), "pct_start"),
    (dict(max_learning_rate=0.1, total_steps=10, anneal_strategy="cubic"), "anneal_strategy"),
    (dict(max_learning_rate=0.1, total_steps=10, base_momentum=1.0), "base_momentum"),
    (dict(max_learning_rate=0.1, total_steps=10, cycle_momentum="yes"), "cycle_momentum"),
]


@pytest.mark.parametrize("kwargs,arg", BAD, ids=[a for _, a in BAD])
def test_bad_arguments_raise_in_the_constructor(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        C.OneCycle(**kwargs)


def test_an_optimizer_without_momentum_is_refused_before_training():
    x, y = problem(4)
    for optimizer in (keras.optimizers.SGD(0.1), keras.optimizers.Adagrad(0.1)):
        model = linear(optimizer)
        before = model.get_weights()
        with pytest.raises(ValueError, match="cycle_momentum"):
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[C.OneCycle(0.1)])
        np.testing.assert_array_equal(model.get_weights()[0], before[0])
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[C.OneCycle(0.1, cycle_momentum=False)])
