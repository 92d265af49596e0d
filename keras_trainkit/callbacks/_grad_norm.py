"""Gradient-norm logging computed inside the compiled train step."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _validation as v
from keras_trainkit.callbacks import _summaries
from keras_trainkit.callbacks._session import Participant, Session

_DEFAULT_CAPACITY = 4096


class GradientNormLogger(Participant):
    """Logs gradient norms of the real update, computed in the train step.

    The optimizer's `apply` is wrapped while the compiled train step is
    traced (the optimizer itself is untouched between steps and after
    `fit()`, however it ends), so the gradients it receives are measured where
    they are used: no extra forward or backward pass and no per-batch Python. Measured per applied update:

    - `grad_norm`: global L2 norm `sqrt(sum_i ||g_i||^2)` of the gradient the
      optimizer applies, before clipping, after loss-scale unscaling
      (`LossScaleOptimizer`, `loss_scale_factor`), of the accumulated gradient
      under `gradient_accumulation_steps`, and of the all-reduced gradient
      under `tf.distribute` strategies;
    - `grad_norm_clipped`: the same after the optimizer's own clipping, when
      `clipnorm`, `clipvalue` or `global_clipnorm` is set;
    - with `per_layer=True`: `grad_norm/<layer>`; with `weight_norms=True`:
      `weight_norm/<layer>` (after the update) and `update_ratio/<layer>`
      (`||w_after - w_before|| / ||w_before||`).

    Epoch logs (History, the progress bar's epoch line): `grad_norm` (and
    `grad_norm_clipped`) is the mean over the epoch's finite updates;
    `grad_nonfinite` counts updates whose gradient had a NaN or inf since the
    start of `fit()`. With `batch_logs=True` the running values also go into
    every step's logs (a live progress bar), at the cost of a host
    conversion per value and step. TensorBoard: with `log_dir`, or a
    `keras.callbacks.TensorBoard` in the same `fit()`, every `update_freq`-th
    update's values are scalars in the `train` run at step `n` = the n-th
    update (no reset on a second `fit()` or a resume). They are recorded into a
    buffer inside the graph and written at each epoch end.

    Args:
        update_freq: Record every `update_freq`-th update for TensorBoard, an
            int >= 1. Defaults to `1`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        per_layer: Also measure each layer's gradient norm. Defaults to `False`.
        weight_norms: Also measure weight norms and update-to-weight ratios per
            layer (keeps a copy of the weights during the step). Defaults to `False`.
        stop_on_nonfinite: Stop training after an update with a non-finite
            gradient (adds a per-batch check). Defaults to `False`.
        batch_logs: Also put the running values into every step's logs.
            Defaults to `False`.
        capacity: Records buffered per epoch for TensorBoard, an int >= 1; older
            records are dropped with a warning when an epoch has more. Defaults
            to `4096`.

    Example:
        >>> model.fit(x, y, callbacks=[GradientNormLogger(update_freq=100, log_dir="logs")])
    """

    def __init__(self, update_freq: int = 1, log_dir: str | None = None, per_layer: bool = False,
                 weight_norms: bool = False, stop_on_nonfinite: bool = False,
                 batch_logs: bool = False, capacity: int = _DEFAULT_CAPACITY):
        super().__init__()
        self.update_freq = v.integer("update_freq", update_freq, low=1)
        self.log_dir = log_dir
        self.per_layer = v.boolean("per_layer", per_layer)
        self.weight_norms = v.boolean("weight_norms", weight_norms)
        self.stop_on_nonfinite = v.boolean("stop_on_nonfinite", stop_on_nonfinite)
        self.batch_logs = v.boolean("batch_logs", batch_logs)
        self.capacity = v.integer("capacity", capacity, low=1)
        if stop_on_nonfinite:
            # Instance attribute: only then does Keras see a batch hook (and
            # give up its asynchronous dispatch).
            self.on_train_batch_end = self._check_nonfinite
        self._state = None
        self._writer = None

    _runtime_attributes = ("_state", "_writer")

    # -- graph side ---------------------------------------------------------------
    def _build_state(self, model):
        variables = list(model.trainable_variables)
        groups: dict[str, list[int]] = {}
        for i, var in enumerate(variables):
            groups.setdefault(var.path.rsplit("/", 1)[0] if "/" in var.path else var.path, []).append(i)
        columns = ["grad_norm"]
        core = hooks.core_optimizer(model.optimizer)
        clipping = core is not None and any(
            getattr(core, a, None) is not None for a in ("clipnorm", "clipvalue", "global_clipnorm"))
        if clipping:
            columns.append("grad_norm_clipped")
        if self.per_layer:
            columns += [f"grad_norm/{g}" for g in groups]
        if self.weight_norms:
            columns += [f"weight_norm/{g}" for g in groups] + [f"update_ratio/{g}" for g in groups]
        import tensorflow as tf

        capacity = self.capacity
        steps_per_epoch = (self.params or {}).get("steps")
        if steps_per_epoch:  # one epoch of records is all a flush ever needs
            capacity = min(capacity, -(-steps_per_epoch // self.update_freq) + 1)
        with model.distribute_strategy.scope():
            def var(value, dtype="float32", name=None):
                return tf.Variable(np.asarray(value, dtype), trainable=False, name=name,
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

            # Record slots: update n (n % update_freq == 0) goes to slot
            # (n // update_freq) % capacity; every other update writes the
            # spare last slot, so recording needs no control flow. The last
            # `capacity` record steps have distinct slots, so a slot's step
            # is known on the host without storing it.
            state = {
                # [sum of norms, sum of clipped norms, finite updates, non-finite updates]
                "acc": var(np.zeros(4), name="grad_norm_accumulators"),
                "values": var(np.zeros((capacity + 1, len(columns))), name="grad_norm_values"),
            }
        state.update(columns=columns, groups=list(groups.values()), group_names=list(groups),
                     clipping=clipping, flushed=0, capacity=capacity)
        return state

    def _measure(self, optimizer, grads, trainable_variables, apply):
        """Runs inside the train step: measures, then applies.

        Kept to few graph ops (a handful per variable plus about ten), since
        it runs every step: one fused `l2_loss` per gradient, one accumulator
        update and one scatter into the record buffer.
        """
        import tensorflow as tf

        s = self._state
        model_vars = list(self.model.trainable_variables)
        index = {id(var): i for i, var in enumerate(model_vars)}
        pairs = [(g, var) for g, var in zip(grads, trainable_variables) if g is not None]
        dense = [_dense(g) for g, _ in pairs]
        core = hooks.core_optimizer(optimizer)
        # Unscale.
        scale = None
        lso = hooks.loss_scale_optimizer(optimizer)
        if lso is not None:
            scale = lso.dynamic_scale
        if core is not None and core.loss_scale_factor is not None:
            scale = core.loss_scale_factor if scale is None else scale * core.loss_scale_factor
        if scale is not None:
            dense = [g / tf.cast(scale, g.dtype) for g in dense]
        # Accumulate.
        is_update = None  # every call applies an update
        if core is not None and core.gradient_accumulation_steps:
            k = core.gradient_accumulation_steps
            acc = [hooks.accumulated_gradient(core, var) for _, var in pairs]
            dense = [(g + tf.cast(a, g.dtype)) / k for g, a in zip(dense, acc)]
            is_update = tf.equal((hooks.raw_iterations(core) + 1) % k, 0)
        clipped = hooks.clip_gradients(core, dense) if s["clipping"] else None
        dense = _all_reduce(dense)
        if clipped is not None:
            clipped = _all_reduce(clipped)
        half_sq = [_half_square_norm(g) for g in dense]  # ||g||^2 / 2, one op each
        norm = _norm_from_halves(half_sq)
        row = [norm]
        if clipped is not None:
            row.append(_norm_from_halves([_half_square_norm(g) for g in clipped]))
        if self.per_layer:
            by_var = {index[id(var)]: q for (_, var), q in zip(pairs, half_sq)}
            for group in s["groups"]:
                row.append(_norm_from_halves([by_var[i] for i in group if i in by_var]))

        step = tf.cast(self._update_count(), "int64") + 1  # this update's number
        if self.weight_norms:
            before = [tf.identity(var.value) for var in model_vars]
            with tf.control_dependencies([*before, step]):
                result = apply(grads, trainable_variables)
            with tf.control_dependencies([] if result is None else [result]):
                after = [tf.cast(var.value, "float32") for var in model_vars]
                before = [tf.cast(b, "float32") for b in before]
                for group in s["groups"]:
                    row.append(_norm_from_halves([tf.nn.l2_loss(after[i]) for i in group]))
                for group in s["groups"]:
                    delta = _norm_from_halves([tf.nn.l2_loss(after[i] - before[i]) for i in group])
                    row.append(tf.math.divide_no_nan(delta, _norm_from_halves([tf.nn.l2_loss(before[i]) for i in group])))
        else:
            # Automatic control dependencies order the read of the update
            # count before `apply` increments it; the norms need no ordering.
            result = apply(grads, trainable_variables)

        finite = tf.math.is_finite(norm)
        clipped_norm = row[1] if s["clipping"] else 0.0
        counted = finite if is_update is None else tf.logical_and(is_update, finite)
        nonfinite = 1.0 if is_update is None else tf.cast(is_update, "float32")
        s["acc"].assign_add(tf.where(counted, tf.stack([norm, clipped_norm, 1.0, 0.0]),
                                     tf.stack([0.0, 0.0, 0.0, nonfinite])))
        capacity, freq = s["capacity"], self.update_freq
        slot = (step // freq) % capacity if freq > 1 else step % capacity
        if freq > 1 or is_update is not None:
            record = tf.equal(step % freq, 0) if freq > 1 else is_update
            if freq > 1 and is_update is not None:
                record = tf.logical_and(record, is_update)
            slot = tf.where(record, slot, tf.constant(capacity, "int64"))
        s["values"].scatter_update(tf.IndexedSlices(tf.stack(row)[None], tf.reshape(slot, [1])))
        return result

    def _update_count(self):
        """Real updates applied before this one (before `iterations` moves)."""
        optimizer = self.model.optimizer
        core = hooks.core_optimizer(optimizer)
        if core is not None and core.gradient_accumulation_steps:
            return hooks.raw_iterations(core) // core.gradient_accumulation_steps
        return optimizer.iterations

    def _logs(self):
        """Per-step logs (only with `batch_logs=True`): tensors, in the graph."""
        import tensorflow as tf

        acc = self._state["acc"]
        count = tf.maximum(acc[2], 1.0)
        logs = {"grad_norm": acc[0] / count, "grad_nonfinite": acc[3]}
        if self._state["clipping"]:
            logs["grad_norm_clipped"] = acc[1] / count
        return logs

    def _epoch_logs(self):
        acc = self._state["acc"].numpy()
        count = max(float(acc[2]), 1.0)
        logs = {"grad_norm": float(acc[0]) / count, "grad_nonfinite": int(acc[3])}
        if self._state["clipping"]:
            logs["grad_norm_clipped"] = float(acc[1]) / count
        return logs

    # -- hooks ------------------------------------------------------------------------
    def _check(self, session):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "GradientNormLogger measures inside TensorFlow's graph: it runs on the tensorflow "
                f"backend. Current backend: {keras.backend.backend()!r}.")

    def on_train_begin(self, logs=None):
        session = Session.begin(self)
        model = self.model
        if not model.optimizer.built:
            # Measuring reads optimizer state (accumulators, loss scale) at trace time.
            with model.distribute_strategy.scope():
                model.optimizer.build(model.trainable_variables)
        self._state = self._build_state(model)
        self._writer = _summaries.ScalarWriter(_summaries.tensorboard_dirs(session, self.log_dir))
        self._state["flushed"] = int(self._update_count().numpy())  # updates before this fit()
        self._nonfinite_seen = 0

    def _attach(self, session):
        optimizer = self.model.optimizer

        def wrap(original):
            def apply(grads, trainable_variables=None):
                if trainable_variables is None:
                    return original(grads, trainable_variables)
                return self._measure(optimizer, list(grads), list(trainable_variables), original)

            return apply

        session.patch_per_call(optimizer, "apply", wrap)
        if self.batch_logs:
            def wrap_step(original):
                def train_step(data):
                    logs = original(data)
                    return {**logs, **self._logs()} if isinstance(logs, dict) else logs

                return train_step

            session.patch_per_call(self.model, "train_step", wrap_step)
        session.on_undo(self._writer.close)

    def on_epoch_begin(self, epoch, logs=None):
        # The means restart each epoch; the non-finite count runs over the fit().
        acc = self._state["acc"].numpy()
        self._state["acc"].assign(np.array([0.0, 0.0, 0.0, acc[3]], "float32"))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._epoch_logs())
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()
        self._writer.close()

    def _check_nonfinite(self, batch, logs=None):
        count = int(self._state["acc"][3].numpy())
        if count > self._nonfinite_seen:
            self._nonfinite_seen = count
            self.model.stop_training = True
            print(
                f"\nBatch {batch}: non-finite gradient, stopping training (GradientNormLogger).")

    def _flush(self):
        s = self._state
        done = int(self._update_count().numpy())  # updates applied so far
        last, freq, capacity = s["flushed"], self.update_freq, s["capacity"]
        due = done // freq - last // freq  # record steps in (last, done]
        if due <= 0:
            return
        first = max(last // freq + 1, done // freq - capacity + 1)  # kept: the latest `capacity`
        steps = np.arange(first, done // freq + 1, dtype=np.int64) * freq
        slots = (steps // freq) % capacity
        if due > len(steps):
            warnings.warn(
                f"GradientNormLogger: {due - len(steps)} TensorBoard records were dropped "
                f"this epoch; raise `capacity` (now {self.capacity}) or `update_freq` "
                f"(now {self.update_freq}).", stacklevel=2)
        s["flushed"] = done
        values = s["values"].numpy()[slots]
        self._writer.write({name: (steps, values[:, j]) for j, name in enumerate(s["columns"])})


def _dense(grad):
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        unique, position = tf.unique(grad.indices)
        return tf.math.unsorted_segment_sum(grad.values, position, tf.shape(unique)[0])
    return tf.convert_to_tensor(grad)


def _all_reduce(grads):
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1 or not grads:
        return grads
    return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)


def _half_square_norm(grad):
    import tensorflow as tf

    return tf.nn.l2_loss(grad if grad.dtype == tf.float32 else tf.cast(grad, tf.float32))


def _norm_from_halves(halves):
    """`sqrt(sum_i ||g_i||^2)` from the halves `||g_i||^2 / 2`."""
    import tensorflow as tf

    if not halves:
        return tf.constant(0.0)
    total = halves[0] if len(halves) == 1 else tf.add_n(halves)
    return tf.sqrt(2.0 * total)
