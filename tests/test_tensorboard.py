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


def test_no_summary_ops_per_batch_or_per_scalar(tmp_path):
    ours, theirs = C.TensorBoard(str(tmp_path / "a")), keras.callbacks.TensorBoard(str(tmp_path / "b"))
    ours_calls, their_calls = count_summary_calls(ours), count_summary_calls(theirs)
    run(ours)
    run(theirs)
    # Keras' callback calls it for each of the 2 logs on each of 3 x 3 batches,
    # and for each epoch scalar; ours writes the epoch scalars as records.
    assert sum(name.startswith("batch_") for name in their_calls) == 18
    assert sum(name.startswith("epoch_") for name in their_calls) == 3 * 5  # loss, mae, lr; val loss, mae
    assert len(their_calls) == 18 + 3 * 5 + 3 * 2  # and evaluation_{loss,mae}_vs_iterations
    assert ours_calls == []
    got = read_run(str(tmp_path / "a" / "train")) | {
        "val_" + k: v for k, v in read_run(str(tmp_path / "a" / "validation")).items()}
    assert sorted(got) == sorted(["epoch_loss", "epoch_mae", "epoch_learning_rate", "val_epoch_loss",
                                  "val_epoch_mae", "val_evaluation_loss_vs_iterations",
                                  "val_evaluation_mae_vs_iterations"])
    assert all(len(v) == 3 for v in got.values())


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
    """Our event files, written by TensorFlow's record writer or, when
    TensorFlow cannot be imported, by tensorboard's own (same name, same bytes)."""
    import builtins

    from keras_trainkit.callbacks import _summaries

    if without_tensorflow:
        real_import = builtins.__import__

        def no_tf(name, *args, **kwargs):
            if name == "tensorflow":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_tf)
    used = []
    real_file = _summaries._TensorBoardFile
    monkeypatch.setattr(_summaries, "_TensorBoardFile", lambda path: used.append(path) or real_file(path))
    writer = _summaries.ScalarWriter([str(tmp_path / "a"), str(tmp_path / "b")])
    writer.write({"x": (np.array([1, 2]), np.array([0.5, 0.25])), "y": (np.array([2]), np.array([3.0]))})
    writer.write({"x": (np.array([3]), np.array([0.125]))})
    writer.close()
    monkeypatch.undo()
    import os

    names = os.listdir(tmp_path / "a")
    assert len(names) == 1 and "trainkit" in names[0]
    assert len(used) == (2 if without_tensorflow else 0)
    for run_dir in ("a", "b"):
        scalars = read_run(str(tmp_path / run_dir))
        assert scalars == {"x": [(1, 0.5), (2, 0.25), (3, 0.125)], "y": [(2, 3.0)]}
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "a"))
    acc.Reload()
    assert set(acc.PluginTagToContent("scalars")) == {"x", "y"}


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**31, 2**40, -1])
@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -3.25e-8, float("inf"), 3.4e38])
@pytest.mark.parametrize("tag, with_metadata", [("learning_rate", True), ("grad_norm/dense_1/kernel", False),
                                                ("é" * 200, True)])
def test_scalar_event_bytes_are_protobufs(step, value, tag, with_metadata):
    from tensorboard.compat.proto import (
        event_pb2,
        summary_pb2,
        tensor_pb2,
        tensor_shape_pb2,
        types_pb2,
    )
    from tensorboard.plugins.scalar import metadata

    from keras_trainkit.callbacks._summaries import scalar_event

    meta = metadata.create_summary_metadata(display_name=tag, description="") if with_metadata else None
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    float_val=[value])
    want = event_pb2.Event(wall_time=1796217755.25, step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta)])).SerializeToString()
    got = scalar_event(1796217755.25, step, tag, value, meta.SerializeToString() if meta else b"")
    assert got == want
    # And what tensorboard parses back.
    event = event_pb2.Event.FromString(got)
    assert (event.step, event.summary.value[0].tag) == (step, tag)
    assert float(tf.make_ndarray(event.summary.value[0].tensor)) == np.float32(value)


def test_scalar_events_batch_matches_one_by_one():
    from keras_trainkit.callbacks._summaries import scalar_event, scalar_events

    rng = np.random.default_rng(0)
    steps = np.concatenate([[0, 1, 127, 128, 129, 16384, 2**40, -5], rng.integers(0, 10**6, 50)])
    values = np.concatenate([[0.0, -0.0, np.inf, -np.inf, 1e-30, 3e38, 1.0, 2.0], rng.normal(size=50)])
    for tag, meta in [("lr", b"\x12\x0a\x0a\x08scalars"), ("a/" + "x" * 300, b"")]:
        for wall in (0.0, 1796217755.125):
            got = scalar_events(wall, steps, tag, values, meta)
            want = [scalar_event(wall, int(s), tag, float(np.float32(v)), meta if i == 0 else b"")
                    for i, (s, v) in enumerate(zip(steps, values))]
            assert got == want
    assert scalar_events(1.0, [], "x", []) == []


def test_writers_share_one_events_file_per_run_dir(tmp_path):
    import os

    from keras_trainkit.callbacks import _summaries

    a, b = _summaries.ScalarWriter([str(tmp_path / "r")]), _summaries.ScalarWriter([str(tmp_path / "r")])
    a.write({"x": (np.array([1]), np.array([1.0]))})
    b.write({"y": (np.array([1]), np.array([2.0]))})
    a.close()
    b.write({"y": (np.array([2]), np.array([3.0]))})  # the file stays open for b
    b.close()
    def open_here():  # (a fit interrupted by an exception elsewhere leaves its file open)
        return [d for d in _summaries._shared_files if d.startswith(str(tmp_path))]

    assert len(os.listdir(tmp_path / "r")) == 1 and not open_here()
    assert read_run(str(tmp_path / "r")) == {"x": [(1, 1.0)], "y": [(1, 2.0), (2, 3.0)]}
    # In a fit: the LR callbacks, GradientNormLogger and our TensorBoard write
    # one keras_trainkit file next to Keras' own.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        C.WarmUp(4), C.CosineDecay(10), C.GradientNormLogger(update_freq=2), C.TensorBoard(str(tmp_path / "logs"))])
    names = os.listdir(tmp_path / "logs" / "train")
    assert len([n for n in names if n.endswith(".trainkit.v2")]) == 1, names
    assert {"learning_rate", "grad_norm", "epoch_loss"} <= set(read_run(str(tmp_path / "logs" / "train")))
    assert not open_here()
