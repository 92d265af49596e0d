"""A training run for tests/test_checkpoint_state.py, in a fresh process.

    python tests/_resume_worker.py SPEC_JSON

SPEC_JSON holds: `dir` (BackupAndRestore's directory), `rates` (a JSON-lines
file: one `[update, rate, epoch]` per update, appended and flushed as
training goes),
`save_freq` ("epoch" or an int) and `kill_at` (the update after which the
process SIGKILLs itself, or null). The run: a CosineDecay callback on SGD,
ReduceLROnPlateau rescaling it, BatchSizeScheduler(lr_scaling="linear")
doubling the batch size, BackupAndRestore.
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

EPOCHS = 5


def make_run(keras, spec=None):
    """The model, data and callbacks of the run (the reference uses it too)."""
    import numpy as np

    from keras_trainkit import callbacks as C
    from keras_trainkit import schedules as S
    from keras_trainkit.data import ScheduledBatches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    data = ScheduledBatches(x, y, batch_size=8, seed=0)
    callbacks = [
        C.CosineDecay(decay_steps=60, alpha=0.1),
        C.BatchSizeScheduler(S.BatchSizeIncrease(8, factor=2, step_size=2), data, lr_scaling="linear"),
        # mode="max" on a falling loss: every epoch after the first is a plateau.
        keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0),
    ]
    return model, data, callbacks


def main(spec: dict) -> None:
    import keras

    model, data, callbacks = make_run(keras)
    out = open(spec["rates"], "a", buffering=1)

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            out.write(json.dumps([int(opt.iterations), float(opt.learning_rate), self.epoch]) + "\n")
            out.flush()
            os.fsync(out.fileno())

        def on_train_batch_end(self, batch, logs=None):
            if spec["kill_at"] is not None and int(self.model.optimizer.iterations) == spec["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)

    backup = keras.callbacks.BackupAndRestore(spec["dir"], save_freq=spec["save_freq"])
    model.fit(data, epochs=EPOCHS, verbose=0, callbacks=callbacks + [backup, Record()])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
