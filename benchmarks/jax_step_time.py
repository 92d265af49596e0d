"""JAX: the compiled train step alone, with and without keras_trainkit's callbacks.

`callback_overhead.py` times whole epochs, which on JAX include the host's
work between steps (data slicing, Keras' callback dispatch) and, on a shared
2-core machine, a lot of noise for a 0.4 ms step. This script isolates what
the callbacks add to the *compiled* step: in a 1-epoch fit of the same MLP
(Adam, batch 32) it jits `model.train_step` as the fit runs it (with the
callbacks' step wrappers in place), compiles it, and after every
configuration's fit times these functions alone on one batch, taking turns
block by block (201 blocks of 50 calls, alternating order). Ratios are paired
block by block and summarised by their median: a slow spell of the shared
machine hits every configuration alike.

    KERAS_BACKEND=jax python benchmarks/jax_step_time.py
    KERAS_BACKEND=jax python benchmarks/jax_step_time.py --configs lr,gradnorm100,stack --blocks 401
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


def compiled_step(name: str, x, y):
    """`(step, state, batch)`: the train step of a fit with config `name`, jitted
    as the fit runs it (the callbacks' step wrappers in place) and compiled."""
    import jax
    import keras

    from keras_trainkit.callbacks._session import current_session

    batch = (jax.numpy.asarray(x[:32]), jax.numpy.asarray(y[:32]))
    found = []

    class Capture(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = self.model
            session = current_session(model)
            if session is not None:
                session._apply_per_call()  # the step wrappers, as while the fit's step runs
                session.in_train_step = True
            try:
                state = ([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables],
                         [v.value for v in model.optimizer.variables],
                         [v.value for v in model.metrics_variables])
                step = jax.jit(model.train_step)
                jax.block_until_ready(step(state, batch))  # traced and compiled here
            finally:
                if session is not None:
                    session.in_train_step = False
                    session._remove_per_call()
            found.append((step, state, batch))

    keras.utils.set_random_seed(0)
    model = build_model("mlp", config_learning_rate(name))
    with tempfile.TemporaryDirectory() as log_dir:
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
                  callbacks=[*make_callbacks(name, log_dir), Capture()])
    return found[0]


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
    spell of the machine hits them alike."""
    import jax

    times: dict = {name: [] for name in steps}
    names = list(steps)
    for b in range(blocks):
        for name in names if b % 2 == 0 else names[::-1]:
            step, state, batch = steps[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = step(state, batch)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / calls)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="lr,compiled,gradnorm1,gradnorm100,stack")
    parser.add_argument("--blocks", type=int, default=201)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "jax_step_time.json"))
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    names = config_names(args.configs)
    if "bare" not in names:
        names.insert(0, "bare")
    x, y = load_data("mlp", False, 1)
    steps = {CONFIGS[n]: compiled_step(n, x, y) for n in names}
    times = interleaved(steps, args.blocks, args.calls)
    baseline = times[CONFIGS["bare"]]
    results = {}
    for label, t in times.items():
        ratios = [a / b for a, b in zip(t, baseline)]  # paired block by block
        results[label] = {"median_seconds": statistics.median(t), "median_ratio": statistics.median(ratios),
                          "ratios": ratios, "compiled": arrays_written(*steps[label])}
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
