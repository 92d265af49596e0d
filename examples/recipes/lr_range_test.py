"""Recipe (a): a learning rate too small, right and too large, found with the range test.

Runs `keras_trainkit.lr_find` on the digits MLP (SGD with momentum 0.9), then
trains a fresh copy of the model at three rates read off the range test:

- too small: the valley suggestion / 100 (the flat start of the curve);
- right: the valley suggestion (fastai's default);
- too large: the rate at the smoothed loss's minimum (ten times the
  "minimum/10" suggestion), where the range test's loss stops falling.

Prints the three suggestions and a table (rate, final training loss, validation
accuracy), and saves DIR/recipe_lr_range_test.png (the range-test curve with the
three rates, and the training loss per epoch at each).

    python examples/recipes/lr_range_test.py [--out DIR] [--smoke]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_trainkit as kt  # noqa: E402


def main(argv=None):
    args = C.parse(__doc__, argv)
    epochs, steps = (1, 30) if args.smoke else (8, 100)
    data = C.digits(args.smoke)
    (x, y), _ = data

    def optimizer(lr):
        return keras.optimizers.SGD(lr, momentum=0.9)

    model = C.mlp(optimizer(0.01), seed=args.seed)
    result = kt.lr_find(model, x, y, num_steps=steps, seed=args.seed)
    skip = {"skip_start": 0, "skip_end": 0} if args.smoke else {}
    suggestions = {m: result.suggestion(m, **skip) for m in ("valley", "steepest", "minimum/10")}
    print("range test:", result)
    print("suggestions:", ", ".join(f"{m} {lr:.3g}" for m, lr in suggestions.items()))

    rates = {
        "too small (valley / 100)": suggestions["valley"] / 100,
        "right (valley)": suggestions["valley"],
        "too large (loss minimum)": 10 * suggestions["minimum/10"],
    }
    rows, histories = [], {}
    for label, lr in rates.items():
        history = C.fit(C.mlp(optimizer(lr), seed=args.seed), data, epochs)
        histories[label] = history
        rows.append({"rate": label, "learning rate": float(lr), "train loss": history["loss"][-1],
                     "val accuracy": history["val_accuracy"][-1]})
    C.table(rows, ["rate", "learning rate", "train loss", "val accuracy"],
            f"SGD (momentum 0.9), batch 32, {epochs} epochs on digits:")

    fig, (left, right) = C.figure(2)
    left.plot(result.learning_rates, result.raw_losses, color="0.75", lw=1, label="batch loss")
    result.plot(ax=left, method=None)
    for (label, lr), color in zip(rates.items(), ("C2", "C0", "C3")):
        left.axvline(lr, color=color, ls="--", lw=1)
        right.plot(np.arange(1, epochs + 1), histories[label]["loss"], "o-", color=color, label=label)
    left.set_ylim(0, 1.6 * result.losses[0])
    left.legend(fontsize=8)
    left.set_title("range test (lr_find)")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel("training loss")
    right.set_title("training at each rate")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    C.save(fig, args.out, "recipe_lr_range_test.png")
    return {"suggestions": suggestions, "rows": rows, "result": result}


if __name__ == "__main__":
    main()
