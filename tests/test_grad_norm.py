"""GradientNormLogger against norms computed independently with a GradientTape."""

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit.callbacks import GradientNormLogger

N, BATCH = 64, 16


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    return x, y


def build(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(optimizer, "mse")
    return model


def fit(model, callbacks, epochs=2, x=None, y=None, **kw):
    if x is None:
        x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks, **kw)


def reference_run(optimizer, epochs=2, accumulate=1, x=None, y=None):
    """Manual loop: per update, the applied gradient, weights before and after."""
    if x is None:
        x, y = data()
    model = build(optimizer)
    records = []
    pending = []
    for _ in range(epochs):
        for i in range(0, len(x), BATCH):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.mean_squared_error(y[i:i + BATCH], model(x[i:i + BATCH])))
            grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]
            pending.append(grads)
            before = [v.numpy().copy() for v in model.trainable_variables]
            model.optimizer.apply(grads, model.trainable_variables)
            if len(pending) == accumulate:
                applied = [np.mean([p[j] for p in pending], axis=0) for j in range(len(grads))]
                after = [v.numpy().copy() for v in model.trainable_variables]
                records.append((applied, before, after))
                pending = []
    return model, records


def global_norm(arrays):
    return float(np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays)))


def read_scalars(run_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    events = sorted(acc.Tensors(tag), key=lambda e: e.step)
    return np.array([e.step for e in events]), np.array([float(tf.make_ndarray(e.tensor_proto)) for e in events])


def test_norms_match_gradient_tape_per_update(tmp_path):
    logger = GradientNormLogger(log_dir=str(tmp_path), per_layer=True, weight_norms=True)
    model = build(keras.optimizers.SGD(0.05))
    history = fit(model, [logger])
    _, records = reference_run(keras.optimizers.SGD(0.05))
    run = str(tmp_path / "train")
    steps, norms = read_scalars(run, "grad_norm")
    assert list(steps) == list(range(1, 9))
    expected = [global_norm(g) for g, _, _ in records]
    np.testing.assert_allclose(norms, expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["grad_norm"], [np.mean(expected[:4]), np.mean(expected[4:])], rtol=1e-5)
    # Per layer: kernel and bias of each Dense layer.
    for layer, idx in (("hidden", [0, 1]), ("out", [2, 3])):
        _, got = read_scalars(run, f"grad_norm/sequential/{layer}")
        np.testing.assert_allclose(got, [global_norm([g[i] for i in idx]) for g, _, _ in records], rtol=1e-5)
        _, got = read_scalars(run, f"weight_norm/sequential/{layer}")
        np.testing.assert_allclose(got, [global_norm([a[i] for i in idx]) for _, _, a in records], rtol=1e-5)
        _, got = read_scalars(run, f"update_ratio/sequential/{layer}")
        ratio = [global_norm([a[i] - b[i] for i in idx]) / global_norm([b[i] for i in idx]) for _, b, a in records]
        np.testing.assert_allclose(got, ratio, rtol=1e-4)
    assert history.history["grad_nonfinite"] == [0, 0]


@pytest.mark.parametrize("clip", [dict(global_clipnorm=0.5), dict(clipnorm=0.3), dict(clipvalue=0.1)])
def test_clipped_norm(tmp_path, clip):
    model = build(keras.optimizers.SGD(0.05, **clip))
    fit(model, [GradientNormLogger(log_dir=str(tmp_path))])
    _, records = reference_run(keras.optimizers.SGD(0.05, **clip))
    _, raw = read_scalars(str(tmp_path / "train"), "grad_norm")
    _, clipped = read_scalars(str(tmp_path / "train"), "grad_norm_clipped")

    def clip_np(grads):
        if "global_clipnorm" in clip:
            n = global_norm(grads)
            return [g * min(1.0, clip["global_clipnorm"] / n) for g in grads]
        if "clipnorm" in clip:
            return [g * min(1.0, clip["clipnorm"] / global_norm([g])) for g in grads]
        return [np.clip(g, -clip["clipvalue"], clip["clipvalue"]) for g in grads]

    np.testing.assert_allclose(raw, [global_norm(g) for g, _, _ in records], rtol=1e-5)
    np.testing.assert_allclose(clipped, [global_norm(clip_np(g)) for g, _, _ in records], rtol=1e-5)
    assert np.all(clipped <= raw + 1e-6)


def test_training_unchanged_and_saving_untouched(tmp_path):
    plain = build(keras.optimizers.Adam(0.01))
    fit(plain, [])
    logged = build(keras.optimizers.Adam(0.01))
    fit(logged, [GradientNormLogger(per_layer=True, weight_norms=True)])
    for a, b in zip(plain.get_weights(), logged.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [v.shape for v in logged.optimizer.variables] == [v.shape for v in plain.optimizer.variables]
    assert "apply" not in logged.optimizer.__dict__ and "train_step" not in logged.__dict__
    path = str(tmp_path / "m.keras")
    logged.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.optimizer.variables) == len(plain.optimizer.variables)
    fit(loaded, [GradientNormLogger()], epochs=1)
    fit(plain, [], epochs=1)
    for a, b in zip(plain.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_update_freq_and_no_reset_on_second_fit(tmp_path):
    model = build(keras.optimizers.SGD(0.05))
    fit(model, [GradientNormLogger(update_freq=3, log_dir=str(tmp_path))], epochs=2)
    fit(model, [GradientNormLogger(update_freq=3, log_dir=str(tmp_path))], epochs=2)
    _, records = reference_run(keras.optimizers.SGD(0.05), epochs=4)
    steps, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [3, 6, 9, 12, 15]
    np.testing.assert_allclose(norms, [global_norm(records[s - 1][0]) for s in steps], rtol=1e-5)


def test_gradient_accumulation_logs_the_applied_gradient(tmp_path):
    model = build(keras.optimizers.SGD(0.05, gradient_accumulation_steps=2))
    history = fit(model, [GradientNormLogger(log_dir=str(tmp_path))])
    _, records = reference_run(keras.optimizers.SGD(0.05, gradient_accumulation_steps=2), accumulate=2)
    steps, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [1, 2, 3, 4]
    expected = [global_norm(g) for g, _, _ in records]
    np.testing.assert_allclose(norms, expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["grad_norm"], [np.mean(expected[:2]), np.mean(expected[2:])], rtol=1e-5)


def test_loss_scale_optimizer_reports_unscaled_norms(tmp_path):
    model = build(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=1024.0))
    fit(model, [GradientNormLogger(log_dir=str(tmp_path))])
    _, records = reference_run(keras.optimizers.SGD(0.05))
    _, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    np.testing.assert_allclose(norms, [global_norm(g) for g, _, _ in records], rtol=1e-4)


def test_sparse_embedding_gradients_with_repeated_ids(tmp_path):
    ids = np.array([[1, 1, 2], [3, 1, 0]] * 8, dtype="int32")
    target = np.ones((16, 1), "float32")

    def make():
        keras.utils.set_random_seed(1)
        m = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(5, 2),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
        m.compile(keras.optimizers.SGD(0.1), "mse")
        return m

    model = make()
    model.fit(ids, target, batch_size=16, epochs=1, verbose=0, callbacks=[GradientNormLogger(log_dir=str(tmp_path))])
    ref = make()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(target, ref(ids)))
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, ref.trainable_variables)]
    _, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    np.testing.assert_allclose(norms, [global_norm(grads)], rtol=1e-5)


def test_nonfinite_gradients_counted_and_optionally_stop(tmp_path):
    x, y = data()
    x = x.copy()
    x[20, 0] = np.inf  # batch 2 of each epoch
    # The loss-scale optimizer skips a non-finite update, so the weights stay finite.
    def lso():
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))

    history = fit(build(lso()), [GradientNormLogger(log_dir=str(tmp_path))], x=x, y=y)
    assert history.history["grad_nonfinite"] == [1, 2]
    assert np.isfinite(history.history["grad_norm"]).all()
    # The skipped updates are counted, not recorded: TensorBoard has one
    # finite point per applied update, numbered by applied updates.
    steps, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [1, 2, 3, 4, 5, 6] and np.isfinite(norms).all()
    history = fit(build(lso()), [GradientNormLogger(stop_on_nonfinite=True)], x=x, y=y, epochs=3)
    assert len(history.history["grad_nonfinite"]) == 1  # stopped inside epoch 1


def test_full_buffer_keeps_the_latest_records_and_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"2 TensorBoard records were dropped.*`capacity` \(now 2\)"):
        fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(log_dir=str(tmp_path), capacity=2)])
    _, records = reference_run(keras.optimizers.SGD(0.05))
    steps, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [3, 4, 7, 8]
    np.testing.assert_allclose(norms, [global_norm(records[s - 1][0]) for s in steps], rtol=1e-5)


def test_keras_tensorboard_in_the_list_shares_the_run(tmp_path):
    tb = keras.callbacks.TensorBoard(str(tmp_path))
    fit(build(keras.optimizers.SGD(0.05)), [tb, GradientNormLogger(update_freq=2)])
    steps, _ = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [2, 4, 6, 8]
    _, loss = read_scalars(str(tmp_path / "train"), "epoch_loss")
    assert len(loss) == 2


def test_deepcopy_and_bad_arguments():
    logger = GradientNormLogger(update_freq=5, stop_on_nonfinite=True)
    clone = copy.deepcopy(logger)
    assert clone.update_freq == 5 and clone.on_train_batch_end.__self__ is clone
    for kwargs, arg in [(dict(update_freq=0), "update_freq"), (dict(update_freq=1.5), "update_freq"),
                        (dict(per_layer="yes"), "per_layer"), (dict(capacity=0), "capacity"),
                        (dict(weight_norms=1), "weight_norms"), (dict(stop_on_nonfinite=None), "stop_on_nonfinite")]:
        with pytest.raises(ValueError, match=f"`{arg}`"):
            GradientNormLogger(**kwargs)


MIRRORED = r"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from keras_trainkit import callbacks as C, schedules as S
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5)).astype("float32"); y = (x @ rng.normal(size=(5, 1))).astype("float32")
def build(lr):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    m.compile(keras.optimizers.SGD(lr), "mse")
    return m
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build(0.05)
    reference = build(S.WarmUp(S.ExponentialDecay(0.05, 4, 0.5), 3))
# The LR callbacks and the logger together, against Keras driven by the schedule object.
cbs = [C.WarmUp(3), C.ExponentialDecay(4, 0.5), C.GradientNormLogger(log_dir=sys.argv[1])]
h = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=cbs)
reference.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
diff = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), reference.get_weights()))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "grad_norm": h.history["grad_norm"],
                  "learning_rate": h.history["learning_rate"], "weight_diff": diff}))
"""


def test_mirrored_strategy_two_cpus_logs_all_reduced_norm(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], capture_output=True,
                         text=True, timeout=240, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["weight_diff"] < 1e-6
    assert result["learning_rate"] == [pytest.approx(0.05)]  # update 3 of WarmUp(3): the peak
    from keras_trainkit import schedules as S

    _, records = reference_run(keras.optimizers.SGD(S.WarmUp(S.ExponentialDecay(0.05, 4, 0.5), 3)), epochs=1)
    expected = [global_norm(g) for g, _, _ in records]
    _, norms = read_scalars(str(tmp_path / "logs" / "train"), "grad_norm")
    np.testing.assert_allclose(norms, expected, rtol=1e-5)
    np.testing.assert_allclose(result["grad_norm"], [np.mean(expected)], rtol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_the_scalars(tmp_path):
    fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(log_dir=str(tmp_path))], epochs=1)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=train&tag=grad_norm"
        deadline, body = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                if body:
                    break
            except Exception:
                time.sleep(1)
        assert body, "tensorboard did not serve the scalars in time"
        assert [row[1] for row in body] == [1, 2, 3, 4]  # [wall_time, step, value]
        _, records = reference_run(keras.optimizers.SGD(0.05), epochs=1)
        np.testing.assert_allclose([row[2] for row in body], [global_norm(g) for g, _, _ in records], rtol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_batch_logs_put_running_means_in_every_step():
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(logs["grad_norm"]))

    history = fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(batch_logs=True), Spy()], epochs=1)
    _, records = reference_run(keras.optimizers.SGD(0.05), epochs=1)
    norms = [global_norm(g) for g, _, _ in records]
    np.testing.assert_allclose(seen, np.cumsum(norms) / np.arange(1, 5), rtol=1e-5)
    assert history.history["grad_norm"] == [pytest.approx(np.mean(norms), rel=1e-5)]

    class KeysSpy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(set(logs))

    seen.clear()
    fit(build(keras.optimizers.SGD(0.05)), [GradientNormLogger(), KeysSpy()], epochs=1)
    assert all(keys == {"loss"} for keys in seen)  # by default the step logs stay as Keras makes them


@pytest.mark.parametrize("kind", ["multi", "trainkit"])
def test_multi_optimizer_and_trainkit_optimizers(tmp_path, kind):
    from keras_trainkit import optimizers as tko

    x, y = data()
    model = build(keras.optimizers.SGD(0.05))  # replaced below
    if kind == "multi":
        hidden, head = keras.optimizers.SGD(0.05), keras.optimizers.Adam(0.01)
        optimizer = keras.optimizers.MultiOptimizer(
            lambda variable: hidden if "hidden" in variable.path else head)
    else:
        optimizer = tko.RAdam(0.01)
    model.compile(optimizer, "mse")
    history = fit(model, [GradientNormLogger(log_dir=str(tmp_path))], epochs=1)
    steps, norms = read_scalars(str(tmp_path / "train"), "grad_norm")
    assert list(steps) == [1, 2, 3, 4]
    # Independent reference: the first update's gradient on the same weights.
    fresh = build(keras.optimizers.SGD(0.05))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y[:BATCH], fresh(x[:BATCH])))
    grads = [g.numpy() for g in tape.gradient(loss, fresh.trainable_variables)]
    assert norms[0] == pytest.approx(global_norm(grads), rel=1e-5)
    assert np.isfinite(history.history["grad_norm"]).all()


def test_tensorflow_free_writer_writes_the_same_bytes_as_tensorflow(tmp_path):
    """Without TensorFlow imported (the jax and torch backends), event files are
    written by tensorboard's own record writer: the same TFRecord bytes."""
    from keras_trainkit.callbacks import _summaries

    records = _summaries.scalar_events(1.5, np.arange(1, 300), "grad_norm", np.linspace(0, 3, 299))
    writer = _summaries._TensorBoardFile(str(tmp_path / "tensorboard"))
    reference = tf.io.TFRecordWriter(str(tmp_path / "tensorflow"))
    for record in records:
        writer.write(record)
        reference.write(record)
    writer.close()
    reference.close()
    assert (tmp_path / "tensorboard").read_bytes() == (tmp_path / "tensorflow").read_bytes()
    assert len(list(tf.data.TFRecordDataset(str(tmp_path / "tensorboard")))) == 299
