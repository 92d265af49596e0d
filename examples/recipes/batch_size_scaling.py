"""Recipe (c): batch size and learning rate - the linear scaling rule with warm-up.

Goyal et al. (2017): when the batch grows k times, multiply the learning rate
by k, and ramp it up linearly over the first updates (their 5 of 90 epochs)
because the scaled rate is too large for the random initial weights. Here:
the digits MLP, SGD with momentum 0.9, a base rate of 0.05 at batch 32, and the
same number of epochs for every batch size (so a larger batch makes fewer
updates). For batches of 128 and 512:

- no scaling: rate 0.05;
- linear scaling: rate 0.05 * batch / 32, no warm-up;
- linear scaling + warm-up: the same rate reached by a linear ramp from
  0.05 over the first `--warmup-epochs` epochs of updates
  (`keras_trainkit.schedules.WarmUp` as the optimizer's learning rate).

Prints a table (rate, updates, final training loss, validation accuracy) and
saves DIR/recipe_batch_size.png (validation accuracy per epoch).

    python examples/recipes/batch_size_scaling.py [--out DIR] [--smoke]

References:
    Goyal et al., 2017. Accurate, Large Minibatch SGD: Training ImageNet in
    1 Hour. https://arxiv.org/abs/1706.02677
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import schedules  # noqa: E402

BASE_BATCH, BASE_RATE = 32, 0.05


def main(argv=None):
    args = C.parse(__doc__, argv, epochs=(int, 15, "epochs for every run"),
                   warmup_epochs=(float, 2.0, "warm-up length in epochs"))
    epochs = 2 if args.smoke else args.epochs
    batches = (128,) if args.smoke else (128, 512)
    data = C.digits(args.smoke)
    n = len(data[0][0])
    runs = [("baseline", BASE_BATCH, BASE_RATE, 0)]
    for batch in batches:
        k = batch / BASE_BATCH
        warmup = max(1, round(args.warmup_epochs * math.ceil(n / batch)))
        runs += [("no scaling", batch, BASE_RATE, 0), ("linear scaling", batch, BASE_RATE * k, 0),
                 ("linear scaling + warm-up", batch, BASE_RATE * k, warmup)]
    rows, curves = [], {}
    for rule, batch, rate, warmup in runs:
        lr = rate if not warmup else schedules.WarmUp(rate, warmup, initial_learning_rate=BASE_RATE)
        model = C.mlp(keras.optimizers.SGD(lr, momentum=0.9), seed=args.seed)
        history = C.fit(model, data, epochs, batch_size=batch)
        curves[batch, rule] = history["val_accuracy"]
        rows.append({"batch": batch, "rule": rule, "learning rate": rate, "warm-up updates": warmup,
                     "updates": epochs * math.ceil(n / batch), "train loss": history["loss"][-1],
                     "val accuracy": history["val_accuracy"][-1]})
    C.table(rows, list(rows[0]), f"SGD (momentum 0.9), {epochs} epochs on digits, base rate "
            f"{BASE_RATE} at batch {BASE_BATCH}:")

    fig, axes = C.figure(len(batches), width=4.8)
    colors = {"baseline": "k", "no scaling": "C1", "linear scaling": "C3", "linear scaling + warm-up": "C0"}
    for ax, batch in zip(axes, batches):
        for (b, rule), accuracy in curves.items():
            if b in (BASE_BATCH, batch):
                ax.plot(np.arange(1, epochs + 1), accuracy, ":" if b == BASE_BATCH else "-", marker="o",
                        ms=3, color=colors[rule], label=f"batch {b}: {rule}")
        ax.set_title(f"batch {batch} vs batch {BASE_BATCH}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    C.save(fig, args.out, "recipe_batch_size.png")
    return {"rows": rows}


if __name__ == "__main__":
    main()
