"""Distributed runs for tests/test_distribution.py (real processes).

    python tests/_dist_worker.py mwms INPUTS.npz OUT_DIR INDEX PORT0,PORT1
        One worker of a two-worker `tf.distribute.MultiWorkerMirroredStrategy`
        (TF_CONFIG with two localhost ports; worker 0 is the chief), fitted
        twice with the same callbacks (the second fit runs the step compiled
        for the first).
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
    python tests/_dist_worker.py jax-data-parallel INPUTS.npz OUT_DIR
        The same fit on one JAX CPU device, then under
        `keras.distribution.DataParallel` over two (with validation, between
        two `evaluate()` calls); each twice with the same callbacks (the
        second fit runs the steps compiled for the first).

Each fit: the MLP of INPUTS.npz (initial weights, data), SGD(0.05), batch 16
(8 a replica), shuffle off, 3 epochs, with `ReduceLROnPlateau` (mode "max" on
a falling loss: it halves the rate at every epoch end), keras_trainkit's
`WarmUp(3)` + `CosineDecay(12)` and `GradientNormLogger(log_dir=...)`. Writes
a JSON file: the rate each update used, the weights before each update,
History, the final weights.
"""

import json
import os
import sys

MODE, INPUTS, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
if MODE == "mwms":
    INDEX, PORTS = int(sys.argv[4]), sys.argv[5].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in PORTS]},
                                          "task": {"type": "worker", "index": INDEX}})

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_trainkit import callbacks as C  # noqa: E402

DATA = np.load(INPUTS)
X, Y = DATA["x"], DATA["y"]
WEIGHTS = [DATA[f"w{i}"] for i in range(4)]


class Record(keras.callbacks.Callback):
    """The rate the next update uses and the weights it starts from, per batch."""

    def __init__(self):
        super().__init__()
        self.rates, self.weights = [], []

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # mid-epoch, the values live in the step state
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.weights.append([w.tolist() for w in self.model.get_weights()])


def build():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="mlp")
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.set_weights(WEIGHTS)
    return model


def callbacks(log_dir):
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    return [plateau, C.WarmUp(3), C.CosineDecay(12), C.GradientNormLogger(log_dir=log_dir, per_layer=True)]


def train(model, log_dir, validation_data=None, reused=None):
    """One fit with `callbacks(log_dir)`, or with `reused` (the callbacks of an
    earlier fit of the same model: the fit then runs the step compiled for it)."""
    record = Record()
    history = model.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0, validation_data=validation_data,
                        callbacks=[*(reused or callbacks(log_dir)), record])
    return {"rates": record.rates, "weights_before": record.weights,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "weights": [w.tolist() for w in model.get_weights()]}


def train_twice(model, log_dir, validation_data=None):
    """Two fits with the same callbacks; whether the second one compiled nothing."""
    same = callbacks(log_dir)
    first = train(model, log_dir, validation_data, same)
    kept = model.__dict__.get("_keras_trainkit_compiled_step")
    again = train(model, log_dir, validation_data, same)
    return first, dict(again, reused=kept is not None and model.__dict__.get("_keras_trainkit_compiled_step") is kept)


def work_around_keras_multi_worker_bugs(model, strategy):
    """Keras 3.15's TensorFlow trainer cannot fit under a multi-worker
    strategy (keras-team/keras#20585, tensorflow/tensorflow#72388), callbacks
    or not: before the first epoch it reduces the whole (x, y) batch
    structure with one `strategy.reduce` (which takes one tensor with more
    than one worker), and every step it reduces the scalar logs with
    `strategy.reduce("MEAN", v, axis=0)` (no axis 0). Test-side fixes, leaving
    the training itself as Keras does it: the first batch's local values for
    the symbolic build; step logs of shape (1,)."""
    import tensorflow as tf

    symbolic_build = model._maybe_symbolic_build

    def first_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda t: strategy.experimental_local_results(t)[0], next(it))
                break
        return symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = first_local_batch
    train_step = model.train_step
    model.train_step = lambda data: {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}


def main():
    if MODE == "mwms":
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = build()
        work_around_keras_multi_worker_bugs(model, strategy)
        result, result["again"] = train_twice(model, os.path.join(OUT, f"logs{INDEX}"))
        result["replicas"] = strategy.num_replicas_in_sync
        name = f"worker{INDEX}.json"
    else:
        import jax

        result = dict(zip(("single", "single_again"), train_twice(build(), os.path.join(OUT, "jax_single"))))
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        model = build()
        # With validation, after an evaluate() (a compiled test step made
        # before the logger's metric joined the model) and before another;
        # a second fit with the same callbacks runs the first one's steps.
        before = model.evaluate(X, Y, batch_size=16, verbose=0)
        result["data_parallel"], result["data_parallel_again"] = train_twice(
            model, os.path.join(OUT, "jax_data_parallel"), validation_data=(X, Y))
        result["evaluate"] = [before, model.evaluate(X, Y, batch_size=16, verbose=0)]
        result["devices"] = len(jax.devices())
        result["kernel_sharding"] = type(model.trainable_variables[0].value.sharding).__name__
        name = "jax.json"
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
