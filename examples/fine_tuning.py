"""Fine-tuning: gradual unfreezing with discriminative learning rates.

A three-layer MLP backbone is pretrained on digits 0-4, then transferred under
a new head to digits 5-9 and fine-tuned in a single fit(): the head trains
from the start, and the backbone layers are unfrozen one at a time from the
top, each with a geometrically lower learning rate (ULMFiT's recipe). No
recompiling; frozen layers stay bit-for-bit unchanged. Runs offline in a few
seconds:

    python examples/fine_tuning.py [--out DIR] [--epochs 8]

Prints the unfreezing events and the validation accuracy per epoch, and saves
DIR/fine_tuning_schedule.png.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import callbacks, optimizers  # noqa: E402
from keras_trainkit.data import load_digits  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def split():
    """Digits 0-4 (pretraining) and digits 5-9 relabelled 0-4 (fine-tuning)."""
    (x, y), (x_val, y_val) = load_digits()
    low, low_val = y < 5, y_val < 5
    return ((x[low], y[low]),
            (x[~low], y[~low] - 5), (x_val[~low_val], y_val[~low_val] - 5))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".", help="directory for the plot")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    epochs = args.epochs

    keras.utils.set_random_seed(0)
    (x_pre, y_pre), (x_ft, y_ft), (x_val, y_val) = split()
    backbone = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu", name="block1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.Dense(32, activation="relu", name="block2"),
        keras.layers.Dense(32, activation="relu", name="block3"),
    ], name="backbone")
    pretrain = keras.Sequential([backbone, keras.layers.Dense(5)])
    pretrain.compile(keras.optimizers.Adam(3e-3), LOSS)
    pretrain.fit(x_pre, y_pre, batch_size=32, epochs=5, verbose=0)

    # Transfer: the pretrained backbone under a new head, on the other digits.
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(5, name="head")(backbone(inputs)))
    groups = [["block3"], ["block2"], ["block1", "bn1"]]  # top first
    optimizer = optimizers.discriminative_optimizer(
        model, keras.optimizers.Adam(1e-2), groups=[["head"], *groups], decay=0.3)
    model.compile(optimizer, LOSS, metrics=["accuracy"])
    every = max(1, epochs // 4)  # block3 at `every`, block2 at 2 * every, block1 at 3 * every
    unfreezing = callbacks.GradualUnfreezing(groups, every=every, verbose=1)
    before = {w.path: w.numpy() for w in backbone.weights}
    history = model.fit(x_ft, y_ft, batch_size=32, epochs=epochs, validation_data=(x_val, y_val),
                        callbacks=[unfreezing], verbose=0)

    accuracy = history.history["val_accuracy"]
    rates = optimizer.group_learning_rates  # head, block3, block2, block1 + bn1
    print("\ngroup rates:", ", ".join(f"{r:.3g}" for r in rates))
    print("unfrozen at epoch:", {", ".join(groups[i]): e for i, e in unfreezing.unfrozen_at.items()})
    print("val accuracy per epoch:", ", ".join(f"{a:.3f}" for a in accuracy))
    if epochs <= 3 * every:  # block1 never unfroze: it is exactly the pretrained one
        assert all(np.array_equal(before[w.path], w.numpy()) for w in backbone.get_layer("block1").weights)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    names = ["head", *(", ".join(g) for g in groups)]
    starts = [0] + [unfreezing.unfrozen_at.get(i, epochs) for i in range(len(groups))]
    for row, (start, rate) in enumerate(zip(starts, rates)):
        if start > 0:
            ax.barh(row, start, left=0, color="lightgray", edgecolor="gray")
        if start < epochs:
            ax.barh(row, epochs - start, left=start, color=plt.cm.viridis(row / len(names)))
            ax.text(start + 0.1, row, f"lr {rate:.2g}", va="center", color="white", fontsize=9)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="epoch index (0-based)", xlim=(0, epochs), title="unfreezing schedule (gray: frozen)")
    ax_acc.plot(np.arange(1, epochs + 1), accuracy, marker="o")
    for start in starts[1:]:
        if start < epochs:
            ax_acc.axvline(start + 0.5, color="gray", ls=":")
    ax_acc.set(xlabel="epoch", ylabel="val accuracy", title="digits 5-9 after transfer")
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fine_tuning_schedule.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"unfreezing plot saved to {path}")
    return {"accuracy": accuracy, "unfrozen_at": dict(unfreezing.unfrozen_at), "rates": rates}


if __name__ == "__main__":
    main()
