"""Recipe (b): optimizers compared, on the Rosenbrock function and on digits.

Full-batch gradient descent, SGD, momentum, Nesterov, Adagrad, RMSprop, Adam
(Keras' own) and keras_trainkit's AdaBelief and RAdam:

1. Rosenbrock, `f(x, y) = (1 - x)^2 + 100 (y - x^2)^2`, from (-1.5, 2) for
   `--steps` updates. Full-batch GD gets the exact gradient; every other
   optimizer gets the same noisy, minibatch-like gradient (the exact one plus
   the mean of 4 Gaussian samples of standard deviation 10, identical across
   optimizers). The 2-D problem is a one-weight Keras model trained by
   `fit()`, so the real optimizer classes run. Each optimizer's rate is the
   best of a log grid (`--tune` reruns that grid; RATES_2D holds its result).
2. The digits MLP for `--epochs` epochs at batch 32 (GD: one batch of all
   1347 samples, so one update per epoch), each optimizer at the valley
   suggestion of its own range test (`keras_trainkit.lr_find`).

Prints a table and saves DIR/recipe_optimizers.png (trajectories on the
contours, f along the way, digits training loss per epoch). `--smoke` runs 3 of
the optimizers for 20 updates and 1 epoch.

    python examples/recipes/optimizers_compared.py [--out DIR] [--smoke] [--tune]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_trainkit as kt  # noqa: E402
from keras_trainkit import optimizers as kto  # noqa: E402

START = (-1.5, 2.0)
NOISE_STD, NOISE_BATCH = 10.0, 4

OPTIMIZERS = {
    "GD (full batch)": lambda lr: keras.optimizers.SGD(lr),
    "SGD": lambda lr: keras.optimizers.SGD(lr),
    "momentum 0.9": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "Nesterov 0.9": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    "Adagrad": lambda lr: keras.optimizers.Adagrad(lr),
    "RMSprop": lambda lr: keras.optimizers.RMSprop(lr),
    "Adam": lambda lr: keras.optimizers.Adam(lr),
    "AdaBelief (ours)": lambda lr: kto.AdaBelief(lr),
    "RAdam (ours)": lambda lr: kto.RAdam(lr),
}
# The lowest settled f (mean over the last 60 of 600 updates) on the grid
# 10 ** arange(-4.5, 0.6, 0.5), from `--tune`.
RATES_2D = {
    "GD (full batch)": 1e-3, "SGD": 1e-3, "momentum 0.9": 1e-3, "Nesterov 0.9": 1e-3,
    "Adagrad": 3.16, "RMSprop": 0.0316, "Adam": 0.316, "AdaBelief (ours)": 0.316, "RAdam (ours)": 0.01,
}
GRID = 10.0 ** np.arange(-4.5, 0.6, 0.5)
SMOKE = ["GD (full batch)", "momentum 0.9", "AdaBelief (ours)"]  # `--smoke` runs these


def rosenbrock(w):
    return (1.0 - w[..., 0]) ** 2 + 100.0 * (w[..., 1] - w[..., 0] ** 2) ** 2


class Rosenbrock(keras.layers.Layer):
    """Output per sample: f(w) + noise . w, so the batch gradient is grad f + mean(noise)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(START), name="w")

    def call(self, noise):
        x, y = self.w[0], self.w[1]
        f = (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2
        return f + ops.sum(noise * self.w, axis=-1)


class _Trajectory(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.points = [np.array(START)]

    def on_train_batch_end(self, batch, logs=None):
        self.points.append(np.array(self.model.layers[-1].w.numpy()))


def descend(name, lr, steps, seed):
    """The optimizer's path on Rosenbrock: (steps + 1, 2) points."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), Rosenbrock()])
    model.compile(OPTIMIZERS[name](lr), loss=lambda y_true, y_pred: y_pred)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, NOISE_STD, (steps * NOISE_BATCH, 2)).astype("float32")
    if name.startswith("GD"):
        noise[:] = 0.0
    trajectory = _Trajectory()
    model.fit(noise, np.zeros(len(noise), "float32"), batch_size=NOISE_BATCH, epochs=1, shuffle=False,
              callbacks=[trajectory], verbose=0)
    return np.array(trajectory.points)


def settled(path):
    """Mean f over the last tenth of the updates (the noisy gradients make f jitter)."""
    f = rosenbrock(path[-max(1, (len(path) - 1) // 10):])
    return float(np.mean(f)) if np.all(np.isfinite(f)) else np.inf


def tune(steps, seed):
    best = {}
    for name in OPTIMIZERS:
        finals = {}
        for lr in GRID:
            finals[float(lr)] = settled(descend(name, float(lr), steps, seed))
        best[name] = min(finals, key=finals.get)
        print(f"{name}: best rate {best[name]:.3g} (settled f {finals[best[name]]:.3g})")
    return best


def main(argv=None):
    args = C.parse(__doc__, argv, steps=(int, 600, "Rosenbrock updates"),
                   epochs=(int, 8, "digits epochs"), tune=(bool, False, "rerun the 2-D rate grid"))
    steps, epochs = (20, 1) if args.smoke else (args.steps, args.epochs)
    rates_2d = tune(steps, args.seed) if args.tune else RATES_2D
    data = C.digits(args.smoke)
    (x, y), _ = data
    names = SMOKE if args.smoke else list(OPTIMIZERS)
    rows, paths, curves = [], {}, {}
    for name in names:
        make = OPTIMIZERS[name]
        path = descend(name, rates_2d[name], steps, args.seed)
        paths[name] = path
        full_batch = name.startswith("GD")
        batch = len(x) if full_batch else 32
        model = C.mlp(make(0.01), seed=args.seed)
        found = kt.lr_find(model, x, y, batch_size=batch, num_steps=12 if args.smoke else 100, seed=args.seed)
        lr = found.suggestion(**({"skip_start": 0, "skip_end": 0} if args.smoke else {}))
        model.optimizer.learning_rate = lr  # lr_find left the model untouched
        history = C.fit(model, data, epochs, batch_size=batch)
        curves[name] = history["loss"]
        rows.append({
            "optimizer": name, "2-D rate": rates_2d[name], "2-D settled f": settled(path),
            "2-D distance to (1, 1)": float(np.hypot(*(path[-1] - 1.0))),
            "digits rate (valley)": lr, "digits updates": epochs * -(-len(x) // batch),
            "digits train loss": history["loss"][-1],
            "digits val accuracy": history["val_accuracy"][-1],
        })
    C.table(rows, list(rows[0]), f"Rosenbrock ({steps} updates) and digits MLP ({epochs} epochs):")

    fig, (contour, values, losses) = C.figure(3)
    gx, gy = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))
    contour.contour(gx, gy, rosenbrock(np.stack([gx, gy], -1)), levels=np.logspace(-1, 3.5, 15),
                    colors="0.8", linewidths=0.7)
    contour.plot(1, 1, "k*", ms=10)
    for i, (name, path) in enumerate(paths.items()):
        color, style = f"C{i}", "--" if "ours" in name else "-"
        contour.plot(path[:, 0], path[:, 1], style, color=color, lw=1, label=name)
        f = rosenbrock(path)
        window = min(20, len(f))
        smooth = np.convolve(f, np.ones(window) / window, mode="valid")  # the noise makes f jitter
        values.plot(np.arange(window - 1, len(f)), smooth, style, color=color, lw=1, label=name)
        losses.plot(np.arange(1, epochs + 1), curves[name], style, marker="o", ms=3, color=color, label=name)
    contour.set_xlim(-2, 2)
    contour.set_ylim(-1, 3)
    contour.set_title("Rosenbrock: trajectories")
    values.set_yscale("log")
    values.set_xlabel("update")
    values.set_ylabel("f (mean of the last 20 updates)")
    values.set_title("Rosenbrock: f")
    losses.set_yscale("log")
    losses.set_xlabel("epoch")
    losses.set_ylabel("training loss")
    losses.set_title("digits MLP (rate from lr_find)")
    losses.legend(fontsize=7)
    for ax in (values, losses):
        ax.grid(alpha=0.3)
    C.save(fig, args.out, "recipe_optimizers.png")
    return {"rows": rows}


if __name__ == "__main__":
    main()
