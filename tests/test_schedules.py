"""Schedules against Keras' built-ins, closed-form numpy and their properties."""

import math
import os

import keras
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keras_trainkit import schedules as S

KS = keras.optimizers.schedules
STEPS = np.array([0, 1, 2, 7, 49, 50, 51, 99, 100, 101, 150, 999, 1000, 1001, 5000, 100000])


def keras_values(schedule, steps=STEPS):
    return np.array([float(schedule(keras.ops.convert_to_tensor(int(s)))) for s in steps])


KERAS_PAIRS = [
    ("exp", dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=0.5), S.ExponentialDecay, KS.ExponentialDecay),
    ("exp-stair", dict(initial_learning_rate=0.3, decay_steps=50, decay_rate=0.9, staircase=True), S.ExponentialDecay, KS.ExponentialDecay),
    ("poly", dict(initial_learning_rate=0.1, decay_steps=1000), S.PolynomialDecay, KS.PolynomialDecay),
    ("poly-p2", dict(initial_learning_rate=0.1, decay_steps=100, end_learning_rate=0.001, power=2.0), S.PolynomialDecay, KS.PolynomialDecay),
    ("poly-sqrt", dict(initial_learning_rate=1.0, decay_steps=100, end_learning_rate=0.0, power=0.5), S.PolynomialDecay, KS.PolynomialDecay),
    ("poly-cycle", dict(initial_learning_rate=0.1, decay_steps=100, end_learning_rate=0.01, cycle=True), S.PolynomialDecay, KS.PolynomialDecay),
    ("invtime", dict(initial_learning_rate=0.1, decay_steps=100, decay_rate=1.0), S.InverseTimeDecay, KS.InverseTimeDecay),
    ("invtime-stair", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.5, staircase=True), S.InverseTimeDecay, KS.InverseTimeDecay),
    ("cos", dict(initial_learning_rate=0.1, decay_steps=1000), S.CosineDecay, KS.CosineDecay),
    ("cos-alpha", dict(initial_learning_rate=0.1, decay_steps=100, alpha=0.1), S.CosineDecay, KS.CosineDecay),
    ("cos-warm", dict(initial_learning_rate=0.0, decay_steps=900, warmup_target=0.1, warmup_steps=100), S.CosineDecay, KS.CosineDecay),
    ("cos-warm-from-nonzero", dict(initial_learning_rate=0.01, decay_steps=100, alpha=0.2, warmup_target=0.5, warmup_steps=50), S.CosineDecay, KS.CosineDecay),
    ("sgdr", dict(initial_learning_rate=0.1, first_decay_steps=100), S.CosineDecayRestarts, KS.CosineDecayRestarts),
    ("sgdr-t1", dict(initial_learning_rate=0.1, first_decay_steps=100, t_mul=1.0, m_mul=0.5, alpha=0.1), S.CosineDecayRestarts, KS.CosineDecayRestarts),
    ("sgdr-t3", dict(initial_learning_rate=0.2, first_decay_steps=50, t_mul=3.0, m_mul=0.9, alpha=0.05), S.CosineDecayRestarts, KS.CosineDecayRestarts),
]


@pytest.mark.parametrize("label,kwargs,ours,theirs", KERAS_PAIRS, ids=[p[0] for p in KERAS_PAIRS])
def test_matches_keras_builtin(label, kwargs, ours, theirs):
    expected = keras_values(theirs(**kwargs))
    np.testing.assert_allclose(ours(**kwargs)(STEPS), expected, rtol=1e-6, atol=1e-9)
    # The tensor path (what the optimizer calls) gives the same values.
    np.testing.assert_allclose(keras_values(ours(**kwargs)), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("label,kwargs,ours,theirs", KERAS_PAIRS, ids=[p[0] for p in KERAS_PAIRS])
def test_keras_defaults_and_argument_names(label, kwargs, ours, theirs):
    import inspect

    theirs_sig = inspect.signature(theirs.__init__).parameters
    ours_sig = inspect.signature(ours.__init__).parameters
    for name, param in theirs_sig.items():
        assert name in ours_sig, name
        assert ours_sig[name].default == param.default, name


def test_step_decay_closed_form():
    t = np.arange(0, 500)
    np.testing.assert_allclose(S.StepDecay(0.2, step_size=30, gamma=0.5)(t), 0.2 * 0.5 ** (t // 30), rtol=1e-6)
    milestones = [10, 100, 250]
    expected = 0.2 * 0.1 ** np.array([sum(m <= s for m in milestones) for s in t])
    np.testing.assert_allclose(S.StepDecay(0.2, milestones=milestones)(t), expected, rtol=1e-6)


def test_step_decay_equals_keras_staircase_and_shifted_piecewise():
    t = np.arange(0, 300)
    keras_stair = KS.ExponentialDecay(0.1, decay_steps=40, decay_rate=0.3, staircase=True)
    np.testing.assert_allclose(S.StepDecay(0.1, step_size=40, gamma=0.3)(t), keras_values(keras_stair, t), rtol=1e-6)
    # Keras' PiecewiseConstantDecay switches at t > boundary; ours at t >= milestone.
    piecewise = KS.PiecewiseConstantDecay([49, 149], [0.1, 0.05, 0.025])
    np.testing.assert_allclose(S.StepDecay(0.1, milestones=[50, 150], gamma=0.5)(t), keras_values(piecewise, t), rtol=1e-6)


def test_closed_form_guides_formulas():
    t = np.arange(0, 3000, dtype=np.float64)
    T, lr, beta = 1000.0, 0.05, 2.0
    np.testing.assert_allclose(
        S.PolynomialDecay(lr, T, end_learning_rate=0.0, power=beta)(t),
        lr * (1 - np.minimum(t, T) / T) ** beta, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(S.InverseTimeDecay(lr, T, 1.0)(t), lr / (1 + t / T), rtol=1e-6)
    np.testing.assert_allclose(S.ExponentialDecay(lr, T, 0.1)(t), lr * 0.1 ** (t / T), rtol=1e-5)
    np.testing.assert_allclose(
        S.CosineDecay(lr, T, alpha=0.1)(t),
        lr * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, T) / T)) + 0.1), rtol=1e-5)
    np.testing.assert_allclose(S.Constant(0.3)(t), np.full_like(t, 0.3), rtol=1e-7)


@pytest.mark.parametrize("shape", ["linear", "exponential", "cosine"])
@pytest.mark.parametrize("offset", [True, False])
def test_warmup_closed_form_from_nonzero_start(shape, offset):
    start, W = 0.002, 40
    inner = S.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)
    t = np.arange(0, 200, dtype=np.float64)
    inner_np = lambda s: 0.1 * 0.5 ** (s / 100)  # noqa: E731
    peak = inner_np(0.0) if offset else inner_np(float(W))
    frac = t / W
    ramp = {
        "linear": start + (peak - start) * frac,
        "exponential": start * (peak / start) ** frac,
        "cosine": start + (peak - start) * 0.5 * (1 - np.cos(np.pi * frac)),
    }[shape]
    tail = inner_np(t - W) if offset else inner_np(t)
    expected = np.where(t < W, ramp, tail)
    got = S.WarmUp(inner, W, initial_learning_rate=start, shape=shape, offset=offset)(t)
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    # Properties: strictly increasing ramp, peak exactly at the boundary.
    assert np.all(np.diff(got[: W + 1]) > 0)
    assert got[0] == pytest.approx(start, rel=1e-6)
    assert got[W] == pytest.approx(peak, rel=1e-6)


def test_warmup_wraps_keras_schedules_and_floats():
    keras_cos = KS.CosineDecay(0.1, decay_steps=100, warmup_target=0.2, warmup_steps=10)
    wrapped = S.WarmUp(keras_cos, warmup_steps=5, initial_learning_rate=0.01)
    t = np.arange(0, 150)
    ref = keras_values(keras_cos, np.maximum(t - 5, 0))
    expected = np.where(t < 5, 0.01 + (0.1 - 0.01) * t / 5, ref)
    np.testing.assert_allclose(wrapped(t), expected, rtol=1e-6)
    np.testing.assert_allclose(keras_values(wrapped, t), expected, rtol=1e-6)
    const = S.WarmUp(0.3, warmup_steps=3)
    np.testing.assert_allclose(const([0, 1, 2, 3, 100]), [0.0, 0.1, 0.2, 0.3, 0.3], rtol=1e-6)
    assert float(S.WarmUp(0.3, warmup_steps=0)(0)) == pytest.approx(0.3)


def test_warmup_cosine_decay_total_length_is_warmup_plus_decay():
    sched = S.WarmUp(S.CosineDecay(0.1, decay_steps=900, alpha=0.01), warmup_steps=100)
    values = sched([99, 100, 1000, 1001, 10**6])
    assert values[1] == pytest.approx(0.1, rel=1e-6)
    assert values[2] == pytest.approx(0.001, rel=1e-5)  # end value reached at W + T
    assert values[3] == pytest.approx(0.001, rel=1e-5)  # and held past it
    assert values[4] == pytest.approx(0.001, rel=1e-5)


def test_join_schedules_restarts_each_piece():
    sched = S.JoinSchedules([S.WarmUp(0.1, 10), S.CosineDecay(0.1, 90), S.Constant(0.001)], [10, 100])
    t = np.arange(0, 200, dtype=np.float64)
    expected = np.where(
        t < 10, 0.1 * t / 10,
        np.where(t < 100, 0.1 * 0.5 * (1 + np.cos(np.pi * np.minimum(t - 10, 90) / 90)), 0.001))
    np.testing.assert_allclose(sched(t), expected, rtol=1e-5, atol=1e-9)


def test_past_the_end_holds_final_value():
    for sched, final in [
        (S.PolynomialDecay(0.1, 100, end_learning_rate=0.003, power=3.0), 0.003),
        (S.CosineDecay(0.1, 100, alpha=0.2), 0.02),
        (S.CosineDecay(0.0, 100, warmup_target=0.1, warmup_steps=20, alpha=0.5), 0.05),
        (S.WarmUp(S.PolynomialDecay(0.1, 50, end_learning_rate=0.0), 10), 0.0),
    ]:
        np.testing.assert_allclose(sched([10**3, 10**5, 10**7]), [final] * 3, rtol=1e-5, atol=1e-9)


def test_host_and_tensor_calls_agree():
    sched = S.WarmUp(S.StepDecay(0.1, milestones=[20, 40]), 10, initial_learning_rate=0.01, shape="cosine")
    host = sched(np.arange(60))
    tensor = keras.ops.convert_to_numpy(sched(keras.ops.arange(60)))
    np.testing.assert_allclose(host, tensor, rtol=1e-7)
    assert isinstance(sched(3), np.ndarray) and sched(3).shape == ()


ALL_SCHEDULES = [
    S.Constant(0.01),
    S.StepDecay(0.1, step_size=10, gamma=0.5),
    S.StepDecay(0.1, milestones=[3, 30]),
    S.ExponentialDecay(0.1, 10, 0.9, staircase=True),
    S.PolynomialDecay(0.1, 100, power=2.0, cycle=True),
    S.InverseTimeDecay(0.1, 10, 2.0),
    S.CosineDecay(0.1, 100, alpha=0.1, warmup_target=0.2, warmup_steps=5),
    S.CosineDecayRestarts(0.1, 10, t_mul=1.5, m_mul=0.8),
    S.WarmUp(KS.ExponentialDecay(0.1, 10, 0.5), 5, shape="cosine", offset=False),
    S.JoinSchedules([0.1, S.ExponentialDecay(0.1, 10, 0.5)], [5]),
]


@pytest.mark.parametrize("sched", ALL_SCHEDULES, ids=lambda s: type(s).__name__)
def test_serialization_round_trip(sched):
    t = np.arange(0, 120)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    assert type(restored) is type(sched)
    np.testing.assert_allclose(restored(t), sched(t), rtol=1e-7)
    again = type(sched).from_config(sched.get_config())
    np.testing.assert_allclose(again(t), sched(t), rtol=1e-7)


def test_schedule_inside_saved_optimizer(tmp_path):
    sched = S.WarmUp(S.CosineDecay(0.05, 200, alpha=0.1), 20, initial_learning_rate=0.001)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(learning_rate=sched), "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations) == 8
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(sched(8)), rel=1e-6)
    loaded.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --- property tests -----------------------------------------------------------

rates = st.floats(1e-6, 10.0)
steps_st = st.integers(1, 10**6)
STEPS_PROBE = np.array([0, 1, 2, 10, 99, 100, 101, 1000, 12345, 10**6, 10**7], dtype=np.float64)


@st.composite
def any_schedule(draw):
    lr = draw(rates)
    kind = draw(st.sampled_from(["step", "milestones", "exp", "poly", "inv", "cos", "sgdr", "const"]))
    if kind == "step":
        inner = S.StepDecay(lr, step_size=draw(steps_st), gamma=draw(st.floats(1e-6, 1.0)))
    elif kind == "milestones":
        ms = sorted(set(draw(st.lists(steps_st, min_size=1, max_size=5))))
        inner = S.StepDecay(lr, milestones=ms, gamma=draw(st.floats(1e-6, 1.0)))
    elif kind == "exp":
        inner = S.ExponentialDecay(lr, draw(st.floats(1e-3, 1e6)), draw(st.floats(1e-6, 1.0)), staircase=draw(st.booleans()))
    elif kind == "poly":
        inner = S.PolynomialDecay(lr, draw(st.floats(1e-3, 1e6)), draw(st.floats(0.0, 10.0)), draw(st.floats(0.0, 10.0)), cycle=draw(st.booleans()))
    elif kind == "inv":
        inner = S.InverseTimeDecay(lr, draw(st.floats(1e-3, 1e6)), draw(st.floats(0.0, 1e3)), staircase=draw(st.booleans()))
    elif kind == "cos":
        inner = S.CosineDecay(lr, draw(st.floats(1e-3, 1e6)), alpha=draw(st.floats(0.0, 1.0)))
    elif kind == "sgdr":
        inner = S.CosineDecayRestarts(lr, draw(st.floats(1.0, 1e5)), t_mul=draw(st.floats(1.0, 4.0)), m_mul=draw(st.floats(0.0, 1.0)), alpha=draw(st.floats(0.0, 1.0)))
    else:
        inner = S.Constant(lr)
    if draw(st.booleans()):
        shape = draw(st.sampled_from(["linear", "cosine", "exponential"]))
        start = draw(st.floats(1e-8, 1.0)) if shape == "exponential" else draw(st.floats(0.0, 1.0))
        inner = S.WarmUp(inner, draw(st.integers(0, 10**5)), start, shape=shape, offset=draw(st.booleans()))
    return inner


@settings(max_examples=int(os.environ.get("TRAINKIT_HYPOTHESIS_EXAMPLES", 150)), deadline=None)
@given(any_schedule())
# float32 rounding of decay_steps * ceil(t / decay_steps) below t at t = 1e7.
@example(S.WarmUp(S.PolynomialDecay(1.0, 2.1846746470071254, 0.0, 1.5, cycle=True), 55998))
@example(S.PolynomialDecay(1.0, 2.1846746470071254, 0.0, 1.0, cycle=True))
def test_valid_configurations_never_give_nan_inf_or_negative(sched):
    values = sched(STEPS_PROBE)
    assert np.all(np.isfinite(values)), (sched, values)
    assert np.all(values >= 0), (sched, values)


@settings(max_examples=int(os.environ.get("TRAINKIT_HYPOTHESIS_EXAMPLES", 60)), deadline=None)
@given(lr=rates, total=st.integers(2, 10**5), power=st.one_of(st.just(0.0), st.floats(1e-3, 5.0)), end=st.floats(0.0, 1e-3))
def test_polynomial_monotone_and_reaches_end(lr, total, power, end):
    values = S.PolynomialDecay(lr, total, end_learning_rate=end, power=power)(np.linspace(0, 2 * total, 50))
    if lr >= end:
        assert np.all(np.diff(values) <= 1e-7 * lr)
    if power == 0:  # (1 - p) ** 0 == 1 everywhere, as in Keras: a constant rate.
        # (lr - end) * 1 + end in float32 rounds at the scale of max(lr, end).
        np.testing.assert_allclose(values, lr, rtol=1e-6, atol=1e-6 * max(lr, end))
    else:
        assert values[-1] == pytest.approx(end, rel=1e-5, abs=1e-9)


# --- bad input ----------------------------------------------------------------

BAD = [
    (S.Constant, dict(learning_rate=-0.1), "learning_rate"),
    (S.Constant, dict(learning_rate=float("nan")), "learning_rate"),
    (S.Constant, dict(learning_rate="0.1"), "learning_rate"),
    (S.StepDecay, dict(initial_learning_rate=0.0, step_size=10), "initial_learning_rate"),
    (S.StepDecay, dict(initial_learning_rate=0.1, step_size=0), "step_size"),
    (S.StepDecay, dict(initial_learning_rate=0.1, step_size=2.5), "step_size"),
    (S.StepDecay, dict(initial_learning_rate=0.1), "step_size"),
    (S.StepDecay, dict(initial_learning_rate=0.1, step_size=3, milestones=[4]), "milestones"),
    (S.StepDecay, dict(initial_learning_rate=0.1, milestones=[30, 10]), "milestones"),
    (S.StepDecay, dict(initial_learning_rate=0.1, milestones=[10, 10]), "milestones"),
    (S.StepDecay, dict(initial_learning_rate=0.1, milestones=[]), "milestones"),
    (S.StepDecay, dict(initial_learning_rate=0.1, step_size=5, gamma=0.0), "gamma"),
    (S.StepDecay, dict(initial_learning_rate=0.1, step_size=5, gamma=1.5), "gamma"),
    (S.ExponentialDecay, dict(initial_learning_rate=float("inf"), decay_steps=10, decay_rate=0.5), "initial_learning_rate"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=0, decay_rate=0.5), "decay_steps"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=-5, decay_rate=0.5), "decay_steps"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=1.01), "decay_rate"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5, staircase="yes"), "staircase"),
    (S.PolynomialDecay, dict(initial_learning_rate=0.1, decay_steps=10, power=-1.0), "power"),
    (S.PolynomialDecay, dict(initial_learning_rate=0.1, decay_steps=10, end_learning_rate=-0.01), "end_learning_rate"),
    (S.PolynomialDecay, dict(initial_learning_rate=0.1, decay_steps=0), "decay_steps"),
    (S.InverseTimeDecay, dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=-1.0), "decay_rate"),
    (S.InverseTimeDecay, dict(initial_learning_rate=-1.0, decay_steps=10, decay_rate=1.0), "initial_learning_rate"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=0), "decay_steps"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, alpha=1.5), "alpha"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, alpha=-0.1), "alpha"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_target=0.2, warmup_steps=-1), "warmup_steps"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_target=-0.2, warmup_steps=3), "warmup_target"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=0), "first_decay_steps"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=0.5), "t_mul"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=10, m_mul=2.0), "m_mul"),
    (S.WarmUp, dict(schedule=0.1, warmup_steps=-1), "warmup_steps"),
    (S.WarmUp, dict(schedule=0.1, warmup_steps=10, shape="quadratic"), "shape"),
    (S.WarmUp, dict(schedule=0.1, warmup_steps=10, shape="exponential"), "initial_learning_rate"),
    (S.WarmUp, dict(schedule="cosine", warmup_steps=10), "schedule"),
    (S.WarmUp, dict(schedule=0.1, warmup_steps=10, initial_learning_rate=-1e-3), "initial_learning_rate"),
    (S.JoinSchedules, dict(schedules=[0.1], boundaries=[]), "schedules"),
    (S.JoinSchedules, dict(schedules=[0.1, 0.2], boundaries=[5, 6]), "boundaries"),
    (S.JoinSchedules, dict(schedules=[0.1, 0.2, 0.3], boundaries=[6, 5]), "boundaries"),
    (S.JoinSchedules, dict(schedules=[0.1, -0.2], boundaries=[5]), "schedules[1]"),
]


@pytest.mark.parametrize("cls,kwargs,arg", BAD, ids=[f"{c.__name__}-{a}-{i}" for i, (c, _, a) in enumerate(BAD)])
def test_bad_input_raises_naming_argument(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg.replace('[', '.').replace(']', '.')}`") as info:
        cls(**kwargs)
    bad_value = kwargs.get(arg)
    if arg in kwargs and not isinstance(bad_value, float) or (isinstance(bad_value, float) and not math.isnan(bad_value)):
        assert repr(bad_value) in str(info.value)
