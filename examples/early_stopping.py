"""Early stopping on scikit-learn's digits: best weights (EMA ones), resumable.

Runs offline in a few seconds on a laptop CPU:

    python examples/early_stopping.py [--epochs 60] [--backup-dir DIR]

Trains an MLP with an exponential moving average of its weights, stops once the
validation loss has not improved for 5 epochs (or at once on a NaN), restores
the best epoch's EMA weights and prints the best epoch, the reason for stopping
and the validation accuracy. With `BackupAndRestore` and `backup_dir`, killing
the script and running it again resumes with the same patience counter, best
value and best weights.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_trainkit.callbacks import EarlyStopping  # noqa: E402
from keras_trainkit.data import load_digits  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--backup-dir", default=os.path.join(tempfile.gettempdir(), "keras_trainkit_es_example"),
                        help="where BackupAndRestore and EarlyStopping keep their state")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_val, y_val) = load_digits()
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    early_stopping = EarlyStopping(
        monitor="val_loss",
        patience=5,
        min_delta=0.01,
        min_delta_kind="relative",  # improve by at least 1% of the best loss
        restore_best_weights=True,  # the best epoch's EMA weights, since use_ema=True
        check_finite=True,
        stopping_threshold=0.03,
        backup_dir=os.path.join(args.backup_dir, "early_stopping"),
    )
    # EarlyStopping goes before BackupAndRestore, each with its own directory.
    backup = keras.callbacks.BackupAndRestore(os.path.join(args.backup_dir, "backup"))
    history = model.fit(x_train, y_train, batch_size=64, epochs=args.epochs,
                        validation_data=(x_val, y_val), callbacks=[early_stopping, backup], verbose=0)

    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(f"epochs run: {len(history.epoch)} (last: {history.epoch[-1] + 1})")
    print(f"best epoch: {early_stopping.best_epoch + 1} (val_loss {early_stopping.best:.4f})")
    print(f"stopped because: {early_stopping.stop_reason}"
          + (f" at epoch {early_stopping.stopped_epoch + 1}" if early_stopping.stopped_epoch else ""))
    print(f"restored weights (EMA of the best epoch): val_loss {loss:.4f}, val accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
