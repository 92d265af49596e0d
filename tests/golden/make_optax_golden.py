"""Writes the optax reference trajectories that tests/test_optimizers_optax.py checks.

Run from the repository root (optax and jax are needed here only, not by the
library or its tests)::

    pip install jax optax
    python tests/golden/make_optax_golden.py

Every case feeds the same float32 gradient sequence (100 steps, a 4x3 kernel
and a zero-initialised bias whose gradients are 100 times smaller) to an optax
optimizer and records the parameters after each step. Each case also records
the keras_trainkit optimizer that must reproduce it, as a small JSON spec the
test turns into an optimizer:

* ``{"optimizer": "RAdam", "kwargs": {...}}`` is ``keras_trainkit.optimizers.RAdam(**kwargs)``;
* ``{"keras": "SGD", "kwargs": {...}}`` is ``keras.optimizers.SGD(**kwargs)``;
* ``{"schedule": "ExponentialDecay", "kwargs": {...}}`` is the Keras schedule.

Output: tests/golden/optax_trajectories.npz (compressed, about 100 kB).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 100
SEED = 20240605
OUT = pathlib.Path(__file__).with_name("optax_trajectories.npz")


def inputs():
    rng = np.random.default_rng(SEED)
    params = [
        rng.standard_normal((4, 3)).astype("float32"),
        np.zeros((3,), "float32"),
    ]
    grads = [
        rng.standard_normal((STEPS, 4, 3)).astype("float32"),
        (0.01 * rng.standard_normal((STEPS, 3))).astype("float32"),
    ]
    return params, grads


def ours(name, **kwargs):
    return {"optimizer": name, "kwargs": kwargs}


def keras_builtin(name, **kwargs):
    return {"keras": name, "kwargs": kwargs}


def schedule(name, **kwargs):
    return {"schedule": name, "kwargs": kwargs}


# name -> (keras_trainkit spec, optax optimizer, uses LookaheadParams)
CASES = {
    "radam": (ours("RAdam", learning_rate=0.01), optax.radam(0.01), False),
    "radam_nesterov_b2": (
        ours("RAdam", learning_rate=0.01, beta_1=0.8, beta_2=0.99, nesterov=True),
        optax.radam(0.01, b1=0.8, b2=0.99, nesterov=True),
        False,
    ),
    "radam_threshold_eps_root": (
        ours("RAdam", learning_rate=0.02, threshold=8.0, epsilon=1e-6, epsilon_root=1e-7),
        optax.radam(0.02, threshold=8.0, eps=1e-6, eps_root=1e-7),
        False,
    ),
    "adabelief": (ours("AdaBelief", learning_rate=0.01), optax.adabelief(0.01), False),
    "adabelief_nesterov": (
        ours("AdaBelief", learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-8,
             epsilon_root=1e-10, nesterov=True),
        optax.adabelief(0.01, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, nesterov=True),
        False,
    ),
    "yogi": (ours("Yogi", learning_rate=0.01), optax.yogi(0.01), False),
    "yogi_custom": (
        ours("Yogi", learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-4),
        optax.yogi(0.05, b1=0.8, b2=0.99, eps=1e-4),
        False,
    ),
    "adan": (ours("Adan", learning_rate=0.01), optax.adan(0.01), False),
    "adan_weight_decay_schedule": (
        ours(
            "Adan",
            learning_rate=schedule(
                "ExponentialDecay", initial_learning_rate=0.02, decay_steps=20,
                decay_rate=0.5,
            ),
            beta_1=0.9, beta_2=0.8, beta_3=0.95, epsilon=1e-6, epsilon_root=0.0,
            weight_decay=0.1,
        ),
        optax.adan(
            optax.exponential_decay(0.02, transition_steps=20, decay_rate=0.5),
            b1=0.9, b2=0.8, b3=0.95, eps=1e-6, eps_root=0.0, weight_decay=0.1,
        ),
        False,
    ),
    "lars": (ours("LARS", learning_rate=1.0), optax.lars(1.0), False),
    "lars_weight_decay_nesterov": (
        ours("LARS", learning_rate=2.0, weight_decay=0.01, trust_coefficient=0.01,
             epsilon=1e-6, momentum=0.8, nesterov=True),
        optax.lars(2.0, weight_decay=0.01, trust_coefficient=0.01, eps=1e-6,
                   momentum=0.8, nesterov=True),
        False,
    ),
    "lars_no_momentum": (
        ours("LARS", learning_rate=5.0, momentum=0.0),
        optax.lars(5.0, momentum=0.0),
        False,
    ),
    "novograd": (ours("NovoGrad", learning_rate=0.01), optax.novograd(0.01), False),
    "novograd_weight_decay": (
        ours("NovoGrad", learning_rate=0.01, beta_1=0.8, beta_2=0.5, epsilon=1e-4,
             epsilon_root=1e-6, weight_decay=0.05),
        optax.novograd(0.01, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-6, weight_decay=0.05),
        False,
    ),
    "lookahead_keras_sgd": (
        ours(
            "Lookahead",
            optimizer=keras_builtin("SGD", learning_rate=0.1, momentum=0.9),
            sync_period=5,
            slow_step_size=0.5,
        ),
        optax.lookahead(optax.sgd(0.1, momentum=0.9), sync_period=5, slow_step_size=0.5),
        True,
    ),
    "lookahead_adabelief": (
        ours(
            "Lookahead",
            optimizer=ours("AdaBelief", learning_rate=0.01),
            sync_period=3,
            slow_step_size=0.8,
        ),
        optax.lookahead(optax.adabelief(0.01), sync_period=3, slow_step_size=0.8),
        True,
    ),
}


def trajectory(optimizer, lookahead, params, grads):
    params = [jnp.asarray(p) for p in params]
    if lookahead:
        params = optax.LookaheadParams.init_synced(params)
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    out = [[] for _ in grads]
    for step in range(STEPS):
        g = [jnp.asarray(seq[step]) for seq in grads]
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
        fast = params.fast if lookahead else params
        for i, p in enumerate(fast):
            out[i].append(np.asarray(p))
    return [np.stack(o).astype("float32") for o in out]


def main():
    params, grads = inputs()
    arrays = {f"init_{i}": p for i, p in enumerate(params)}
    arrays.update({f"grads_{i}": g for i, g in enumerate(grads)})
    specs = {}
    for name, (spec, optimizer, lookahead) in CASES.items():
        traj = trajectory(optimizer, lookahead, params, grads)
        if not all(np.isfinite(t).all() for t in traj):
            raise RuntimeError(f"non-finite trajectory for {name}")
        arrays.update({f"{name}__traj_{i}": t for i, t in enumerate(traj)})
        specs[name] = spec
    meta = {
        "steps": STEPS,
        "seed": SEED,
        "optax": optax.__version__,
        "jax": jax.__version__,
        "cases": specs,
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(specs)} cases)")


if __name__ == "__main__":
    main()
