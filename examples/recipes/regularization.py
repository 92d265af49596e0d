"""Recipe (d): L1 vs L2 vs no weight penalty - sparsity and validation curves.

A wide MLP (64 -> 256 -> 10) trained with Adam (rate 1e-3, batch 32) on only
300 digits, so that it overfits, with the same penalty on both kernels:

- none;
- L2: `keras.regularizers.L2(--l2)` adds `l2 * sum(w ** 2)` to the loss
  (shrinks every weight in proportion to its size);
- L1: `keras.regularizers.L1(--l1)` adds `l1 * sum(|w|)` (pulls every weight
  towards zero at a constant rate: most end up tiny - with a gradient
  optimizer they hover near zero at about the step size rather than at
  exactly 0 - so the model is nearly sparse).

Prints a table (final and best validation accuracy, validation and training
cross-entropy without the penalty, the share of first-layer weights with
|w| < 1e-3, their L2 norm) and saves
DIR/recipe_regularization.png (cross-entropy per epoch, the distribution of
the first layer's |w|).

    python examples/recipes/regularization.py [--out DIR] [--smoke]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recipe_common as C  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None):
    args = C.parse(__doc__, argv, epochs=(int, 60, "epochs"), l1=(float, 1e-3, "L1 factor"),
                   l2=(float, 1e-3, "L2 factor"))
    epochs = 2 if args.smoke else args.epochs
    data = C.digits(args.smoke, train=300)
    penalties = {"none": None, "L2": keras.regularizers.L2(args.l2), "L1": keras.regularizers.L1(args.l1)}
    rows, curves, weights = [], {}, {}
    for name, regularizer in penalties.items():
        # Keras adds the penalty to `loss` and `val_loss`: the cross-entropy metric is the bare fit.
        xent = keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent")
        model = C.mlp(keras.optimizers.Adam(1e-3), units=256, seed=args.seed, regularizer=regularizer,
                      metrics=("accuracy", xent))
        history = C.fit(model, data, epochs)
        kernel = np.abs(model.layers[0].kernel.numpy()).ravel()
        curves[name], weights[name] = history, kernel
        rows.append({
            "penalty": name if regularizer is None else f"{name} ({regularizer.get_config()[name.lower()]:g})",
            "val accuracy": history["val_accuracy"][-1], "best val accuracy": max(history["val_accuracy"]),
            "val cross-entropy": history["val_xent"][-1], "train cross-entropy": history["xent"][-1],
            "weights below 1e-3": f"{np.mean(kernel < 1e-3):.1%}", "weight norm": float(np.sqrt(np.sum(kernel ** 2))),
        })
    C.table(rows, list(rows[0]), f"MLP 64-256-10, Adam 1e-3, {len(data[0][0])} training digits, "
            f"{epochs} epochs (cross-entropy without the penalty):")

    fig, (val, hist) = C.figure(2)
    bins = np.logspace(-9, 0, 46)
    for i, name in enumerate(penalties):
        val.plot(np.arange(1, epochs + 1), curves[name]["val_xent"], color=f"C{i}", label=f"{name}: validation")
        val.plot(np.arange(1, epochs + 1), curves[name]["xent"], ":", color=f"C{i}", label=f"{name}: training")
        hist.hist(np.maximum(weights[name], 1e-9), bins=bins, histtype="step", color=f"C{i}", lw=1.5, label=name)
    val.set_xlabel("epoch")
    val.set_ylabel("cross-entropy (no penalty)")
    val.set_yscale("log")
    val.set_title("validation (solid) and training (dotted)")
    val.grid(alpha=0.3)
    val.legend(fontsize=7)
    hist.set_xscale("log")
    hist.set_xlabel("|w| of the first layer (1e-9 and below in the first bin)")
    hist.set_ylabel("weights")
    hist.set_title("weight magnitudes")
    hist.legend(fontsize=8)
    C.save(fig, args.out, "recipe_regularization.png")
    return {"rows": rows}


if __name__ == "__main__":
    main()
