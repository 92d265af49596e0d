"""torch: the train step alone, as `fit()` runs it, with and without keras_trainkit's callbacks.

`callback_overhead.py` times whole epochs, which include the host's work
between steps (data slicing, Keras' callback dispatch, epoch ends) and, on a
shared 2-core machine, noise of +-10% per fit. On torch what the callbacks
add inside a step is eager work, so it can be timed inside the fit itself:
this script times every call of the model's `train_step` (forward, backward
and the optimizer's update, with the callbacks' wrappers of the update) in
fits of the same MLP (Adam, batch 32, digits tiled 4x: 169 steps an epoch),
drops the first epoch, and takes the median step of each fit. The
configurations take turns fit by fit (alternating order); each repeat's
ratios to the bare fit are paired, and summarised by their median.

    KERAS_BACKEND=torch python benchmarks/torch_step_time.py
    KERAS_BACKEND=torch python benchmarks/torch_step_time.py --configs gradnorm100,stack --repeats 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, paired_ratios, write_json  # noqa: E402
from callback_overhead import (  # noqa: E402,I001
    CONFIGS,
    build_model,
    config_learning_rate,
    config_names,
    load_data,
    make_callbacks,
)


def timed_fit(name: str, x, y, epochs: int) -> float:
    """The median seconds of the train steps of a fit with config `name`,
    after its first epoch."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("mlp", config_learning_rate(name))
    step, durations = model.train_step, []

    def train_step(data):
        start = time.perf_counter()
        try:
            return step(data)
        finally:
            durations.append(time.perf_counter() - start)

    # Keras' torch trainer calls `self.train_step(data)` at every step.
    object.__setattr__(model, "train_step", train_step)
    with tempfile.TemporaryDirectory() as log_dir:
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=make_callbacks(name, log_dir))
    per_epoch = len(durations) // epochs
    return statistics.median(durations[per_epoch:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="lr,gradnorm100,stack",
                        help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tile", type=int, default=4, help="repeat the training set this many times")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "torch_step_time.json"))
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch.")
    names = config_names(args.configs)
    if "bare" not in names:
        names.insert(0, "bare")
    x, y = load_data("mlp", False, args.tile)
    results = paired_ratios({CONFIGS[n]: (lambda n=n: timed_fit(n, x, y, args.epochs)) for n in names},
                            CONFIGS["bare"], args.repeats)
    table = markdown_table(results, CONFIGS["bare"])
    print(table)
    print("\n| configuration | median step (us) | added to the bare step (us) |\n|---|---|---|")
    bare = results[CONFIGS["bare"]]["median_seconds"]
    for label, r in results.items():
        print(f"| {label} | {r['median_seconds'] * 1e6:.0f} | {(r['median_seconds'] - bare) * 1e6:+.0f} |")
    write_json(args.out, {"benchmark": "torch_step_time", "backend": "torch", "machine": machine(),
                          "repeats": args.repeats, "epochs": args.epochs,
                          "command": "KERAS_BACKEND=torch python benchmarks/torch_step_time.py " + " ".join(
                              argv if argv is not None else sys.argv[1:]),
                          "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
