"""Update time of keras_trainkit's optimizers on JAX next to optax's, side by side.

For each optimizer Keras lacks (RAdam, AdaBelief, Yogi, Adan, LARS,
NovoGrad), with optax's equivalent and the same hyperparameters (the
defaults), on the same parameter shapes and gradients:

* ours: `jax.jit` of `optimizer.stateless_apply(optimizer_variables, grads,
  trainable_variables)`, which is what Keras' JAX trainer calls inside its
  jitted train step, with the variables as jax arrays and the state
  (optimizer variables and parameters) donated, as Keras' trainer donates it;
* optax: `jax.jit` of `tx.update(grads, opt_state, params)` followed by
  `optax.apply_updates`, with `params` and `opt_state` donated.

Before timing, both take eight updates from the same start with a varying
gradient sequence and must agree (relative 1e-5 of the parameters' scale),
so the pairs really compute the same rule (RAdam's rectified phase
included). Protocol: every repeat starts both sides from fresh state (new
buffers), warms them up, then times `--blocks` blocks of `--steps`
consecutive updates (10 for the MLP, 2 for the large set; dispatched back to
back, then one `block_until_ready`), ours and optax's alternating block by block and in
alternating order. A repeat's time is the median block time per update; the
ratio ours/optax is paired within a repeat and summarised by its median, min
and max over repeats. The goal is a median ratio <= 1.1.

A context row, `keras Adam` against `optax.adam`, shows what Keras' own
optimizer costs through the same path (not the same formula: Keras folds the
bias correction into epsilon), without a goal.

Usage::

    python benchmarks/optimizer_speed_jax.py              # full run, a few minutes on 2 cores
    python benchmarks/optimizer_speed_jax.py --smoke      # tiny shapes, 1 repeat, 2 blocks
    python benchmarks/optimizer_speed_jax.py --only RAdam,Adan --shapes mlp --repeats 9

Needs JAX and optax (`pip install "keras_trainkit[bench]"`); sets
`KERAS_BACKEND=jax` when unset and refuses another backend. Prints a
markdown table and writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LIMIT = 1.1
CHECK_RTOL = 1e-5
CHECK_STEPS = 8
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "optimizer_speed_jax.json"
)
# Layer sizes of the MLPs whose kernels and biases are the parameters.
SHAPE_SETS = {
    "mlp": [512, 1024, 512, 10],  # 1,055,242 parameters, as benchmarks/optimizer_speed.py
    "large": [2048, 2048, 2048, 10],  # 8,413,194 parameters
    "tiny": [16, 16, 10],  # --smoke
}
# Updates per timed block, unless --steps is given (a block of the large set
# takes about as long as one of the MLP's).
STEPS = {"mlp": 10, "large": 2, "tiny": 2}
CONTEXT = "keras Adam"


def configurations():
    """name -> (factory of ours, optax's name, factory of optax's, goal or None)."""
    import keras
    import optax

    from keras_trainkit import optimizers as kto

    return {
        "RAdam": (lambda: kto.RAdam(1e-3), "optax.radam", lambda: optax.radam(1e-3), LIMIT),
        "AdaBelief": (lambda: kto.AdaBelief(1e-3), "optax.adabelief",
                      lambda: optax.adabelief(1e-3), LIMIT),
        "Yogi": (lambda: kto.Yogi(1e-2), "optax.yogi", lambda: optax.yogi(1e-2), LIMIT),
        "Adan": (lambda: kto.Adan(1e-3), "optax.adan", lambda: optax.adan(1e-3), LIMIT),
        "LARS": (lambda: kto.LARS(1.0), "optax.lars", lambda: optax.lars(1.0), LIMIT),
        "NovoGrad": (lambda: kto.NovoGrad(1e-3), "optax.novograd",
                     lambda: optax.novograd(1e-3), LIMIT),
        CONTEXT: (lambda: keras.optimizers.Adam(1e-3), "optax.adam",
                  lambda: optax.adam(1e-3, eps=1e-7), None),
    }


def parameter_shapes(sizes):
    shapes = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        shapes += [(a, b), (b,)]
    return shapes


class _Side:
    """One side of a pair: a jitted update `step(params, state, grads) -> (params,
    state)` with `params` and `state` donated, and its current buffers."""

    def __init__(self, step, init):
        import jax

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.init = init

    def fresh(self):
        """New buffers for the parameters (from `init`) and the state."""
        import jax.numpy as jnp

        params = [jnp.asarray(x) for x in self.init]
        self.state = (params, self.initial_state(params))

    def run(self, grads, steps):
        """`steps` updates dispatched back to back, then waits for the last."""
        import jax

        params, state = self.state
        for _ in range(steps):
            params, state = self._step(params, state, grads)
        self.state = (params, state)
        jax.block_until_ready(self.state)

    def params(self):
        return self.state[0]


class Ours(_Side):
    """A keras_trainkit (or Keras) optimizer through Keras' stateless JAX path."""

    def __init__(self, optimizer, init):
        import keras

        self.optimizer = optimizer
        optimizer.build([keras.Variable(x) for x in init])

        def step(params, optimizer_variables, grads):
            return optimizer.stateless_apply(optimizer_variables, grads, params)

        super().__init__(step, init)

    def initial_state(self, params):
        import jax.numpy as jnp

        # Copies: donation must not free the buffers of the Keras variables.
        return [jnp.array(v.value, copy=True) for v in self.optimizer.variables]


class Optax(_Side):
    """An optax GradientTransformation, update + apply_updates jitted together."""

    def __init__(self, tx, init):
        import optax

        self.tx = tx

        def step(params, opt_state, grads):
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        super().__init__(step, init)

    def initial_state(self, params):
        return self.tx.init(params)


def make_data(sizes, seed=0):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = parameter_shapes(sizes)
    init = [(rng.standard_normal(s) / np.sqrt(s[0] if len(s) == 2 else 1.0)).astype("float32")
            for s in shapes]
    grads = [jnp.asarray(0.01 * rng.standard_normal(s).astype("float32")) for s in shapes]
    return init, grads


def max_relative_difference(ours, theirs, grads):
    """Both sides take CHECK_STEPS updates from the same start, with the
    gradients scaled by a varying factor per step (with a constant gradient,
    bias-corrected moments hide their decay rates); the largest difference
    relative to each parameter's scale."""
    import numpy as np

    factors = np.random.default_rng(1).uniform(-2.0, 2.0, CHECK_STEPS).astype("float32")
    ours.fresh()
    theirs.fresh()
    for factor in factors:
        scaled = [g * factor for g in grads]
        ours.run(scaled, 1)
        theirs.run(scaled, 1)
    worst = 0.0
    for a, b in zip(ours.params(), theirs.params()):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)))
    return worst


def measure(names, args, shape_set):
    configs = configurations()
    sizes = SHAPE_SETS[shape_set]
    steps = args.steps or STEPS[shape_set]
    init, grads = make_data(sizes)
    rows = []
    for name in names:
        make_ours, optax_name, make_optax, limit = configs[name]
        ours, theirs = Ours(make_ours(), init), Optax(make_optax(), init)
        check = None if limit is None else max_relative_difference(ours, theirs, grads)
        if check is not None and not check <= CHECK_RTOL:
            raise SystemExit(f"{name} and {optax_name} disagree: relative difference {check:.3g}")
        times = {"ours": [], "optax": []}
        for r in range(args.repeats):
            sides = [("ours", ours), ("optax", theirs)]
            if r % 2:
                sides.reverse()
            for _, side in sides:
                side.fresh()
                side.run(grads, args.warmup)
            blocks = {"ours": [], "optax": []}
            for b in range(args.blocks):
                for label, side in sides if b % 2 == 0 else sides[::-1]:
                    t0 = time.perf_counter()
                    side.run(grads, steps)
                    blocks[label].append((time.perf_counter() - t0) / steps)
            for label in times:
                times[label].append(statistics.median(blocks[label]))
        ratios = [a / b for a, b in zip(times["ours"], times["optax"])]
        median_ratio = statistics.median(ratios)
        rows.append({
            "optimizer": name,
            "optax": optax_name,
            "shapes": shape_set,
            "parameters": sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])),
            "steps_per_block": steps,
            "ours_ms": 1e3 * statistics.median(times["ours"]),
            "optax_ms": 1e3 * statistics.median(times["optax"]),
            "ratio_median": median_ratio,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratios": ratios,
            "max_relative_difference": check,
            "limit": limit,
            "within_limit": None if limit is None else median_ratio <= limit,
        })
        print(f"{shape_set}: {name} done", file=sys.stderr, flush=True)
        del ours, theirs
    return rows


def markdown(rows):
    lines = [
        "| optimizer | optax | parameters | ours ms | optax ms | ratio (median) | min | max | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["limit"] is None:
            goal = "context"
        else:
            goal = f"<= {r['limit']} ({'ok' if r['within_limit'] else '**over**'})"
        lines.append(
            f"| {r['optimizer']} | {r['optax']} | {r['parameters']:,} | {r['ours_ms']:.3f} "
            f"| {r['optax_ms']:.3f} | {r['ratio_median']:.3f} | {r['ratio_min']:.3f} "
            f"| {r['ratio_max']:.3f} | {goal} |"
        )
    return "\n".join(lines)


def machine():
    import jax
    import keras
    import optax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from optimizer_speed import cpu_name

    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, 1 repeat, 2 blocks of 2 updates: checks that the benchmark runs")
    p.add_argument("--shapes", default="mlp,large",
                   help=f"comma-separated parameter sets from {sorted(SHAPE_SETS)}")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--blocks", type=int, default=10,
                   help="timed blocks per side and repeat (alternating)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"updates per timed block; default per shape set {STEPS}")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", default=None, help="comma-separated optimizer names")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.repeats, args.blocks, args.warmup = "tiny", 1, 2, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError as e:
        raise SystemExit(
            f"{e}: this benchmark needs JAX and optax: pip install \"keras_trainkit[bench]\""
        ) from e
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(
            f"KERAS_BACKEND must be jax for this benchmark, got {keras.backend.backend()!r}"
        )
    names = list(configurations())
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"unknown optimizer(s) {unknown}; choose from {names}")
        names = wanted
    shape_sets = [s.strip() for s in args.shapes.split(",")]
    unknown = [s for s in shape_sets if s not in SHAPE_SETS]
    if unknown:
        raise SystemExit(f"unknown --shapes {unknown}; choose from {sorted(SHAPE_SETS)}")
    start = time.perf_counter()
    rows = []
    for shape_set in shape_sets:
        rows += measure(names, args, shape_set)
    payload = {
        "command": " ".join(["python benchmarks/optimizer_speed_jax.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "shapes": {s: {"sizes": SHAPE_SETS[s], "parameter_shapes": parameter_shapes(SHAPE_SETS[s])}
                   for s in shape_sets},
        "protocol": {"repeats": args.repeats, "blocks": args.blocks,
                     "steps_per_block": args.steps or {s: STEPS[s] for s in shape_sets},
                     "warmup": args.warmup, "order": "alternating", "donated": True,
                     "check_steps": CHECK_STEPS, "check_rtol": CHECK_RTOL},
        "seconds": time.perf_counter() - start,
        "results": rows,
    }
    table = markdown(rows)
    print(table)
    print(f"\n{args.repeats} repeats x {args.blocks} blocks per side; "
          f"updates per block {payload['protocol']['steps_per_block']}; {payload['machine']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    return payload


if __name__ == "__main__":
    main()
