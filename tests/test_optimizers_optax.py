"""The optimizers Keras lacks reproduce optax's trajectories (stored golden values).

tests/golden/make_optax_golden.py ran optax on a fixed float32 gradient
sequence and stored, per case, the parameters after each of 100 steps and the
keras_trainkit optimizer that must reproduce them. optax is not needed here.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import optimizers as kto

GOLDEN = pathlib.Path(__file__).parent / "golden" / "optax_trajectories.npz"
RTOL = 1e-5


def _load():
    with np.load(GOLDEN) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    return arrays, meta


ARRAYS, META = _load()
CASES = sorted(META["cases"])


def build(spec):
    """Turns a golden-file spec into an optimizer or schedule."""
    if isinstance(spec, list):
        return [build(s) for s in spec]
    if not isinstance(spec, dict):
        return spec
    kwargs = {k: build(v) for k, v in spec.get("kwargs", {}).items()}
    if "optimizer" in spec:
        return getattr(kto, spec["optimizer"])(**kwargs)
    if "keras" in spec:
        return getattr(keras.optimizers, spec["keras"])(**kwargs)
    if "schedule" in spec:
        return getattr(keras.optimizers.schedules, spec["schedule"])(**kwargs)
    return {k: build(v) for k, v in spec.items()}


def run(optimizer, steps=META["steps"]):
    """Parameters after each step; the update is compiled, as inside `fit`."""
    variables = [keras.Variable(ARRAYS[f"init_{i}"]) for i in range(2)]
    grads = [ARRAYS[f"grads_{i}"] for i in range(2)]
    optimizer.build(variables)

    @tf.function
    def apply(g0, g1):
        optimizer.apply([g0, g1], variables)

    out = [[] for _ in variables]
    for step in range(steps):
        apply(*[tf.constant(g[step]) for g in grads])
        for i, v in enumerate(variables):
            out[i].append(v.numpy())
    return [np.stack(o) for o in out]


def assert_trajectory_close(actual, expected, rtol=RTOL):
    """Relative agreement at every step; the scale of each variable's trajectory
    stands in for entries that cross zero."""
    for a, e in zip(actual, expected):
        scale = float(np.max(np.abs(e)))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def test_golden_file_is_small_and_complete():
    assert GOLDEN.stat().st_size < 2_000_000
    names = {spec.get("optimizer") for spec in META["cases"].values()}
    assert {"RAdam", "AdaBelief", "Yogi", "Lookahead", "Adan", "LARS", "NovoGrad"} <= names
    for name in CASES:
        assert ARRAYS[f"{name}__traj_0"].shape == (META["steps"], 4, 3)


@pytest.mark.parametrize("name", CASES)
def test_matches_optax_trajectory(name):
    optimizer = build(META["cases"][name])
    expected = [ARRAYS[f"{name}__traj_{i}"] for i in range(2)]
    actual = run(optimizer)
    assert_trajectory_close(actual, expected)
    # The trajectory really moved, so agreement is not trivial.
    init = ARRAYS["init_0"]
    assert np.max(np.abs(expected[0][-1] - init)) > 0.05


def test_golden_check_can_fail():
    """A small change of one hyperparameter is caught."""
    spec = json.loads(json.dumps(META["cases"]["adan"]))
    spec["kwargs"]["beta_3"] = 0.995
    expected = [ARRAYS[f"adan__traj_{i}"] for i in range(2)]
    with pytest.raises(AssertionError):
        assert_trajectory_close(run(build(spec)), expected)
