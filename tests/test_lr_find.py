"""keras_trainkit.lr_find: the range test against closed forms, bitwise restoration,
data kinds, suggestions (fastai's algorithms) and the digits acceptance run."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_trainkit as kt
from keras_trainkit import _keras_hooks as hooks
from keras_trainkit.data import load_digits

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def scalar_model(learning_rate=0.1):
    """loss = w ** 2 on x = 1, y = 0: SGD gives w <- w * (1 - 2 * lr)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(1.0))])
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    return model


X1, Y1 = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")


def mlp(optimizer, seed=0, extras=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,)), keras.layers.Dense(64, activation="relu")]
    if extras:  # non-trainable state and a seed generator
        layers += [keras.layers.BatchNormalization(), keras.layers.Dropout(0.2)]
    model = keras.Sequential([*layers, keras.layers.Dense(10)])
    model.compile(optimizer, LOSS, metrics=["accuracy"])
    return model


def state(model):
    """Every variable of the model, its metrics and its optimizer: id -> (path, numpy value)."""
    variables = model.variables + model.metrics_variables + model.optimizer.variables
    return {id(v): (v.path, np.array(keras.ops.convert_to_numpy(v))) for v in variables}


def assert_same_state(before, after):
    """Bitwise equal; variables made since (a fresh model's metrics) hold zeros."""
    for key, (path, a) in before.items():
        assert key in after, path
        b = after[key][1]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    for key in after.keys() - before.keys():
        path, value = after[key]
        assert not value.any(), path


# -- the ramp, the raw and smoothed losses, early stopping -----------------------


def test_rates_per_update_and_raw_losses_follow_the_closed_form():
    model = scalar_model()
    model.fit(X1, Y1, batch_size=4, epochs=2, verbose=0)  # iterations = 2: the ramp starts there
    kernel = model.layers[0].kernel.numpy().copy()
    w0 = float(kernel[0, 0])  # 0.8 ** 2
    result = kt.lr_find(model, X1, Y1, batch_size=4, min_lr=1e-3, max_lr=0.5, num_steps=12,
                        stop_factor=None, smoothing=0.6)
    k = np.arange(12)
    rates = 1e-3 * 500.0 ** (k / 11)
    np.testing.assert_allclose(result.learning_rates, rates, rtol=1e-12)
    assert result.learning_rates[0] == 1e-3 and result.learning_rates[-1] == pytest.approx(0.5, rel=1e-12)
    # The k-th update's batch loss is w_k ** 2 with w_k = w0 * prod_{j<k} (1 - 2 lr_j):
    # each update used its own rate (in-graph) and each loss is its own batch's.
    w = w0 * np.concatenate([[1.0], np.cumprod(1.0 - 2.0 * rates[:-1])])
    np.testing.assert_allclose(result.raw_losses, w ** 2, rtol=2e-5)
    # Debiased exponential moving average.
    avg, smoothed = 0.0, []
    for i, loss in enumerate(result.raw_losses):
        avg = 0.6 * avg + 0.4 * loss
        smoothed.append(avg / (1 - 0.6 ** (i + 1)))
    np.testing.assert_allclose(result.losses, smoothed, rtol=1e-12)
    assert not result.stopped_early and result.num_steps == 12
    # ... and the model is back: the kernel and the update count.
    assert model.layers[0].kernel.numpy().tobytes() == kernel.tobytes()
    assert int(model.optimizer.iterations.numpy()) == 2


def test_stops_when_the_smoothed_loss_exceeds_stop_factor_times_its_best():
    model = scalar_model()
    result = kt.lr_find(model, X1, Y1, batch_size=4, min_lr=1e-3, max_lr=100.0, num_steps=60,
                        stop_factor=4.0, smoothing=0.0)
    rates = 1e-3 * 1e5 ** (np.arange(60) / 59)
    losses = np.concatenate([[1.0], np.cumprod((1.0 - 2.0 * rates) ** 2)])[:60]
    stop = next(k for k in range(1, 60) if losses[k] > 4 * losses[:k + 1].min())
    assert result.stopped_early and len(result.losses) == stop + 1 < 60
    np.testing.assert_allclose(result.losses, losses[:stop + 1], rtol=1e-4)
    np.testing.assert_array_equal(result.losses, result.raw_losses)  # smoothing=0
    # Without a stop factor it runs on until the loss overflows (float32), and stops there.
    full = kt.lr_find(model, X1, Y1, batch_size=4, min_lr=1e-3, max_lr=100.0, num_steps=60,
                      stop_factor=None, smoothing=0.0)
    overflow = np.flatnonzero(losses > np.finfo("float32").max)[0]
    assert full.stopped_early and len(full.losses) == overflow + 1 and np.isinf(full.losses[-1])
    np.testing.assert_allclose(full.losses[:-1], losses[:overflow], rtol=1e-4)
    calm = kt.lr_find(model, X1, Y1, batch_size=4, min_lr=1e-3, max_lr=0.1, num_steps=10, stop_factor=None)
    assert len(calm.losses) == 10 and not calm.stopped_early


# -- restoring the model exactly ---------------------------------------------------------


@pytest.mark.parametrize("history", ["fresh", "trained"])
def test_restores_every_variable_bitwise_and_a_later_fit_is_unchanged(digits, history):
    (x, y), _ = digits
    x, y = x[:256], y[:256]

    def run(with_lr_find):
        model = mlp(keras.optimizers.Adam(1e-3, clipnorm=1.0), extras=True)
        if history == "trained":
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        optimizer = model.optimizer
        own_rate, variables = hooks.learning_rate_slot(optimizer), list(optimizer.variables)
        train_function = model.train_function
        if with_lr_find:
            if history == "fresh":
                optimizer.build(model.trainable_variables)  # what lr_find and fit do first
                variables = list(optimizer.variables)
            before = state(model)
            result = kt.lr_find(model, x, y, num_steps=20, seed=1)
            assert len(result.losses) == 20
            assert_same_state(before, state(model))
            assert hooks.learning_rate_slot(optimizer) is own_rate
            assert [id(v) for v in optimizer.variables] == [id(v) for v in variables]
            assert model.train_function is train_function
        history_ = model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # shuffled: global RNG
        return state(model), history_.history["loss"]

    with_state, with_losses = run(True)
    without_state, without_losses = run(False)
    assert with_losses == without_losses
    assert len(with_state) == len(without_state)  # the twins' variables, in the same order
    for (path, a), (_, b) in zip(with_state.values(), without_state.values()):
        assert a.tobytes() == b.tobytes(), path


class _Interrupting(keras.utils.PyDataset):
    def __init__(self, x, y, at):
        super().__init__()
        self.x, self.y, self.at = x, y, at

    def __len__(self):
        return len(self.x) // 32

    def __getitem__(self, i):
        if i == self.at:
            raise KeyboardInterrupt
        return self.x[32 * i:32 * (i + 1)], self.y[32 * i:32 * (i + 1)]


def test_ctrl_c_mid_test_restores_the_model_and_schedule_compiled_rate(digits):
    (x, y), _ = digits
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    model = mlp(keras.optimizers.SGD(schedule, momentum=0.9))
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    before, train_function = state(model), model.train_function
    with pytest.raises(KeyboardInterrupt):
        kt.lr_find(model, _Interrupting(x, y, at=5))
    assert_same_state(before, state(model))
    assert hooks.learning_rate_slot(model.optimizer) is schedule
    assert model.train_function is train_function
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 * 0.5 ** (4 / 10), rel=1e-6)


def test_learning_rate_variable_stays_tracked_and_settable(digits):
    (x, y), _ = digits
    model = mlp(keras.optimizers.Adam(1e-3))
    lr_variable = hooks.learning_rate_slot(model.optimizer)
    result = kt.lr_find(model, x, y, num_steps=10)
    assert hooks.learning_rate_slot(model.optimizer) is lr_variable
    assert any(v is lr_variable for v in model.optimizer.variables)
    model.optimizer.learning_rate = result.learning_rates[3]  # the public setter still works
    assert float(lr_variable.numpy()) == np.float32(result.learning_rates[3])


# -- data kinds ---------------------------------------------------------------------------


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 32

    def __getitem__(self, i):
        return self.x[32 * i:32 * (i + 1)], self.y[32 * i:32 * (i + 1)]


def test_arrays_tf_data_and_py_dataset_run_the_same_test(digits):
    import tensorflow as tf

    (x, y), _ = digits
    x, y = x[:200], y[:200]  # 6 full batches; 15 steps wrap around
    model = mlp(keras.optimizers.SGD(0.05, momentum=0.9))
    kwargs = dict(min_lr=1e-4, max_lr=1.0, num_steps=15, stop_factor=None)
    arrays = kt.lr_find(model, x, y, batch_size=32, shuffle=False, **kwargs)
    dataset = kt.lr_find(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True), **kwargs)
    py_dataset = kt.lr_find(model, _Batches(x, y), **kwargs)
    np.testing.assert_allclose(dataset.raw_losses, arrays.raw_losses, rtol=1e-6)
    np.testing.assert_allclose(py_dataset.raw_losses, arrays.raw_losses, rtol=1e-6)
    # Shuffled arrays: reproducible from `seed`, different order from unshuffled.
    a = kt.lr_find(model, x, y, seed=3, **kwargs)
    b = kt.lr_find(model, x, y, seed=3, **kwargs)
    np.testing.assert_array_equal(a.raw_losses, b.raw_losses)
    assert not np.array_equal(a.raw_losses, arrays.raw_losses)


# -- suggestions ------------------------------------------------------------------------------


def fastai_valley(lrs, losses):
    """fastai.callback.schedule.valley (fastai 2.7), transcribed as a reference."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def result_of(losses, num_steps=None):
    lrs = 1e-6 * 1e6 ** (np.arange(len(losses)) / (len(losses) - 1))
    return kt.LRFinderResult(lrs, losses, losses, num_steps or len(losses), False, 0.0), lrs


@pytest.mark.parametrize("seed", range(5))
def test_valley_is_fastais(seed):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 100)
    losses = 2.3 - 1.5 / (1 + np.exp(-(t - 0.5) * 12)) + 3 * np.maximum(t - 0.8, 0) ** 2 * 30
    losses = losses + 0.05 * rng.standard_normal(100)
    result, lrs = result_of(losses)
    # fastai cuts the curve at [num_it // 10 : -5] first.
    assert result.suggestion("valley") == fastai_valley(lrs[10:-5], losses[10:-5])
    assert result.suggestion() == result.suggestion("valley")


def test_minimum_and_steepest_suggestions():
    t = np.linspace(-4, 4, 81)
    losses = 2.0 - np.tanh(t) + np.where(t > 3.5, (t - 3.5) * 10, 0)  # steepest fall at t = 0
    result, lrs = result_of(losses, num_steps=81)
    assert result.suggestion("steepest") == pytest.approx(lrs[40], rel=1e-12)
    window = losses[8:-5]
    assert result.suggestion("minimum/10") == pytest.approx(lrs[8 + np.argmin(window)] / 10, rel=1e-12)
    assert result.suggestion("minimum/10", skip_start=0, skip_end=0) == pytest.approx(
        lrs[np.argmin(losses)] / 10, rel=1e-12)


def test_suggestions_stop_at_the_first_non_finite_loss_and_need_points():
    losses = np.linspace(3.0, 1.0, 40)
    losses[30:] = np.nan
    result, lrs = result_of(losses, num_steps=40)
    assert result.suggestion("minimum/10", skip_end=0) == pytest.approx(lrs[29] / 10, rel=1e-12)
    short, _ = result_of(np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05]), num_steps=100)
    with pytest.raises(ValueError, match="Too few points"):
        short.suggestion()
    with pytest.raises(ValueError, match="method='steep'"):
        short.suggestion("steep")


def test_plot(tmp_path):
    t = np.linspace(-4, 4, 50)
    result, lrs = result_of(2.0 - np.tanh(t))
    path = tmp_path / "lr.png"
    ax = result.plot(path=str(path))
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), lrs)
    assert ax.lines[1].get_xdata()[0] == result.suggestion() and ax.get_xscale() == "log"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result.plot(method=None).lines) == 1


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_lr=0.0), "min_lr=0.0"),
    (dict(min_lr=1e-2, max_lr=1e-3), "max_lr=0.001"),
    (dict(min_lr=1e-2, max_lr=1e-2), "max_lr=0.01"),
    (dict(num_steps=1), "num_steps=1"),
    (dict(num_steps=10.0), "num_steps=10.0"),
    (dict(smoothing=1.0), "smoothing=1.0"),
    (dict(smoothing=-0.1), "smoothing=-0.1"),
    (dict(stop_factor=1.0), "stop_factor=1.0"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(shuffle="yes"), "shuffle='yes'"),
    (dict(y=np.zeros(3)), "same number"),
])
def test_rejects_bad_arguments_before_touching_the_model(kwargs, match):
    model = scalar_model()
    y = kwargs.pop("y", Y1)
    with pytest.raises(ValueError, match=match):
        kt.lr_find(model, X1, y, **kwargs)
    assert not model.optimizer.built and model.train_function is None


def test_rejects_uncompiled_models_and_misused_datasets():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="must be compiled"):
        kt.lr_find(model, X1, Y1)
    model = scalar_model()
    ds = tf.data.Dataset.from_tensor_slices((X1, Y1)).batch(2)
    with pytest.raises(ValueError, match="`y` must be None"):
        kt.lr_find(model, ds, Y1)
    with pytest.raises(ValueError, match="batch_size=2"):
        kt.lr_find(model, ds, batch_size=2)
    with pytest.raises(ValueError, match="empty tf.data.Dataset"):
        kt.lr_find(model, ds.take(0))
    with pytest.raises(ValueError, match="Argument `model`"):
        kt.lr_find("model", X1, Y1)
    assert not model.optimizer.built


# -- acceptance: the suggestion trains the digits MLP ------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_at_the_suggestion_reaches_95_percent_on_digits(digits, optimizer):
    (x, y), (x_val, y_val) = digits
    make = {
        "adam": lambda lr: keras.optimizers.Adam(lr),
        "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    }[optimizer]
    model = mlp(make(1e-3))
    result = kt.lr_find(model, x, y, seed=0)
    lr = result.suggestion()  # fastai's valley
    assert 1e-4 < lr < 1.0
    model.optimizer.learning_rate = lr
    history = model.fit(x, y, batch_size=32, epochs=5, validation_data=(x_val, y_val), verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.95, (lr, history.history["val_accuracy"])


# -- other backends (subprocesses) ---------------------------------------------------------------------

BACKEND_SCRIPT = textwrap.dedent("""
    import json
    import keras, numpy as np
    import keras_trainkit as kt
    from keras_trainkit.data import load_digits
    (x, y), _ = load_digits()
    x, y = x[:256], y[:256]

    def run(with_lr_find):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dropout(0.2), keras.layers.Dense(10)])
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
        out = {}
        if with_lr_find:
            before = [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]
            result = kt.lr_find(model, x, y, min_lr=1e-4, max_lr=1.0, num_steps=12, shuffle=False,
                                batch_size=64, stop_factor=None, smoothing=0.0)
            after = [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]
            out["restored"] = all(a.tobytes() == b.tobytes() for a, b in zip(before, after))
            out["raw"] = result.raw_losses.tolist()
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
        out["weights"] = [np.array(v.numpy()).tolist() for v in model.trainable_variables]
        return out

    a, b = run(True), run(False)
    print(json.dumps({"restored": a["restored"], "same_fit": a["weights"] == b["weights"],
                      "raw": a["raw"], "backend": keras.backend.backend()}))
""")


@pytest.mark.long
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends(tmp_path, backend):
    pytest.importorskip(backend)
    script = tmp_path / "check.py"
    script.write_text(BACKEND_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == backend and out["restored"] and out["same_fit"]
    assert len(out["raw"]) == 12 and np.all(np.isfinite(out["raw"]))
