"""Fresh-process training runs for tests/test_early_stopping_fit.py.

    python tests/_early_stopping_worker.py resume WORKDIR [--pause-at EPOCH BATCH]
        Trains a tiny regression model with BackupAndRestore and EarlyStopping
        (both backing up under WORKDIR). With --pause-at, prints "PAUSED" once
        it reaches that batch and sleeps, for the test to kill it. Otherwise
        writes WORKDIR/result.npz (final weights and optimizer variables) and
        WORKDIR/result.json (what EarlyStopping recorded).

    python tests/_early_stopping_worker.py mirrored OUT_JSON
        Trains under tf.distribute.MirroredStrategy on two logical CPU devices
        and writes the checks' outcomes to OUT_JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

# The monitored quantity is injected, so the best and stopping epochs are known:
# best at epoch 2, then 3 epochs without improvement: patience=3 stops at 5.
SCORES = [1.0, 0.8, 0.5, 0.6, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1]
EPOCHS = len(SCORES)
PATIENCE = 3


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    return x, y


def make_model(keras, optimizer):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def scores_callback(keras, scores):
    class InjectScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]

    return InjectScore()


def resume(workdir: str, pause_at: tuple[int, int] | None) -> None:
    import keras

    from keras_trainkit.callbacks import EarlyStopping

    class PauseAt(keras.callbacks.Callback):
        epoch = -1

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if pause_at is not None and (self.epoch, batch) == tuple(pause_at):
                print("PAUSED", flush=True)
                time.sleep(600)

    x, y = make_data()
    model = make_model(keras, keras.optimizers.Adam(0.01))
    es = EarlyStopping(
        monitor="score", mode="min", patience=PATIENCE, restore_best_weights=True,
        restore_optimizer_state=True, backup_dir=os.path.join(workdir, "early_stopping"),
    )
    # EarlyStopping goes before BackupAndRestore (see its `backup_dir` docs).
    callbacks = [
        scores_callback(keras, SCORES),
        es,
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
        PauseAt(),
    ]
    history = model.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    np.savez(os.path.join(workdir, "result.npz"), **arrays)
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump({
            "best": es.best, "best_epoch": es.best_epoch, "stopped_epoch": es.stopped_epoch,
            "stop_reason": es.stop_reason, "epochs_run": history.epoch,
            "leftover": sorted(os.listdir(workdir)),
        }, f)


def mirrored(out: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras

    from keras_trainkit.callbacks import EarlyStopping

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = make_data()

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights, self.ema, self.opt = [], [], []

        def on_epoch_end(self, epoch, logs=None):
            opt = self.model.optimizer
            self.weights.append(self.model.get_weights())
            self.ema.append([a.numpy() for a in opt._model_variables_moving_average])
            self.opt.append([v.numpy() for v in opt.variables])

    def per_replica(var):
        return [np.asarray(t) for t in strategy.experimental_local_results(var.value)]

    def run(backup_dir=None, interrupt_at=None):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = make_model(keras, keras.optimizers.SGD(0.05, momentum=0.9, use_ema=True, ema_momentum=0.5))
        es = EarlyStopping(monitor="score", mode="min", patience=PATIENCE, restore_best_weights=True,
                           restore_optimizer_state=True, backup_dir=backup_dir)
        record = Record()
        callbacks = [scores_callback(keras, SCORES), es, record]
        if backup_dir is not None:
            callbacks.append(keras.callbacks.BackupAndRestore(backup_dir + "_bar"))

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == interrupt_at:
                    raise RuntimeError("interrupted")

        if interrupt_at is not None:
            try:
                model.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0,
                          callbacks=callbacks + [Interrupt()])
            except RuntimeError:
                pass
            with strategy.scope():
                model = make_model(keras, keras.optimizers.SGD(0.05, momentum=0.9, use_ema=True, ema_momentum=0.5))
        model.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
        return model, es, record

    model, es, record = run()
    b = es.best_epoch
    trainable = {id(v) for v in model.trainable_variables}
    ema_by_var = dict(zip([id(v) for v in model.trainable_variables], record.ema[b], strict=True))
    replicas_ok, values_ok = True, True
    for var, raw in zip(model.weights, record.weights[b], strict=True):
        expected = ema_by_var[id(var)] if id(var) in trainable else raw
        values = per_replica(var)
        replicas_ok &= len(values) == 2
        values_ok &= all(np.array_equal(v, expected) for v in values)
    opt_ok = all(
        np.array_equal(v.numpy(), o) for v, o in zip(model.optimizer.variables, record.opt[b], strict=True)
    )
    raw_by_var = dict(zip([id(v) for v in model.weights], record.weights[b], strict=True))
    ema_differs = any(not np.array_equal(ema_by_var[k], raw_by_var[k]) for k in trainable)
    final = model.get_weights()
    workdir = os.path.dirname(os.path.abspath(out))
    resumed, es2, _ = run(backup_dir=os.path.join(workdir, "es"), interrupt_at=4)
    resume_ok = all(np.array_equal(a, c) for a, c in zip(final, resumed.get_weights(), strict=True))
    with open(out, "w") as f:
        json.dump({
            "num_replicas": strategy.num_replicas_in_sync, "best_epoch": b, "stopped_epoch": es.stopped_epoch,
            "stop_reason": es.stop_reason, "replicas_ok": bool(replicas_ok), "values_ok": bool(values_ok),
            "optimizer_ok": bool(opt_ok), "resume_ok": bool(resume_ok),
            "resumed": [es2.best_epoch, es2.stopped_epoch, es2.stop_reason],
            "ema_differs_from_raw": ema_differs,
        }, f)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("resume")
    p.add_argument("workdir")
    p.add_argument("--pause-at", nargs=2, type=int, default=None)
    p = sub.add_parser("mirrored")
    p.add_argument("out")
    args = parser.parse_args(argv)
    if args.cmd == "resume":
        resume(args.workdir, args.pause_at)
    else:
        mirrored(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
