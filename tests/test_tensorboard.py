"""keras_trainkit's TensorBoard: Keras' files, without per-batch hooks at epoch frequency."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_trainkit import callbacks as C


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    return x, (x @ rng.normal(size=(5, 1))).astype("float32")


def run(callback):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, shuffle=False, verbose=0, callbacks=[callback])
    return model


def read_run(run_dir):
    """{tag: [(step, value)]} for every scalar, with tensorboard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if events and events[0].tensor_proto.dtype == tf.float32.as_datatype_enum:  # scalars
            out[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events]
    return out


def batch_hooks(callback):
    from keras.src.utils.python_utils import is_default

    return [name for name in ("on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
                              "on_test_batch_end") if not is_default(getattr(callback, name))]


def count_summary_calls(callback):
    calls = []
    scalar = callback.summary.scalar

    def counting(name, *args, **kwargs):
        calls.append(name)
        return scalar(name, *args, **kwargs)

    callback._summary_module = type("Summary", (), {"__getattr__": lambda _, a: getattr(tf.summary, a),
                                            "scalar": staticmethod(counting)})()
    return calls


def test_epoch_frequency_has_no_batch_hooks_keras_has(tmp_path):
    assert batch_hooks(C.TensorBoard(str(tmp_path))) == []
    assert batch_hooks(keras.callbacks.TensorBoard(str(tmp_path))) == [
        "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin"]
    # Anything per-batch falls back to Keras' hooks.
    for kwargs in [dict(update_freq="batch"), dict(update_freq=10), dict(write_steps_per_second=True),
                   dict(profile_batch=2)]:
        cb = C.TensorBoard(str(tmp_path), **kwargs)
        assert cb.batch_hooks and len(batch_hooks(cb)) == 3, kwargs


def test_no_per_batch_summary_calls(tmp_path):
    ours, theirs = C.TensorBoard(str(tmp_path / "a")), keras.callbacks.TensorBoard(str(tmp_path / "b"))
    ours_calls, their_calls = count_summary_calls(ours), count_summary_calls(theirs)
    run(ours)
    run(theirs)
    assert ours_calls and all(not name.startswith("batch_") for name in ours_calls)
    # Keras' callback calls it for each of the 2 logs on each of 3 x 3 batches.
    assert sum(name.startswith("batch_") for name in their_calls) == 18
    assert sorted(ours_calls) == sorted(n for n in their_calls if not n.startswith("batch_"))


@pytest.mark.parametrize("kwargs", [{}, dict(update_freq="batch")])
def test_writes_what_keras_writes(tmp_path, kwargs):
    ours, theirs = tmp_path / "ours", tmp_path / "keras"
    a = run(C.TensorBoard(str(ours), **kwargs))
    b = run(keras.callbacks.TensorBoard(str(theirs), **kwargs))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    for sub in ("train", "validation"):
        got, want = read_run(str(ours / sub)), read_run(str(theirs / sub))
        assert set(got) == set(want) and "epoch_loss" in got
        for tag in want:
            np.testing.assert_allclose(got[tag], want[tag], rtol=1e-6)
    if kwargs:
        assert "batch_loss" in read_run(str(ours / "train"))


def test_keras_trainkit_scalars_join_its_run_and_deepcopy(tmp_path):
    tb = C.TensorBoard(str(tmp_path))
    clone = copy.deepcopy(tb)
    assert clone.on_train_batch_end.__self__ is clone and batch_hooks(clone) == []
    run_callbacks = [C.WarmUp(4), C.GradientNormLogger(update_freq=2), tb]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=run_callbacks)
    scalars = read_run(str(tmp_path / "train"))
    assert [s for s, _ in scalars["grad_norm"]] == [2, 4, 6, 8]
    assert [s for s, _ in scalars["learning_rate"]][:4] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["epoch_loss"]] == [0, 1]


@pytest.mark.parametrize("without_tensorflow", [False, True])
def test_scalar_writer_files_read_back(tmp_path, monkeypatch, without_tensorflow):
    """Our event files (TFRecord, or tensorboard's writer as the fallback)."""
    import builtins

    from keras_trainkit.callbacks import _summaries

    if without_tensorflow:
        real_import = builtins.__import__

        def no_tf(name, *args, **kwargs):
            if name == "tensorflow":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_tf)
    writer = _summaries.ScalarWriter([str(tmp_path / "a"), str(tmp_path / "b")])
    writer.write({"x": (np.array([1, 2]), np.array([0.5, 0.25])), "y": (np.array([2]), np.array([3.0]))})
    writer.write({"x": (np.array([3]), np.array([0.125]))})
    writer.close()
    monkeypatch.undo()
    import os

    names = os.listdir(tmp_path / "a")
    assert len(names) == 1 and ("trainkit" in names[0]) is not without_tensorflow
    for run_dir in ("a", "b"):
        scalars = read_run(str(tmp_path / run_dir))
        assert scalars == {"x": [(1, 0.5), (2, 0.25), (3, 0.125)], "y": [(2, 3.0)]}
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "a"))
    acc.Reload()
    assert set(acc.PluginTagToContent("scalars")) == {"x", "y"}
