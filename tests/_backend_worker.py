"""Scenarios run under one Keras backend, for tests/test_backends.py.

    KERAS_BACKEND=jax python tests/_backend_worker.py OUT_JSON [SCENARIO ...]

Every scenario starts from the same initial weights and data on every backend
(weights set from numpy, `shuffle=False`) and records, per update, the rate the
optimizer reports before the update (`optimizer.learning_rate`), plus what it
needs to compare: final weights, logs, the rate of a reference run whose
optimizer was compiled with the composed schedule object (Keras' own in-step
evaluation), and how often our controller ran Python.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, (x @ rng.normal(size=(5, 1))).astype("float32")


def _model(keras, optimizer, steps_per_execution=1):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    return model


def _recorder(keras):
    class Rates(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            self.seen.append([int(opt.iterations), float(opt.learning_rate)])

    return Rates()


def _weights(model):
    return [np.asarray(w).tolist() for w in model.get_weights()]


def scenario_plateau(keras, C, S):
    """WarmUp + CosineDecay, ReduceLROnPlateau rescaling them, then a second fit."""
    x, y = _data()
    model = _model(keras, keras.optimizers.SGD(0.05))
    rec = _recorder(keras)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                        callbacks=[plateau, C.WarmUp(4), C.CosineDecay(30), rec])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[C.WarmUp(4), C.CosineDecay(30), rec])
    return {"rates": rec.seen, "epoch_rates": history.history["learning_rate"],
            "own_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), "weights": _weights(model)}


def scenario_in_step(keras, C, S):
    """The rate applied inside the step: weights equal a model compiled with the
    composed schedule; and our Python runs only when the step is traced."""
    from keras_trainkit.callbacks import _lr_control

    calls = []
    rate_at = _lr_control.RateController.rate_at

    def counting(self, step):
        calls.append(1)
        return rate_at(self, step)

    _lr_control.RateController.rate_at = counting
    x, y = _data()
    ours = _model(keras, keras.optimizers.Adam(0.02))
    ours.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
             callbacks=[C.WarmUp(5, initial_learning_rate=0.001), C.ExponentialDecay(6, 0.5)])
    _lr_control.RateController.rate_at = rate_at
    reference = _model(keras, keras.optimizers.Adam(S.WarmUp(S.ExponentialDecay(0.02, 6, 0.5), 5, 0.001)))
    reference.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return {"weights": _weights(ours), "reference": _weights(reference), "rate_at_calls": len(calls)}


def scenario_counter_reset(keras, C, S):
    """The update count set at epoch ends (as a restore would do), forward then
    back: the next updates use the rates of the count as set, as Keras' own
    compiled schedule does."""
    class Reset(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch < 2:  # past the 1024 rates torch tabulates, then back below them
                self.model.optimizer.iterations.assign((1500, 2)[epoch])

    x, y = _data()
    ours = _model(keras, keras.optimizers.Adam(0.02))
    ours.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
             callbacks=[C.WarmUp(5, initial_learning_rate=0.001), C.ExponentialDecay(6, 0.5), Reset()])
    reference = _model(keras, keras.optimizers.Adam(S.WarmUp(S.ExponentialDecay(0.02, 6, 0.5), 5, 0.001)))
    reference.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[Reset()])
    return {"weights": _weights(ours), "reference": _weights(reference),
            "iterations": int(keras.ops.convert_to_numpy(ours.optimizer.iterations))}


def scenario_refits(keras, C, S):
    """Consecutive fits of one model, each with other callbacks (or none), then
    with the same ones again: what each fit applies, and whether it traced a
    step (a repeated fit reuses the step compiled for the previous one). SGD(1.0)
    on a loss whose gradient is 1, so a fit of 8 updates moves the weight by
    minus the sum of its 8 rates, and every gradient norm is 1."""
    from keras_trainkit.callbacks import GradientNormLogger, _lr_control

    traces = []
    rate_at = _lr_control.RateController.rate_at

    def counting(self, step):  # runs when a TensorFlow or JAX step is traced
        traces.append(1)
        return rate_at(self, step)

    _lr_control.RateController.rate_at = counting
    x, y = np.ones((64, 1), "float32"), np.zeros((64, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(1.0), lambda y_true, y_pred: keras.ops.mean(y_pred))
    warm, logger = C.WarmUp(100), GradientNormLogger()
    plans = [[], [C.WarmUp(10)], [], [C.CosineDecay(40)], [C.CosineDecay(1000)], [GradientNormLogger()],
             [C.WarmUp(100), GradientNormLogger()], [],
             [warm], [warm], [C.WarmUp(100)], [warm, logger], [warm, logger], [], [warm, logger]]
    class TestFunction(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            self.function = self.model.test_function

    sums, traced, norms, val_errors, test_functions, functions = [], [], [], [], [], []
    try:
        for callbacks in plans:
            before, count, seen = float(model.get_weights()[0][0, 0]), len(traces), TestFunction()
            history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, validation_data=(x, y),
                                callbacks=[*callbacks, seen])
            after = float(model.get_weights()[0][0, 0])
            sums.append(before - after)
            traced.append(len(traces) > count)
            norms.append(history.history.get("grad_norm"))
            val_errors.append(history.history["val_loss"][0] - after)  # the loss is the weight
            # The first fit that validated with this test function (the same object: nothing compiled).
            functions.append(seen.function)
            test_functions.append(next(i for i, f in enumerate(functions) if f is seen.function))
    finally:
        _lr_control.RateController.rate_at = rate_at
    return {"sums": sums, "traced": traced, "grad_norms": norms, "val_errors": val_errors,
            "test_functions": test_functions}


def scenario_range_tests(keras, C, S):
    """`lr_find` twice on a fitted model, with two ranges, then a plain fit:
    each applies its own rates (the loss of SGD on a loss whose gradient is 1
    falls by each update's rate)."""
    from keras_trainkit import lr_find

    x, y = np.ones((64, 1), "float32"), np.zeros((64, 1), "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.5), lambda y_true, y_pred: keras.ops.mean(y_pred))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    raw = [lr_find(model, x, y, batch_size=8, min_lr=lo, max_lr=hi, num_steps=5, stop_factor=None,
                   shuffle=False).raw_losses.tolist() for lo, hi in ((1e-3, 1.0), (1e-2, 0.1))]
    before = float(model.get_weights()[0][0, 0])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return {"raw": raw, "plain_fit": before - float(model.get_weights()[0][0, 0])}


def scenario_accumulation(keras, C, S):
    x, y = _data()
    model = _model(keras, keras.optimizers.SGD(0.05, gradient_accumulation_steps=2))
    rec = _recorder(keras)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[C.WarmUp(3), C.StepDecay(2), rec])
    return {"rates": rec.seen, "weights": _weights(model)}


def scenario_steps_per_execution(keras, C, S):
    if keras.backend.backend() == "torch":
        return {"skipped": "steps_per_execution must be 1 with the PyTorch backend (Keras)"}
    x, y = _data()
    sched = S.WarmUp(S.CosineDecay(0.05, 10), 4)
    model = _model(keras, keras.optimizers.SGD(0.05), steps_per_execution=3)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                        callbacks=[C.WarmUp(4), C.CosineDecay(10)])
    reference = _model(keras, keras.optimizers.SGD(sched), steps_per_execution=3)
    reference.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return {"epoch_rates": history.history["learning_rate"], "weights": _weights(model),
            "reference": _weights(reference)}


def scenario_one_cycle(keras, C, S):
    """Rate and momentum (SGD's momentum, Adam's beta_1) cycled in the step."""
    x, y = _data(48)
    out = {}
    for kind, optimizer in (("sgd", keras.optimizers.SGD(0.01, momentum=0.9)), ("adam", keras.optimizers.Adam(0.01))):
        model = _model(keras, optimizer)
        rec = _recorder(keras)
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                            callbacks=[C.OneCycle(0.05, total_steps=18, base_momentum=0.7), rec])
        out[kind] = {"rates": rec.seen, "weights": _weights(model),
                     "momentum": history.history["momentum" if kind == "sgd" else "beta_1"]}
    return out


def scenario_batch_size(keras, C, S):
    x, y = _data()
    from keras_trainkit.data import ScheduledBatches

    data = ScheduledBatches(x, y, batch_size=8, shuffle=False)
    model = _model(keras, keras.optimizers.SGD(0.05))
    rec = _recorder(keras)
    history = model.fit(data, epochs=3, verbose=0, shuffle=False, callbacks=[
        C.BatchSizeScheduler(S.BatchSizeIncrease(8, factor=2, step_size=1), data, lr_scaling="linear"), rec])
    return {"rates": rec.seen, "batch_size": history.history["batch_size"], "weights": _weights(model)}


def scenario_early_stopping(keras, C, S):
    x, y = _data()
    model = _model(keras, keras.optimizers.SGD(0.05))
    # mode="max" on a falling loss: the best epoch is the first one.
    es = C.EarlyStopping(monitor="loss", mode="max", patience=1, restore_best_weights=True)
    best = []
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, shuffle=False, callbacks=[es, keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: best.append(_weights(model)) if epoch == 0 else None)])
    return {"stopped_epoch": es.stopped_epoch, "best_epoch": es.best_epoch, "restored": _weights(model) == best[0]}


def scenario_unfreezing(keras, C, S):
    x, y = _data()
    model = _model(keras, keras.optimizers.SGD(0.05))
    hidden = [np.asarray(w).tolist() for w in model.get_layer("hidden").get_weights()]
    unfreeze = C.GradualUnfreezing(["hidden"], unfreeze_at=[2])
    frozen_until_2 = []
    try:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[
            unfreeze, keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: frozen_until_2.append(
                [np.asarray(w).tolist() for w in model.get_layer("hidden").get_weights()] == hidden))])
    except (ValueError, RuntimeError) as e:
        return {"error": str(e)}
    return {"unfrozen_at": unfreeze.unfrozen_at, "frozen_by_epoch": frozen_until_2, "weights": _weights(model)}


def scenario_tensorboard(keras, C, S, log_dir):
    x, y = _data()
    model = _model(keras, keras.optimizers.SGD(0.05))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
              callbacks=[C.TensorBoard(log_dir), C.StepDecay(step_size=4, gamma=0.5)])
    return {"log_dir": log_dir}


def scenario_schedules(keras, C, S):
    """A composed schedule on the host, compiled by the backend, and compiled
    into an optimizer (Keras' own evaluation)."""
    sched = S.WarmUp(S.CosineDecayRestarts(0.1, 20, t_mul=1.5, m_mul=0.8, alpha=0.1), 10, 0.01, "cosine")
    steps = np.arange(0, 200, 7)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(lambda t: sched(t))
    elif backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda t: sched(t))
    else:
        compiled = sched
    tensors = [float(keras.ops.convert_to_numpy(compiled(keras.ops.convert_to_tensor(np.float32(s)))))
               for s in steps]
    x, y = _data(32)
    model = _model(keras, keras.optimizers.SGD(sched))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return {"steps": steps.tolist(), "host": sched(steps).tolist(), "compiled": tensors,
            "optimizer_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))}


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def main(out: str, names: list[str]) -> None:
    import keras

    from keras_trainkit import callbacks as C
    from keras_trainkit import schedules as S

    results = {"backend": keras.backend.backend()}
    for name in names or list(SCENARIOS):
        keras.utils.set_random_seed(0)
        args = (keras, C, S) + ((os.path.join(os.path.dirname(out), f"tb_{results['backend']}"),)
                                if name == "tensorboard" else ())
        results[name] = SCENARIOS[name](*args)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    names = sys.argv[2:]
    if "--device-counts" in names:
        # torch: the rate tables indexed on the device, never reading the
        # update count on the host (the path for an accelerator), on the CPU.
        from keras_trainkit.callbacks import _eager

        _eager.READ_COUNTS_ON_HOST = False
        names.remove("--device-counts")
    main(sys.argv[1], names)
