"""Keras' TensorBoard callback without per-batch work when it logs per epoch."""

from __future__ import annotations

import keras


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` without per-batch work when it logs per epoch.

    Same arguments, defaults and files as Keras' callback. Keras' callback runs
    Python on every batch even with `update_freq="epoch"`: its batch-end hook
    calls `summary.scalar` for every log entry (a no-op without an active
    writer, but a dozen eager TensorFlow operations each), which costs about
    10% of a small model's step time. When nothing per-batch is asked for
    (`update_freq="epoch"`, `profile_batch=0`, `write_steps_per_second=False`:
    the defaults) this subclass drops those hooks and writes the train graph at
    the end of the first epoch instead of after the first batch. Otherwise it
    is exactly Keras' callback.

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
