"""The optimizers use `keras.ops` only, so they also run on the JAX backend.

A subprocess with KERAS_BACKEND=jax replays the optax golden cases and the
drop-in comparisons through `jax.jit(optimizer.stateless_apply)`, which is how
Keras' JAX trainer applies them inside `fit`. Skipped when JAX is not installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    import jax.numpy as jnp
    import keras
    from keras_trainkit import optimizers as kto

    assert keras.backend.backend() == "jax"
    data = np.load(sys.argv[1])
    meta = json.loads(str(data["meta"]))

    def build(spec):
        if not isinstance(spec, dict):
            return spec
        kwargs = {k: build(v) for k, v in spec.get("kwargs", {}).items()}
        if "optimizer" in spec:
            return getattr(kto, spec["optimizer"])(**kwargs)
        if "keras" in spec:
            return getattr(keras.optimizers, spec["keras"])(**kwargs)
        return getattr(keras.optimizers.schedules, spec["schedule"])(**kwargs)

    def trajectory(optimizer, init, grads):
        variables = [keras.Variable(x) for x in init]
        optimizer.build(variables)
        step = jax.jit(optimizer.stateless_apply)
        params = [v.value for v in variables]
        state = [v.value for v in optimizer.variables]
        out = []
        for g in zip(*grads):
            params, state = step(state, [jnp.asarray(x) for x in g], params)
            out.append([np.asarray(p) for p in params])
        return [np.stack(o) for o in zip(*out)]

    init = [data["init_0"], data["init_1"]]
    grads = [data["grads_0"], data["grads_1"]]
    golden = {}
    for name, spec in meta["cases"].items():
        traj = trajectory(build(spec), init, grads)
        golden[name] = max(
            float(np.max(np.abs(t - data[f"{name}__traj_{i}"])) / np.max(np.abs(data[f"{name}__traj_{i}"])))
            for i, t in enumerate(traj)
        )

    drop_ins = {}
    for name, kwargs in [
        ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
        ("Adagrad", {"learning_rate": 0.1}),
        ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
        ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ]:
        ours = trajectory(getattr(kto, name)(**kwargs), init, grads)
        theirs = trajectory(getattr(keras.optimizers, name)(**kwargs), init, grads)
        drop_ins[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs))
    print(json.dumps({"golden": golden, "drop_ins": drop_ins}))
    """
)


def test_trajectories_on_the_jax_backend():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT / "tests" / "golden" / "optax_trajectories.npz")],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors["golden"]) >= 16
    for name, error in errors["golden"].items():
        assert error < 1e-5, (name, error)
    for name, error in errors["drop_ins"].items():
        assert error < 1e-6, (name, error)
