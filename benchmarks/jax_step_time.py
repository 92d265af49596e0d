"""JAX: the compiled train step alone, with and without keras_trainkit's callbacks.

`callback_overhead.py` times whole epochs, which on JAX include the host's
work between steps (data slicing, Keras' callback dispatch) and, on a shared
2-core machine, a lot of noise for a 0.4 ms step. This script isolates what
the callbacks add to the *compiled* step: in a 1-epoch fit of the same MLP
(Adam, batch 32) it jits `model.train_step` as the fit runs it (with the
callbacks' step wrappers in place; the state donated, as Keras' JAX trainer
does), compiles it, and after every configuration's fit times these functions
alone, each feeding its new state to its next call, taking turns block by
block (201 blocks of 50 calls, alternating order). Ratios are paired block by
block and summarised by their median: a slow spell of the shared machine hits
every configuration alike.

The configuration `floor` is no callback: the bare step that also computes
the global gradient norm of every update (`sqrt(sum_i ||g_i||^2)`, the
gradients behind the same optimization barrier as GradientNormLogger's) and
returns it in its logs, and nothing else. It is what any per-update
gradient-norm measurement costs this step, the least GradientNormLogger can.

    KERAS_BACKEND=jax python benchmarks/jax_step_time.py
    KERAS_BACKEND=jax python benchmarks/jax_step_time.py --configs lr,gradnorm100,stack --blocks 401
    KERAS_BACKEND=jax python benchmarks/jax_step_time.py --configs floor,gradnorm100,stack --blocks 401
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, write_json  # noqa: E402
from callback_overhead import (  # noqa: E402
    CONFIGS,
    build_model,
    config_learning_rate,
    config_names,
    load_data,
    make_callbacks,
)

FLOOR = "floor: the global gradient norm alone, returned in the step's logs (no callback)"


def _donated(jitted_step, state, batch):
    """`[step, state, batch]` with `step` jitted with the state donated (as
    Keras' JAX trainer jits it) and `state` a copy of `state` (the model's
    variables' arrays must outlive the donation)."""
    import jax
    import jax.numpy as jnp

    state = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), state)
    step = jax.jit(jitted_step, donate_argnums=0)
    return [step, state, batch]


def _state(model):
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])


def compiled_step(name: str, x, y):
    """`[step, state, batch]`: the train step of a fit with config `name`,
    jitted as the fit runs it (the callbacks' step wrappers in place; the
    state donated), the step's state (a copy) and one batch."""
    import jax
    import keras

    from keras_trainkit.callbacks._session import current_session

    batch = (jax.numpy.asarray(x[:32]), jax.numpy.asarray(y[:32]))
    if name == "floor":
        return floor_step(x, y, batch)
    found = []

    class Capture(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = self.model
            session = current_session(model)
            if session is not None:
                session._apply_per_call()  # the step wrappers, as while the fit's step runs
                session.in_train_step = True
            try:
                entry = _donated(model.train_step, _state(model), batch)
                entry[0].lower(entry[1], batch)  # traced here, with the wrappers in place
                found.append(entry)
            finally:
                if session is not None:
                    session.in_train_step = False
                    session._remove_per_call()

    keras.utils.set_random_seed(0)
    model = build_model("mlp", config_learning_rate(name))
    with tempfile.TemporaryDirectory() as log_dir:
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
                  callbacks=[*make_callbacks(name, log_dir), Capture()])
    return found[0]


def floor_step(x, y, batch):
    """The bare step that also returns the global gradient norm in its logs
    (see the module's doc): the optimizer's `stateless_apply` measures the
    gradients it receives, and the step adds the norm to its logs."""
    import jax
    import jax.numpy as jnp
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("mlp", 0.001)
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    optimizer, measured = model.optimizer, {}
    stateless_apply, train_step = optimizer.stateless_apply, model.train_step

    def measuring_apply(optimizer_variables, grads, trainable_variables):
        apart = jax.lax.optimization_barrier(list(grads))
        measured["norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in apart))
        return stateless_apply(optimizer_variables, grads, trainable_variables)

    def step(state, data):
        object.__setattr__(optimizer, "stateless_apply", measuring_apply)
        try:
            logs, state = train_step(state, data)
        finally:
            object.__delattr__(optimizer, "stateless_apply")
        return {**logs, "grad_norm": measured.pop("norm")}, state

    entry = _donated(step, _state(model), batch)
    entry[0].lower(entry[1], batch)
    return entry


LARGE = 16_384  # elements: the MLP's two large kernels' gradients (64x256, 256x256)


def arrays_written(step, state, batch) -> dict:
    """What the compiled step writes to memory, from its optimized HLO: the
    top-level operations (each one a pass of XLA's CPU runtime) and their
    outputs. `large` counts outputs of at least `LARGE` elements: a gradient
    squared into memory instead of inside a fusion shows up there."""
    import re

    text = step.lower(state, batch).compile().as_text()
    entry = text[text.index("\nENTRY"):]
    operations = large = written = 0
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%\S+ = (.*?) (\w[\w-]*)\(", line)
        if not match or match.group(2) in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
            continue
        operations += 1
        for dtype, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", match.group(1)):
            elements = 1
            for d in filter(None, dims.split(",")):
                elements *= int(d)
            written += elements * (int(re.sub(r"\D", "", dtype) or 8) // 8)
            large += elements >= LARGE
    return {"operations": operations, "large_outputs": large, "bytes_written": written}


def interleaved(steps: dict, blocks: int, calls: int) -> dict:
    """Per configuration, the seconds per call of each block; the
    configurations take turns block by block (alternating order), so a slow
    spell of the machine hits them alike. Each call is given the state its
    previous call returned (the state is donated, as in `fit()`)."""
    import jax

    times: dict = {name: [] for name in steps}
    names = list(steps)
    for b in range(blocks):
        for name in names if b % 2 == 0 else names[::-1]:
            entry = steps[name]
            step, state, batch = entry
            start = time.perf_counter()
            for _ in range(calls):
                _, state = step(state, batch)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / calls)
            entry[1] = state
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="floor,lr,compiled,gradnorm1,gradnorm100,stack",
                        help="comma-separated subset of floor," + ",".join(CONFIGS))
    parser.add_argument("--blocks", type=int, default=201)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "jax_step_time.json"))
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    floor = "floor" in [n.strip() for n in args.configs.split(",")]
    names = config_names(",".join(n for n in args.configs.split(",") if n.strip() != "floor"))
    if "bare" not in names:
        names.insert(0, "bare")
    if floor:
        names.insert(1, "floor")
    labels = {**CONFIGS, "floor": FLOOR}
    x, y = load_data("mlp", False, 1)
    steps = {labels[n]: compiled_step(n, x, y) for n in names}
    compiled = {label: arrays_written(*entry) for label, entry in steps.items()}  # before any donation
    times = interleaved(steps, args.blocks, args.calls)
    baseline = times[CONFIGS["bare"]]
    results = {}
    for label, t in times.items():
        ratios = [a / b for a, b in zip(t, baseline)]  # paired block by block
        results[label] = {"median_seconds": statistics.median(t), "median_ratio": statistics.median(ratios),
                          "ratios": ratios, "compiled": compiled[label]}
    table = markdown_table(results, CONFIGS["bare"])
    print(table)
    print("\n| configuration | top-level operations | outputs of >= 16,384 elements | bytes written |\n|---|---|---|---|")
    for label, r in results.items():
        c = r["compiled"]
        print(f"| {label} | {c['operations']} | {c['large_outputs']} | {c['bytes_written']:,} |")
    write_json(args.out, {"benchmark": "jax_step_time", "backend": "jax", "machine": machine(),
                          "blocks": args.blocks, "calls": args.calls,
                          "command": "KERAS_BACKEND=jax python benchmarks/jax_step_time.py " + " ".join(
                              argv if argv is not None else sys.argv[1:]),
                          "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
