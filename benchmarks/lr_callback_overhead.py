"""Step-time overhead of keras_trainkit's LR callbacks versus a bare fit().

MLP (64-256-256-10) on scikit-learn's digits at batch 32. For each repeat, each
configuration trains a fresh model for `--epochs` epochs; the first epoch
(tracing) is discarded and the rest summed. Configurations run in alternating
order and ratios to the bare fit are taken within each repeat; the table shows
their median.

    python benchmarks/lr_callback_overhead.py            # full run
    python benchmarks/lr_callback_overhead.py --smoke    # seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EpochTimer, machine, markdown_table, paired_ratios, write_json  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 2 epochs, tiny data")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "lr_callback_overhead.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs = 1, 2

    import keras

    from keras_trainkit import callbacks as C
    from keras_trainkit.data import load_digits

    (x, y), _ = load_digits()
    if args.smoke:
        x, y = x[:128], y[:128]

    class PythonAssign(keras.callbacks.Callback):
        """The usual hand-written per-batch schedule: a Python assign each batch."""

        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            step = int(opt.iterations)
            opt.learning_rate.assign(0.001 * min(1.0, (step + 1) / 100))

    def run(make_callbacks):
        def once():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                keras.Input((64,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(10),
            ])
            model.compile(keras.optimizers.Adam(0.001),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            timer = EpochTimer()
            model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                      callbacks=[*make_callbacks(), timer])
            return sum(timer.times[1:])
        return once

    configs = {
        "bare fit": run(lambda: []),
        "WarmUp + CosineDecay (keras_trainkit)": run(lambda: [C.WarmUp(100), C.CosineDecay(2000)]),
        "Python assign in on_train_batch_begin": run(lambda: [PythonAssign()]),
    }
    results = paired_ratios(configs, "bare fit", args.repeats)
    table = markdown_table(results, "bare fit")
    print(table)
    write_json(args.out, {"benchmark": "lr_callback_overhead", "machine": machine(),
                          "repeats": args.repeats, "epochs": args.epochs,
                          "batch_size": args.batch_size, "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
