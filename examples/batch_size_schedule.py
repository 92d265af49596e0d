"""Batch-size schedule: "don't decay the learning rate, increase the batch size".

An MLP on scikit-learn's digits, trained with Smith et al. (2018)'s recipe: the
batch size doubles at three milestones (where a step schedule would halve the
learning rate) up to a cap of 64; the last doubling, past the cap, halves the
learning rate instead. Runs offline in a few seconds:

    python examples/batch_size_schedule.py [--out DIR] [--epochs 16]

Prints, per epoch, the batch size, the number of updates and the learning rate,
then the validation accuracy, and saves DIR/batch_size_schedule.png.
"""

import argparse
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import callbacks, schedules  # noqa: E402
from keras_trainkit.data import ScheduledBatches, load_digits  # noqa: E402


class EpochLog(keras.callbacks.Callback):
    """Updates and learning rate of each epoch."""

    def __init__(self):
        super().__init__()
        self.updates, self.rates = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = int(self.model.optimizer.iterations)

    def on_epoch_end(self, epoch, logs=None):
        self.updates.append(int(self.model.optimizer.iterations) - self._start)
        self.rates.append(float(self.model.optimizer.learning_rate))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".", help="directory for the plot")
    parser.add_argument("--epochs", type=int, default=16)
    args = parser.parse_args(argv)
    epochs = args.epochs

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_val, y_val) = load_digits()
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    milestones = sorted({max(1, epochs * k // 4) for k in (1, 2, 3)})
    schedule = schedules.BatchSizeIncrease(16, factor=2, milestones=milestones, max_batch_size=64)
    data = ScheduledBatches(x_train, y_train, seed=0)
    log = EpochLog()
    history = model.fit(data, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
                        callbacks=[callbacks.BatchSizeScheduler(schedule, data), log])

    sizes = history.history["batch_size"]
    n = len(x_train)
    assert log.updates == [math.ceil(n / b) for b in sizes]  # every sample once per epoch
    print("epoch  batch  updates  learning rate  val accuracy")
    for e in range(epochs):
        print(f"{e + 1:5d}  {sizes[e]:5d}  {log.updates[e]:7d}  {log.rates[e]:13.4g}  "
              f"{history.history['val_accuracy'][e]:12.4f}")
    accuracy = history.history["val_accuracy"][-1]
    print(f"\nvalidation accuracy: {accuracy:.4f} after {sum(log.updates)} updates "
          f"(batch 16 throughout would take {epochs * math.ceil(n / 16)})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    e = np.arange(epochs)
    axes[0].step(e, [schedule.requested(int(i)) for i in e], where="post", ls="--", color="gray",
                 label="requested")
    axes[0].step(e, [schedule(int(i)) for i in e], where="post", label="BatchSizeIncrease")
    axes[0].plot(e, sizes, "o", markersize=4, label="used in fit()")
    axes[0].set_yscale("log", base=2)
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].set(xlabel="epoch", ylabel="batch size (log scale)", title="batch size")
    axes[0].legend(fontsize=8)
    axes[1].bar(e, log.updates)
    axes[1].set(xlabel="epoch", ylabel="updates", title="updates per epoch = ceil(n / b)")
    axes[2].step(e, log.rates, where="post", marker="o", markersize=4)
    axes[2].set(xlabel="epoch", ylabel="learning rate", title="rate (halved past the cap)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "batch_size_schedule.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"schedule plot saved to {path}")
    return {"accuracy": accuracy, "batch_sizes": sizes, "updates": log.updates, "rates": log.rates}


if __name__ == "__main__":
    main()
