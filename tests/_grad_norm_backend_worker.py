"""GradientNormLogger scenarios on the jax or torch backend, for tests/test_grad_norm_backends.py.

    KERAS_BACKEND=jax python tests/_grad_norm_backend_worker.py INPUTS.npz OUT_DIR [--hide-tensorflow]

Trains a small MLP from the initial weights and data in INPUTS.npz (the test
process made them, and trains the same on TensorFlow) through several
scenarios, each with its TensorBoard run under OUT_DIR/<scenario>/train, and
writes OUT_DIR/result.json: what fit() reported (History, step logs, state
left on the model) and, for every update, the reference computed here
independently of Keras' training code: the gradient of the same loss by the
backend's own autodiff (`jax.grad`, `torch.autograd`) on the same batch at the
reference's own weights, updated by plain SGD in numpy.

With --device-counts (torch), the update count is never read on the host: the
path taken when the optimizer lives on an accelerator.

With --hide-tensorflow, `import tensorflow` fails in this process
(`sys.modules["tensorflow"] = None`, as if it were not installed): the event
files must then be written by tensorboard's own writer.
"""

import json
import os
import sys
import time
import warnings

if "--hide-tensorflow" in sys.argv:
    # Python's own block: `import tensorflow` raises ModuleNotFoundError and
    # `importlib.util.find_spec("tensorflow")` is None, as when not installed.
    sys.modules["tensorflow"] = None

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit.callbacks import GradientNormLogger  # noqa: E402

if "--device-counts" in sys.argv:
    # torch: the path for an optimizer on an accelerator (update numbers and
    # record slots as device tensors, never read on the host), on the CPU.
    from keras_trainkit.callbacks import _eager  # noqa: E402

    _eager.READ_COUNTS_ON_HOST = False

BACKEND = keras.backend.backend()
assert BACKEND in ("jax", "torch"), BACKEND
INPUTS = np.load(sys.argv[1])
OUT = sys.argv[2]
X, Y = INPUTS["x"], INPUTS["y"]
WEIGHTS = [INPUTS[f"w{i}"] for i in range(4)]
BATCH = 16


# -- the independent reference ----------------------------------------------------------
def _loss_and_grad():
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def loss(ws, x, y):
            hidden = jnp.tanh(x @ ws[0] + ws[1])
            return jnp.mean((hidden @ ws[2] + ws[3] - y) ** 2)

        grad = jax.jit(jax.grad(loss))
        return lambda ws, x, y: [np.asarray(g) for g in grad([jnp.asarray(w) for w in ws], x, y)]
    import torch

    def grad(ws, x, y):
        ts = [torch.tensor(w, requires_grad=True) for w in ws]
        hidden = torch.tanh(torch.tensor(x) @ ts[0] + ts[1])
        loss = torch.mean((hidden @ ts[2] + ts[3] - torch.tensor(y)) ** 2)
        return [g.numpy() for g in torch.autograd.grad(loss, ts)]

    return grad


GRAD = _loss_and_grad()


def batches(x, y, epochs):
    return [(x[i:i + BATCH], y[i:i + BATCH]) for _ in range(epochs) for i in range(0, len(x), BATCH)]


def reference(data, lr, accumulate=1, global_clipnorm=None, weights=None):
    """Per applied update: (gradient applied, clipped gradient, weights before, after).

    Plain SGD in numpy; a batch whose gradient is not finite is skipped, as
    the LossScaleOptimizer skips it."""
    ws = [w.copy() for w in (WEIGHTS if weights is None else weights)]
    records, pending = [], []
    for x, y in data:
        g = GRAD(ws, x, y)
        if not all(np.isfinite(a).all() for a in g):
            continue
        pending.append(g)
        if len(pending) < accumulate:
            continue
        applied = [np.mean([p[j] for p in pending], axis=0).astype("float32") for j in range(4)]
        pending = []
        clipped = applied
        if global_clipnorm is not None:
            clipped = [a * np.float32(min(1.0, global_clipnorm / norm(applied))) for a in applied]
        before = [w.copy() for w in ws]
        ws = [w - np.float32(lr) * c for w, c in zip(ws, clipped)]
        records.append((applied, clipped, before, [w.copy() for w in ws]))
    return records, ws


def norm(arrays):
    return float(np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays)))


def columns(records):
    """The reference value of every column GradientNormLogger writes, per update."""
    layers = {"hidden": [0, 1], "out": [2, 3]}
    out = {"grad_norm": [norm(g) for g, _, _, _ in records],
           "grad_norm_clipped": [norm(c) for _, c, _, _ in records]}
    for name, idx in layers.items():
        out[f"grad_norm/mlp/{name}"] = [norm([g[i] for i in idx]) for g, _, _, _ in records]
        out[f"weight_norm/mlp/{name}"] = [norm([a[i] for i in idx]) for _, _, _, a in records]
        out[f"update_ratio/mlp/{name}"] = [
            norm([a[i] - b[i] for i in idx]) / norm([b[i] for i in idx]) for _, _, b, a in records]
    return out


# -- Keras --------------------------------------------------------------------------------
def build(optimizer):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="mlp")
    model.compile(optimizer, "mse")
    model.set_weights(WEIGHTS)
    return model


def fit(model, callbacks, epochs=2, x=X, y=Y):
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def history(h):
    return {k: [float(v) for v in vs] for k, vs in h.history.items()}


def left_behind(model):
    """What a fit could leave on the model: per-call patches, metrics."""
    return {"patched": sorted({"apply", "stateless_apply"} & set(model.optimizer.__dict__)
                              | {"train_step"} & set(model.__dict__)),
            "metrics": [m.name for m in model.metrics], "metrics_variables": len(model.metrics_variables),
            "optimizer_variables": len(model.optimizer.variables) if model.optimizer.built else None}


class StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append({k: float(v) for k, v in logs.items()})


def log_dir(name):
    return os.path.join(OUT, name)


def main():
    result = {"backend": BACKEND}
    clock = [time.perf_counter()]

    def lap(name):  # seconds per scenario, for the record
        now = time.perf_counter()
        result.setdefault("seconds", {})[name] = round(now - clock[0], 2)
        clock[0] = now

    # Everything measured, and the running values in every step's logs.
    model = build(keras.optimizers.SGD(0.05))
    steps = StepLogs()
    h = fit(model, [GradientNormLogger(log_dir=log_dir("full"), per_layer=True, weight_norms=True,
                                       batch_logs=True), steps])
    plain = build(keras.optimizers.SGD(0.05))
    fit(plain, [])
    as_plain = left_behind(plain)  # what a plain fit leaves on a model
    records, _ = reference(batches(X, Y, 2), 0.05)
    result["full"] = {"history": history(h), "steps": steps.seen, "reference": columns(records),
                      "plain": as_plain, "after": left_behind(model),
                      "weights_vs_plain": max(float(np.abs(a - b).max())
                                              for a, b in zip(model.get_weights(), plain.get_weights()))}

    lap("full")

    # 60 samples: a last batch of 12 (JAX compiles the step again mid-epoch).
    steps = StepLogs()
    h = fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(log_dir=log_dir("partial"), per_layer=True,
                                                                   weight_norms=True, batch_logs=True), steps],
            x=X[:60], y=Y[:60])
    records, _ = reference(batches(X[:60], Y[:60], 2), 0.05)
    result["partial"] = {"history": history(h), "steps": steps.seen, "reference": columns(records)}
    lap("partial")

    # Clipping.
    h = fit(build(keras.optimizers.SGD(0.05, global_clipnorm=0.5)),
            [GradientNormLogger(log_dir=log_dir("clip"))], epochs=1)
    records, _ = reference(batches(X, Y, 1), 0.05, global_clipnorm=0.5)
    result["clip"] = {"history": history(h), "reference": columns(records)}

    lap("clip")

    # Gradient accumulation, every 2nd update recorded.
    h = fit(build(keras.optimizers.SGD(0.05, gradient_accumulation_steps=2)),
            [GradientNormLogger(log_dir=log_dir("accumulate"), update_freq=2)])
    records, _ = reference(batches(X, Y, 2), 0.05, accumulate=2)
    result["accumulate"] = {"history": history(h), "reference": columns(records)}

    lap("accumulate")

    # A loss-scale optimizer (unscaled norms) skipping non-finite updates, counted.
    x = X.copy()
    x[20, 0] = np.inf  # batch 2 of each epoch

    def lso():
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))

    h = fit(build(lso()), [GradientNormLogger(log_dir=log_dir("nonfinite"))], x=x)
    records, _ = reference(batches(x, Y, 2), 0.01)
    steps = StepLogs()
    stopped = fit(build(lso()), [GradientNormLogger(stop_on_nonfinite=True), steps], epochs=3, x=x)
    result["nonfinite"] = {"history": history(h), "reference": columns(records),
                           "stopped_history": history(stopped), "stopped_steps": len(steps.seen)}

    lap("nonfinite")

    # Update numbers run on across fits.
    model = build(keras.optimizers.SGD(0.05))
    fit(model, [GradientNormLogger(update_freq=3, log_dir=log_dir("two_fits"))])
    fit(model, [GradientNormLogger(update_freq=3, log_dir=log_dir("two_fits"))])
    records, _ = reference(batches(X, Y, 4), 0.05)
    result["two_fits"] = {"reference": columns(records)}

    lap("two_fits")

    # A full record buffer keeps the latest records, with a warning per epoch.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(log_dir=log_dir("capacity"), capacity=2)])
    result["capacity"] = {"warnings": [str(w.message) for w in caught if "GradientNormLogger" in str(w.message)]}
    lap("capacity")

    # A MultiOptimizer (each sub-optimizer applies its part): the first
    # update's gradient at the initial weights.
    hidden, head = keras.optimizers.SGD(0.05), keras.optimizers.Adam(0.01)
    multi = keras.optimizers.MultiOptimizer(lambda variable: hidden if "hidden" in variable.path else head)
    h = fit(build(multi), [GradientNormLogger(log_dir=log_dir("multi"))], epochs=1)
    result["multi"] = {"history": history(h)}
    lap("multi")

    # A fit failing mid-epoch leaves nothing behind; a plain fit then trains as usual.
    model = build(keras.optimizers.SGD(0.05))

    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise RuntimeError("boom")

    try:
        fit(model, [GradientNormLogger(log_dir=log_dir("failed"), per_layer=True), Fail()])
        raise AssertionError("the fit did not fail")
    except RuntimeError as e:
        assert str(e) == "boom", e
    after_failure = model.get_weights()
    failed = left_behind(model)
    h = fit(model, [], epochs=1)
    two, ws = reference(batches(X, Y, 1)[:2], 0.05)
    _, ws_then = reference(batches(X, Y, 1), 0.05, weights=ws)
    result["failure"] = {
        "plain": as_plain, "after": failed, "after_plain_fit": left_behind(model), "history": history(h),
        "weights_after_failure_vs_reference": max(float(np.abs(a - b).max()) for a, b in zip(after_failure, ws)),
        "weights_then_vs_reference": max(float(np.abs(a - b).max())
                                         for a, b in zip(model.get_weights(), ws_then))}

    lap("failure")
    result["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    with open(os.path.join(OUT, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
