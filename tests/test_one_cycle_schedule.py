"""schedules.OneCycle / OneCycleMomentum against PyTorch's OneCycleLR (golden file),
closed-form properties, validation and saving.

The golden trajectories come from tests/golden/make_torch_golden.py (torch 2.13).
"""

import json
import math
import pathlib

import keras
import numpy as np
import pytest

from keras_trainkit import schedules as S

GOLDEN = np.load(pathlib.Path(__file__).parent / "golden" / "torch_one_cycle.npz")
META = json.loads(str(GOLDEN["meta"]))
CASES = sorted(META["cases"])


def _case(name):
    case = META["cases"][name]
    rate = S.OneCycle(**case["kwargs"])
    return case, rate, rate.momentum_schedule(**case["momentum_kwargs"])


def test_golden_file_covers_the_variants():
    kwargs = [META["cases"][n]["kwargs"] for n in CASES]
    assert {k.get("anneal_strategy", "cos") for k in kwargs} == {"cos", "linear"}
    assert any(k.get("three_phase") for k in kwargs) and not all(k.get("three_phase") for k in kwargs)
    assert {META["cases"][n]["optimizer"] for n in CASES} == {"sgd", "adam"}  # momentum and betas[0]
    assert any("epochs" in k for k in kwargs)


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_per_update(name):
    case, rate, momentum = _case(name)
    total = case["total_steps"]
    assert rate.cycle_steps == momentum.cycle_steps == total
    steps = np.arange(total)
    np.testing.assert_allclose(rate(steps), GOLDEN[f"{name}__lr"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(momentum(steps), GOLDEN[f"{name}__momentum"], rtol=1e-6, atol=0)
    # The tensor path (what the optimizer evaluates with `iterations`) agrees.
    for t in (0, total // 3, total - 1):
        value = rate(keras.Variable(t, dtype="int64", trainable=False))
        assert float(keras.ops.convert_to_numpy(value)) == pytest.approx(GOLDEN[f"{name}__lr"][t], rel=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_holds_the_last_value_after_the_cycle(name):
    case, rate, momentum = _case(name)
    total = case["total_steps"]
    past = np.array([total, total + 1, 10 * total + 7])
    last_lr, last_momentum = GOLDEN[f"{name}__lr"][-1], GOLDEN[f"{name}__momentum"][-1]
    np.testing.assert_allclose(rate(past), last_lr, rtol=1e-6)
    np.testing.assert_allclose(momentum(past), last_momentum, rtol=1e-6)
    pct_start, three = case["kwargs"].get("pct_start", 0.3), case["kwargs"].get("three_phase", False)
    if pct_start < (0.5 if three else 1.0):  # else the cycle ends before its last phase
        assert last_lr == pytest.approx(rate.min_learning_rate, rel=1e-12)
        assert last_momentum == pytest.approx(momentum.max_momentum, rel=1e-12)
    # torch instead extrapolates the last phase one step past the cycle (or fails there).
    torch_lr_at_total = GOLDEN[f"{name}__at_total"][0]
    assert math.isnan(torch_lr_at_total) or torch_lr_at_total != pytest.approx(last_lr, rel=1e-3)


def test_linear_extrapolation_in_torch_would_be_negative():
    """Why the schedule holds: torch's rate at step total_steps with linear annealing."""
    assert GOLDEN["linear_sgd__at_total"][0] < 0
    assert S.OneCycle(**META["cases"]["linear_sgd"]["kwargs"])(60) > 0


def test_closed_form_two_phase():
    peak, total, pct = 0.4, 200, 0.25  # phase ends at updates 49 and 199, exactly
    rate = S.OneCycle(peak, total_steps=total, pct_start=pct, div_factor=20.0, final_div_factor=50.0)
    t = np.arange(total, dtype=np.float64)
    initial, low = peak / 20.0, peak / 20.0 / 50.0
    p1, p2 = t / 49.0, (t - 49.0) / 150.0
    up = peak + (initial - peak) / 2 * (1 + np.cos(np.pi * p1))
    down = low + (peak - low) / 2 * (1 + np.cos(np.pi * p2))
    expected = np.where(t <= 49, up, down)
    np.testing.assert_allclose(rate(t), expected, rtol=1e-6)
    values = rate(t)
    assert values[49] == np.float32(peak) and values.argmax() == 49
    assert np.all(np.diff(values[:50]) > 0) and np.all(np.diff(values[49:]) < 0)
    momentum = rate.momentum_schedule(0.8, 0.9)(t)
    assert momentum[0] == np.float32(0.9) and momentum[49] == np.float32(0.8) and momentum[-1] == np.float32(0.9)
    assert momentum.argmin() == 49


def test_closed_form_three_phase_linear():
    rate = S.OneCycle(1.0, total_steps=100, pct_start=0.3, anneal_strategy="linear",
                      div_factor=10.0, final_div_factor=100.0, three_phase=True)
    t = np.arange(100, dtype=np.float64)
    end1, end2 = 0.3 * 100 - 1, 2 * 0.3 * 100 - 2
    expected = np.select(
        [t <= end1, t <= end2],
        [0.1 + 0.9 * t / end1, 1.0 - 0.9 * (t - end1) / (end2 - end1)],
        0.1 + (0.001 - 0.1) * (t - end2) / (99 - end2),
    )
    np.testing.assert_allclose(rate(t), expected, rtol=1e-6)
    momentum = rate.momentum_schedule()(t)
    np.testing.assert_allclose(momentum[int(end2) + 1:], 0.95, rtol=1e-7)  # flat third phase


def test_zero_length_first_phase_starts_at_the_peak():
    # pct_start * total_steps == 1: torch divides 0 by 0 at update 0.
    rate = S.OneCycle(0.1, total_steps=10, pct_start=0.1)
    assert rate(0) == np.float32(0.1)
    assert rate.momentum_schedule()(0) == np.float32(0.85)
    assert np.all(np.isfinite(rate(np.arange(20))))
    assert S.OneCycle(0.1, total_steps=1, pct_start=1.0)([0, 1]).tolist() == [np.float32(0.1)] * 2


def test_epochs_times_steps_per_epoch():
    a = S.OneCycle(0.1, epochs=3, steps_per_epoch=7)
    b = S.OneCycle(0.1, total_steps=21)
    np.testing.assert_array_equal(a(np.arange(30)), b(np.arange(30)))
    assert a.get_config()["epochs"] == 3 and a.get_config()["total_steps"] is None


def test_sgd_applies_the_rate_of_each_update():
    """SGD with constant gradient 1: after n updates w = -sum(lr_0..lr_{n-1})."""
    name = "cos_sgd_defaults"
    rate = S.OneCycle(**META["cases"][name]["kwargs"])
    opt = keras.optimizers.SGD(learning_rate=rate)
    w = keras.Variable(np.zeros(1, "float32"))
    opt.build([w])
    ones = keras.ops.ones((1,))
    seen = []
    for _ in range(100):
        opt.apply([ones], [w])
        seen.append(float(keras.ops.convert_to_numpy(w)[0]))
    np.testing.assert_allclose(seen, -np.cumsum(GOLDEN[f"{name}__lr"]), rtol=1e-5, atol=1e-7)


def test_serialization_round_trip(tmp_path):
    rate = S.OneCycle(0.2, epochs=2, steps_per_epoch=15, pct_start=0.4, anneal_strategy="linear",
                      div_factor=5.0, final_div_factor=10.0, three_phase=True)
    momentum = rate.momentum_schedule(0.7, 0.9)
    for sched in (rate, momentum):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
        assert type(clone) is type(sched) and clone.get_config() == sched.get_config()
        np.testing.assert_array_equal(clone(np.arange(40)), sched(np.arange(40)))
    assert momentum.get_config() == {
        "base_momentum": 0.7, "max_momentum": 0.9, "total_steps": None, "epochs": 2,
        "steps_per_epoch": 15, "pct_start": 0.4, "anneal_strategy": "linear", "three_phase": True,
        "name": "OneCycleMomentum",
    }
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=rate, momentum=0.9), "mse")
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer.learning_rate, keras.Variable) is False
    assert int(loaded.optimizer.iterations) == 2
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(rate(2)), rel=1e-7)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_learning_rate=0.0, total_steps=10), "max_learning_rate"),
    (dict(max_learning_rate=float("nan"), total_steps=10), "max_learning_rate"),
    (dict(max_learning_rate=0.1), "total_steps"),
    (dict(max_learning_rate=0.1, total_steps=0), "total_steps=0"),
    (dict(max_learning_rate=0.1, total_steps=10.0), "total_steps=10.0"),
    (dict(max_learning_rate=0.1, total_steps=10, epochs=2, steps_per_epoch=5), "not both"),
    (dict(max_learning_rate=0.1, epochs=2), "steps_per_epoch=None"),
    (dict(max_learning_rate=0.1, epochs=0, steps_per_epoch=5), "epochs=0"),
    (dict(max_learning_rate=0.1, epochs=2, steps_per_epoch=True), "steps_per_epoch=True"),
    (dict(max_learning_rate=0.1, total_steps=10, pct_start=1.5), "pct_start=1.5"),
    (dict(max_learning_rate=0.1, total_steps=10, pct_start=-0.1), "pct_start"),
    (dict(max_learning_rate=0.1, total_steps=10, anneal_strategy="cosine"), "anneal_strategy='cosine'"),
    (dict(max_learning_rate=0.1, total_steps=10, div_factor=0.0), "div_factor=0.0"),
    (dict(max_learning_rate=0.1, total_steps=10, final_div_factor=-1.0), "final_div_factor"),
    (dict(max_learning_rate=0.1, total_steps=10, three_phase=1), "three_phase=1"),
])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.OneCycle(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(base_momentum=1.0), "base_momentum=1.0"),
    (dict(max_momentum=-0.1), "max_momentum=-0.1"),
    (dict(max_momentum="0.9"), "max_momentum='0.9'"),
])
def test_momentum_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.OneCycleMomentum(total_steps=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        S.OneCycle(0.1, total_steps=10).momentum_schedule(**kwargs)


def test_rescaled_base_scales_the_whole_cycle():
    """The LR callbacks may replace a schedule's base rate by the optimizer's variable."""
    if not hasattr(S.Schedule, "with_base"):
        pytest.skip("Schedule.with_base is not in this checkout")
    rate = S.OneCycle(0.1, total_steps=50, three_phase=True)
    scaled = rate.with_base(keras.Variable(0.25, trainable=False))
    steps = np.arange(60)
    np.testing.assert_allclose(scaled(steps), S.OneCycle(0.25, total_steps=50, three_phase=True)(steps),
                               rtol=1e-6)
    assert S.OneCycleMomentum.base_attribute is None
