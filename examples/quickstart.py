"""Quickstart: warm-up + cosine decay on an MLP trained on scikit-learn's digits.

Runs offline in well under a minute on a laptop CPU:

    python examples/quickstart.py [--out DIR]

Prints the validation accuracy and the learning-rate trajectory, and saves a
plot of the schedule with the rates observed in fit() to DIR/quickstart_schedule.png.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import callbacks, schedules  # noqa: E402
from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.plotting import plot_schedule  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".", help="directory for the plot")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_val, y_val) = load_digits()
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    batch_size = 32
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    total = args.epochs * steps_per_epoch
    warmup = 2 * steps_per_epoch
    # Warm up for 2 epochs, then cosine-decay to 1% of the peak over the rest.
    # decay_steps count the updates after the warm-up.
    lr_callbacks = [
        callbacks.WarmUp(warmup_steps=warmup, initial_learning_rate=0.001),
        callbacks.CosineDecay(decay_steps=total - warmup, alpha=0.01),
    ]
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=args.epochs,
                        validation_data=(x_val, y_val), callbacks=lr_callbacks, verbose=2)

    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    rates = history.history["learning_rate"]
    print(f"\nvalidation accuracy: {accuracy:.4f}")
    print("learning rate at the end of each epoch:")
    print("  " + ", ".join(f"{r:.4g}" for r in rates))

    # The same schedule as one object: the callbacks apply exactly this.
    schedule = schedules.WarmUp(schedules.CosineDecay(0.1, total - warmup, alpha=0.01),
                                warmup, initial_learning_rate=0.001)
    epoch_ends = np.arange(1, args.epochs + 1) * steps_per_epoch - 1
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "quickstart_schedule.png")
    plot_schedule(schedule, total, path=path, observed=(epoch_ends, rates),
                  title="WarmUp + CosineDecay on digits (SGD, batch 32)")
    print(f"schedule plot saved to {path}")
    return accuracy, rates


if __name__ == "__main__":
    main()
