"""Step-time overhead of keras_trainkit callbacks versus a bare fit(), side by side.

Model: an MLP (64-256-256-10, Adam) on scikit-learn's digits, or with
`--model cnn` a small CNN on the 8x8 digit images; batch 32; the training set
is tiled `--tile` times so an epoch is long enough to time (4 x 1347 samples,
169 steps). For each repeat, each configuration trains a fresh model for
`--epochs` epochs; the first epoch (tracing) is discarded and the fastest of
the others is the run's time (interference from the shared machine only ever
adds time, so the minimum is the steadiest estimate). Configurations run in alternating order and
ratios to the bare fit are taken within each repeat (paired); the table shows
their median, min and max over the repeats, and the median ratio of the
process's CPU time (all threads; the fastest epoch's), which time stolen by
other jobs on a shared machine does not inflate.

    python benchmarks/callback_overhead.py                    # MLP, all configurations
    python benchmarks/callback_overhead.py --model cnn
    python benchmarks/callback_overhead.py --configs lr,gradnorm100
    python benchmarks/callback_overhead.py --smoke            # seconds, for the tests
    KERAS_BACKEND=jax python benchmarks/callback_overhead.py --configs stack   # any backend
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EpochTimer, machine, markdown_table, paired_ratios, write_json  # noqa: E402

CONFIGS = {
    "bare": "bare fit",
    "lr": "WarmUp + CosineDecay (keras_trainkit)",
    "compiled": "same schedule compiled into the optimizer (no callback)",
    "assign": "Python assign in on_train_batch_begin",
    "gradnorm1": "GradientNormLogger(update_freq=1) + log_dir",
    "gradnorm100": "GradientNormLogger(update_freq=100) + log_dir",
    "kerastb": "keras TensorBoard(update_freq='batch')",
    "kerastbepoch": "keras TensorBoard() (per epoch)",
    "tb": "keras_trainkit TensorBoard() (per epoch)",
    "stack": "keras_trainkit stack (WarmUp, CosineDecay, EarlyStopping, GradientNormLogger(100), TensorBoard)",
    "kerasstack": "Keras stack (LearningRateScheduler, EarlyStopping, TensorBoard(update_freq='batch'))",
}


def make_callbacks(name, log_dir):
    import keras

    from keras_trainkit import callbacks as C

    class PythonAssign(keras.callbacks.Callback):
        """The usual hand-written per-batch schedule: a Python assign each batch."""

        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            opt.learning_rate.assign(0.001 * min(1.0, (int(opt.iterations) + 1) / 100))

    return {
        "bare": lambda: [],
        "lr": lambda: [C.WarmUp(100), C.CosineDecay(2000)],
        "compiled": lambda: [],
        "assign": lambda: [PythonAssign()],
        "gradnorm1": lambda: [C.GradientNormLogger(update_freq=1, log_dir=log_dir)],
        "gradnorm100": lambda: [C.GradientNormLogger(update_freq=100, log_dir=log_dir)],
        "kerastb": lambda: [keras.callbacks.TensorBoard(log_dir, update_freq="batch")],
        "kerastbepoch": lambda: [keras.callbacks.TensorBoard(log_dir)],
        "tb": lambda: [C.TensorBoard(log_dir)],
        "stack": lambda: [C.WarmUp(100), C.CosineDecay(2000),
                          C.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True),
                          C.GradientNormLogger(update_freq=100), C.TensorBoard(log_dir)],
        "kerasstack": lambda: [keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.001 * 0.9 ** epoch),
                               keras.callbacks.EarlyStopping(monitor="loss", patience=50, restore_best_weights=True),
                               keras.callbacks.TensorBoard(log_dir, update_freq="batch")],
    }[name]()


def config_learning_rate(name):
    """The optimizer's learning rate for configuration `name`: the stack's
    schedule compiled into it for "compiled", else 0.001."""
    if name != "compiled":
        return 0.001
    from keras_trainkit import schedules as S

    return S.WarmUp(S.CosineDecay(0.001, 2000), 100)


def config_names(configs: str) -> list[str]:
    """`--configs` as a list of known configuration names."""
    names = [n.strip() for n in configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise ValueError(f"Argument `--configs` has unknown names {unknown}; choose from {sorted(CONFIGS)}.")
    return names


def load_data(model: str, smoke: bool, tile: int):
    """Digits (8x8 images for the CNN), 128 samples when smoke, else tiled `tile` times."""
    import numpy as np

    from keras_trainkit.data import load_digits

    (x, y), _ = load_digits(images=model == "cnn")
    if smoke:
        return x[:128], y[:128]
    return np.concatenate([x] * tile), np.concatenate([y] * tile)


def build_model(kind, learning_rate=0.001):
    import keras

    if kind == "mlp":
        layers = [keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                  keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    else:
        layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                  keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                  keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                  keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tile", type=int, default=4, help="repeat the training set this many times")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 2 epochs, tiny data")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/callback_overhead_<model>.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs = 1, 2
    names = config_names(args.configs)
    if "bare" not in names:
        names.insert(0, "bare")
    import keras

    backend = keras.backend.backend()
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"callback_overhead_{args.model}{suffix}.json")

    x, y = load_data(args.model, args.smoke, args.tile)

    def run(name):
        def once():
            keras.utils.set_random_seed(0)
            model = build_model(args.model, config_learning_rate(name))
            timer = EpochTimer()
            with tempfile.TemporaryDirectory() as log_dir:
                model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                          callbacks=[*make_callbacks(name, log_dir), timer])
            best = min(range(1, len(timer.times)), key=timer.times.__getitem__)
            return {"wall": timer.times[best], "cpu": min(timer.cpu_times[1:])}
        return once

    results = paired_ratios({CONFIGS[n]: run(n) for n in names}, CONFIGS["bare"], args.repeats)
    table = markdown_table(results, CONFIGS["bare"])
    print(table)
    write_json(out, {"benchmark": "callback_overhead", "model": args.model, "backend": backend, "machine": machine(),
                     "repeats": args.repeats, "epochs": args.epochs, "batch_size": args.batch_size,
                     "command": "python benchmarks/callback_overhead.py " + " ".join(argv or sys.argv[1:]),
                     "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
