"""Repeated short fits: what a `fit()` call costs with the callbacks, after the first.

`callback_overhead.py` times the epochs of one `fit()`, leaving out the
first epoch (tracing and compiling the step). A user who calls `fit()` many
times on one model (an epoch at a time, a fine-tuning loop) also pays, at
every call, whatever the callbacks do when a fit starts and ends. Keras
reuses its compiled step across fits; keras_trainkit's callbacks that change
the step (the learning-rate callbacks, GradientNormLogger) build and compile
it anew in each fit, so that it holds that fit's schedule and state.

This script fits one model per configuration for `--fits` consecutive
one-epoch fits (the digits MLP of `callback_overhead.py`, not tiled), the
configurations taking turns fit by fit, and reports per configuration the
median ratio of its fit time to the bare model's fit of the same round,
leaving out each model's first fit.

    python benchmarks/refit_cost.py
    KERAS_BACKEND=jax python benchmarks/refit_cost.py --configs lr,gradnorm100,stack --fits 9
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="lr,gradnorm100,tb,stack,kerasstack")
    parser.add_argument("--fits", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import keras

    backend = keras.backend.backend()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"refit_cost{'' if backend == 'tensorflow' else '_' + backend}.json")
    names = config_names(args.configs)
    if "bare" not in names:
        names.insert(0, "bare")
    x, y = load_data("mlp", False, 1)
    with tempfile.TemporaryDirectory() as log_dir:
        runs = {}
        for name in names:
            keras.utils.set_random_seed(0)
            runs[name] = (build_model("mlp", config_learning_rate(name)), make_callbacks(name, log_dir))
        times: dict = {name: [] for name in names}
        for i in range(args.fits):
            for name in names if i % 2 == 0 else names[::-1]:
                model, callbacks = runs[name]
                start = time.perf_counter()
                model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=callbacks)
                times[name].append(time.perf_counter() - start)
    results = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t[1:], times["bare"][1:])]  # after each model's first fit
        results[CONFIGS[name]] = {"median_ratio": statistics.median(ratios), "ratios": ratios, "seconds": t}
    table = markdown_table(results, CONFIGS["bare"])
    print(table)
    write_json(out, {"benchmark": "refit_cost", "backend": backend, "machine": machine(), "fits": args.fits,
                     "command": "python benchmarks/refit_cost.py " + " ".join(
                         argv if argv is not None else sys.argv[1:]),
                     "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
