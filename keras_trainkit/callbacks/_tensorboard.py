"""Keras' TensorBoard callback without per-batch work when it logs per epoch."""

from __future__ import annotations

import numpy as np

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit.callbacks import _summaries

__all__ = ["TensorBoard"]


class TensorBoard(hooks.TensorBoardHooks):
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

    Args:
        log_dir: As in `keras.callbacks.TensorBoard`. Defaults to `"logs"`.
        histogram_freq: As in Keras. Defaults to `0`.
        write_graph: As in Keras. Defaults to `True`.
        write_images: As in Keras. Defaults to `False`.
        write_steps_per_second: As in Keras (per-batch work). Defaults to `False`.
        update_freq: As in Keras; anything but `"epoch"` means per-batch work.
            Defaults to `"epoch"`.
        profile_batch: As in Keras (per-batch work when set). Defaults to `0`.
        embeddings_freq: As in Keras. Defaults to `0`.
        embeddings_metadata: As in Keras. Defaults to `None`.

    Examples:
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
        self.batch_hooks = not (update_freq == "epoch" and not self.traces_batches() and not write_steps_per_second)
        self._epoch_writers: dict[str, _summaries.ScalarWriter] = {}  # by run dir
        if not self.batch_hooks:
            # Keras' own no-op hooks, which `CallbackList` recognises as not
            # overridden, shadowing the per-batch hooks of Keras' callback.
            for name in ("on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin"):
                setattr(self, name, hooks.default_hook(self, name))

    def on_epoch_end(self, epoch, logs=None):
        if not self.batch_hooks:
            self.write_train_graph_once()
        super().on_epoch_end(epoch, logs)

    def write_scalars(self, run_dir, scalars, step):
        """Writes `{tag: value}` at `step` into `run_dir` as event records."""
        if not scalars:
            return
        writer = self._epoch_writers.get(run_dir)
        if writer is None:
            writer = self._epoch_writers[run_dir] = _summaries.ScalarWriter([run_dir])
        writer.write({tag: (np.array([step]), np.array([float(value)])) for tag, value in scalars.items()})

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        for writer in self._epoch_writers.values():
            writer.close()
        self._epoch_writers = {}
