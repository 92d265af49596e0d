"""Recipe (e): learning-rate schedules side by side.

The digits MLP, SGD with momentum 0.9 and batch 32, trained for `--epochs`
epochs (T updates) under each schedule of `keras_trainkit.schedules`, applied
per update inside the train step by `keras_trainkit.callbacks.LearningRateSchedule`
(one-cycle by `keras_trainkit.callbacks.OneCycle`, which also cycles the momentum).
Every schedule starts from (or, for one-cycle, peaks at) the same rate 0.1:

- constant (the baseline);
- step: x0.1 at 50% and 75% of T;
- exponential: to 1% of the start at T;
- polynomial (linear): to 1e-4 at T;
- inverse-time: `lr0 / (1 + 9 t / T)` (a tenth at T);
- cosine: to 0 at T;
- one-cycle: PyTorch's `OneCycleLR` (warm-up over 30% of T from 0.1/25,
  cosine down to 0.1/25/1e4), with the momentum cycling 0.95 -> 0.85 -> 0.95.

Prints a table (rate at the last update, final training loss, validation
accuracy) and saves DIR/recipe_schedules.png (the rate curves, the validation
loss per epoch) and DIR/one_cycle.png (one-cycle's rate and momentum).

    python examples/recipes/schedules_compared.py [--out DIR] [--smoke]
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import callbacks, schedules  # noqa: E402
from keras_trainkit.plotting import schedule_values  # noqa: E402

PEAK = 0.1


def make_schedules(total: int) -> dict:
    return {
        "constant": schedules.Constant(PEAK),
        "step": schedules.StepDecay(PEAK, milestones=[total // 2, 3 * total // 4], gamma=0.1),
        "exponential": schedules.ExponentialDecay(PEAK, decay_steps=total, decay_rate=0.01),
        "polynomial": schedules.PolynomialDecay(PEAK, decay_steps=total, end_learning_rate=1e-4),
        "inverse-time": schedules.InverseTimeDecay(PEAK, decay_steps=total, decay_rate=9.0),
        "cosine": schedules.CosineDecay(PEAK, decay_steps=total),
        "one-cycle": schedules.OneCycle(PEAK, total_steps=total),
    }


def plot_one_cycle(out: str, total: int = 1000) -> str:
    """One-cycle's rate and momentum (two- and three-phase), as in PyTorch."""
    fig, (rate_ax, momentum_ax) = C.figure(2, width=4.5, height=3.0)
    steps = np.arange(total)
    for three_phase, style in ((False, "-"), (True, "--")):
        rate = schedules.OneCycle(PEAK, total_steps=total, three_phase=three_phase)
        label = "three_phase=True" if three_phase else "two phases (default)"
        rate_ax.plot(steps, rate(steps), style, label=label)
        momentum_ax.plot(steps, rate.momentum_schedule()(steps), style, label=label)
    rate_ax.set_title(f"OneCycle({PEAK}, total_steps={total})")
    rate_ax.set_ylabel("learning rate")
    momentum_ax.set_title("momentum_schedule()")
    momentum_ax.set_ylabel("SGD momentum / Adam beta_1")
    for ax in (rate_ax, momentum_ax):
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return C.save(fig, out, "one_cycle.png")


def main(argv=None):
    args = C.parse(__doc__, argv, epochs=(int, 10, "epochs"))
    epochs = 1 if args.smoke else args.epochs
    data = C.digits(args.smoke)
    total = epochs * math.ceil(len(data[0][0]) / 32)
    rows, curves = [], {}
    for name, schedule in make_schedules(total).items():
        model = C.mlp(keras.optimizers.SGD(PEAK, momentum=0.9), seed=args.seed)
        # One-cycle also cycles the momentum (0.95 -> 0.85 -> 0.95), as PyTorch's OneCycleLR.
        driver = (callbacks.OneCycle(PEAK, total_steps=total) if name == "one-cycle"
                  else callbacks.LearningRateSchedule(schedule))
        history = C.fit(model, data, epochs, callbacks=[driver])
        curves[name] = history
        rows.append({"schedule": name, "last rate": float(schedule(total - 1)),
                     "train loss": history["loss"][-1], "val loss": history["val_loss"][-1],
                     "val accuracy": history["val_accuracy"][-1]})
    C.table(rows, list(rows[0]), f"SGD (momentum 0.9), batch 32, {epochs} epochs ({total} updates) on digits:")

    fig, (rates, losses) = C.figure(2)
    steps = np.arange(total)
    for i, (name, schedule) in enumerate(make_schedules(total).items()):
        style = "--" if name == "one-cycle" else "-"
        rates.plot(steps, schedule_values(schedule, steps), style, color=f"C{i}", label=name)
        losses.plot(np.arange(1, epochs + 1), curves[name]["val_loss"], style, marker="o", ms=3,
                    color=f"C{i}", label=name)
    rates.set_xlabel("update")
    rates.set_ylabel("learning rate")
    rates.set_title("schedules")
    losses.set_xlabel("epoch")
    losses.set_ylabel("validation loss")
    losses.set_yscale("log")
    losses.set_title("digits MLP")
    for ax in (rates, losses):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    C.save(fig, args.out, "recipe_schedules.png")
    plot_one_cycle(args.out)
    return {"rows": rows}


if __name__ == "__main__":
    main()
