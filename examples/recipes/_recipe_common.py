"""Shared helpers of the recipe gallery: arguments, the digits MLP, tables, figures."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit.data import load_digits  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def parse(doc: str, argv, **extra) -> argparse.Namespace:
    """`--smoke` (a reduced run for the tests), `--out DIR` (where the PNG goes), `--seed`."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a reduced, seconds-long run")
    parser.add_argument("--out", default=".", help="directory for the figure (default: .)")
    parser.add_argument("--seed", type=int, default=0)
    for name, (kind, default, text) in extra.items():
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return args


def digits(smoke: bool, train: int | None = None):
    """scikit-learn's digits (1347 train / 450 validation); fewer samples in smoke mode."""
    (x, y), (x_val, y_val) = load_digits()
    if train is not None:
        x, y = x[:train], y[:train]
    if smoke:
        x, y, x_val, y_val = x[:256], y[:256], x_val[:128], y_val[:128]
    return (x, y), (x_val, y_val)


def mlp(optimizer, units: int = 64, seed: int = 0, regularizer=None, metrics=("accuracy",)):
    """The gallery's model: 64 -> `units` ReLU -> 10 logits, seeded."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer),
        keras.layers.Dense(10, kernel_regularizer=regularizer),
    ])
    model.compile(optimizer, LOSS, metrics=list(metrics))
    return model


def fit(model, data, epochs: int, batch_size: int = 32, callbacks=None) -> dict:
    """Trains with validation after each epoch and returns the history dict."""
    (x, y), (x_val, y_val) = data
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val),
                        callbacks=callbacks, verbose=0)
    return history.history


def table(rows: list[dict], columns: list[str], title: str) -> str:
    """Prints `rows` as a Markdown table (floats with 4 significant digits) and returns it."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)

    lines = [f"| {' | '.join(columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    lines += [f"| {' | '.join(cell(row[c]) for c in columns)} |" for row in rows]
    text = "\n".join(lines)
    print(f"\n{title}\n\n{text}\n")
    return text


def figure(ncols: int, width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return fig, np.atleast_1d(axes)


def save(fig, out: str, name: str) -> str:
    """Saves a small PNG (dpi 80) and closes the figure."""
    import matplotlib.pyplot as plt

    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path
