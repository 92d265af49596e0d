"""Keras' TensorBoard callback without per-batch work when it logs per epoch."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_trainkit.callbacks import _summaries


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` without per-batch work when it logs per epoch.

    Same arguments, defaults and files as Keras' callback. Keras' callback runs
    Python on every batch even with `update_freq="epoch"`: its batch-end hook
    calls `summary.scalar` for every log entry (a no-op without an active
    writer, but a dozen eager TensorFlow operations each), which costs about
    10% of a small model's step time. When nothing per-batch is asked for
    (`update_freq="epoch"`, `profile_batch=0`, `write_steps_per_second=False`:
    the defaults) this subclass drops those hooks and writes the train graph at
    the end of the first epoch instead of after the first batch. The epoch
    scalars (`epoch_loss`, ..., and `evaluation_loss_vs_iterations`, ...:
    the same tags, steps and values) are written
    as event records directly rather than through one eager `summary.scalar`
    call each (about half a millisecond apiece). Otherwise it is exactly
    Keras' callback.

    keras_trainkit's callbacks that write scalars (learning-rate callbacks,
    `GradientNormLogger`) find it in the callback list and write into its
    run directories, as they do with Keras' own.

    Example:
        >>> model.fit(x, y, callbacks=[WarmUp(100), CosineDecay(5000),
        ...                             GradientNormLogger(update_freq=100), TensorBoard("logs")])
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0,
                 embeddings_freq=0, embeddings_metadata=None):
        super().__init__(log_dir=log_dir, histogram_freq=histogram_freq, write_graph=write_graph,
                         write_images=write_images, write_steps_per_second=write_steps_per_second,
                         update_freq=update_freq, profile_batch=profile_batch,
                         embeddings_freq=embeddings_freq, embeddings_metadata=embeddings_metadata)
        self.batch_hooks = not (update_freq == "epoch" and not self._should_trace and not write_steps_per_second)
        self._epoch_writers: dict[str, _summaries.ScalarWriter] = {}  # by run dir
        if not self.batch_hooks:
            # Instance attributes shadowing the subclass hooks with Keras' own
            # no-op defaults, which `CallbackList` recognises as not overridden.
            base = keras.callbacks.Callback
            self.on_train_batch_begin = base.on_train_batch_begin.__get__(self)
            self.on_train_batch_end = base.on_train_batch_end.__get__(self)
            self.on_test_batch_begin = base.on_test_batch_begin.__get__(self)

    def on_epoch_end(self, epoch, logs=None):
        if not self.batch_hooks and self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False
        super().on_epoch_end(epoch, logs)

    def _log_epoch_metrics(self, epoch, logs):
        """Keras' epoch scalars, written as records (see the class docstring)."""
        if not logs:
            return
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        train_logs = self._collect_learning_rate(train_logs)
        if self.write_steps_per_second:
            train_logs["steps_per_second"] = self._compute_steps_per_second()
        self._write(self._train_dir, {f"epoch_{name}": value for name, value in train_logs.items()}, epoch)
        self._write(self._val_dir, {f"epoch_{name}": value for name, value in val_logs.items()}, epoch)

    def on_test_end(self, logs=None):
        optimizer = self.model.optimizer
        if logs and optimizer and hasattr(optimizer, "iterations"):
            step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            self._write(self._val_dir, {f"evaluation_{name}_vs_iterations": value for name, value in logs.items()},
                        step)
        self._pop_writer()

    def _write(self, run_dir, scalars, step):
        if not scalars:
            return
        run_dir = os.fspath(run_dir)
        writer = self._epoch_writers.get(run_dir)
        if writer is None:
            writer = self._epoch_writers[run_dir] = _summaries.ScalarWriter([run_dir])
        writer.write({tag: (np.array([step]), np.array([float(value)])) for tag, value in scalars.items()})

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        for writer in self._epoch_writers.values():
            writer.close()
        self._epoch_writers = {}
