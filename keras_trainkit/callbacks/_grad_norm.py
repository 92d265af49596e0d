"""Gradient-norm logging computed inside the train step, on every Keras backend.

Where the measurement happens (each backend's step reaches the optimizer in
its own way; the numbers are the same):

- **TensorFlow**: `optimizer.apply` is wrapped while the step is traced; the
  accumulators and the record buffer are `tf.Variable`s of the strategy
  (`ONLY_FIRST_REPLICA`), updated in the graph (one fused `l2_loss` per
  gradient, one accumulator update, one scatter a step). Under a
  `tf.distribute` strategy the measured gradient is all-reduced first.
- **JAX**: the step is a pure function of its state, so whatever it updates
  must be threaded through that state. The accumulators and the buffer are
  the variables of a `keras.metrics.Metric` (`_NormState`) put among the
  model's metrics for the fit (Keras passes the metrics' variables into and
  out of every step and writes them back at each epoch end). The optimizer's
  `stateless_apply` is wrapped while the step is traced: the gradient it
  receives is measured there (reading the optimizer's state, as given to it),
  and `model.train_step` is wrapped to write the measurement into the metric's
  variables of the state it returns. Under `keras.distribution.DataParallel`
  the gradients are already global.
- **torch**: the step runs eagerly; `optimizer.apply` is wrapped for each
  step, measures with a few torch operations and updates the (unattached)
  metric's variables in place.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _validation as v
from keras_trainkit.callbacks import _eager, _summaries
from keras_trainkit.callbacks._session import Participant, Session

_DEFAULT_CAPACITY = 4096
_ROWS = 256  # torch: norm rows buffered between folds


class GradientNormLogger(Participant):
    """Logs gradient norms of the real update, computed in the train step.

    The gradients are measured where the optimizer receives them, inside the
    compiled train step (TensorFlow, JAX) or the eager one (torch): no extra
    forward or backward pass and no per-batch Python hook. The optimizer and
    the model are untouched between steps and after `fit()`, however it ends.
    Measured per applied update:

    - `grad_norm`: global L2 norm `sqrt(sum_i ||g_i||^2)` of the gradient the
      optimizer applies, before clipping, after loss-scale unscaling
      (`LossScaleOptimizer`, `loss_scale_factor`), of the accumulated gradient
      under `gradient_accumulation_steps`, and of the global gradient under
      `tf.distribute` strategies (all-reduced) and
      `keras.distribution.DataParallel`;
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
    buffer inside the step and written at each epoch end (by TensorFlow's
    record writer when TensorFlow is imported, else by tensorboard's own; in a
    multi-worker `tf.distribute` run, by the chief only).

    Works on the TensorFlow, JAX and torch backends with the same values. On
    JAX the buffer and accumulators are threaded through the step as the
    variables of a metric added to `model.metrics` for the duration of the
    fit (it adds nothing to the logs itself).

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

    Examples:
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
        self._pending = None

    _runtime_attributes = ("_state", "_writer", "_pending")

    # -- state ----------------------------------------------------------------------
    def _build_state(self, model):
        groups: dict[str, list[Any]] = {}
        for var in model.trainable_variables:
            groups.setdefault(var.path.rsplit("/", 1)[0] if "/" in var.path else var.path, []).append(var)
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
        capacity = self.capacity
        steps_per_epoch = (self.params or {}).get("steps")
        if steps_per_epoch:  # one epoch of records is all a flush ever needs
            capacity = min(capacity, -(-steps_per_epoch // self.update_freq) + 1)
        # Record slots: update n (n % update_freq == 0) goes to slot
        # (n // update_freq) % capacity; every other update writes the spare
        # last slot, so recording needs no control flow. The last `capacity`
        # record steps have distinct slots, so a slot's step is known on the
        # host without storing it.
        # The model, for the code that runs in the step: on JAX, Keras'
        # `Callback.model` writes the step state back to the variables, which
        # must not happen while a step is traced.
        state = dict(model=model, columns=columns, groups=list(groups.values()), clipping=clipping, flushed=0,
                     capacity=capacity, backend=keras.backend.backend(), metric=None)
        state["group_of"] = {id(var): i for i, group in enumerate(state["groups"]) for var in group}
        state["layout"] = (id(model), id(model.distribute_strategy) if state["backend"] == "tensorflow" else None,
                           tuple(columns), tuple(tuple(id(var) for var in g) for g in state["groups"]), capacity,
                           state["backend"])
        previous = self._state
        if previous is not None and previous["model"] is model and previous.get("layout") == state["layout"]:
            # The variables of the previous fit, zeroed as new ones would be:
            # the step compiled for it can run again (`_trace_key`).
            for name in ("acc", "values", "metric", "test_function"):
                state[name] = previous.get(name)
            for name in ("acc", "values"):
                state[name].assign(np.zeros(state[name].shape, "float32"))
            return state
        if state["backend"] == "tensorflow":
            import tensorflow as tf

            with model.distribute_strategy.scope():
                def var(value, name):
                    return tf.Variable(np.asarray(value, "float32"), trainable=False, name=name,
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

                # [sum of norms, sum of clipped norms, finite updates, non-finite updates]
                state["acc"] = var(np.zeros(4), "grad_norm_accumulators")
                state["values"] = var(np.zeros((capacity + 1, len(columns))), "grad_norm_values")
        else:
            metric = _NormState(capacity + 1, len(columns))
            state.update(metric=metric, acc=metric.accumulators, values=metric.records)
        return state

    # -- TensorFlow: measured in the graph ---------------------------------------------
    def _measure(self, optimizer, grads, trainable_variables, apply):
        """Runs inside the train step (TensorFlow): measures, then applies.

        Kept to few graph ops (a handful per variable plus about ten), since
        it runs every step: one fused `l2_loss` per gradient, one accumulator
        update and one scatter into the record buffer.
        """
        import tensorflow as tf

        s = self._state
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
            row += [_norm_from_halves(q) for q in _by_group(s, pairs, half_sq)]

        step = tf.cast(self._update_count(), "int64") + 1  # this update's number
        if self.weight_norms:
            group_vars = [var for group in s["groups"] for var in group]
            before = {id(var): tf.identity(var.value) for var in group_vars}
            with tf.control_dependencies([*before.values(), step]):
                result = apply(grads, trainable_variables)
            with tf.control_dependencies([] if result is None else [result]):
                after = {id(var): tf.cast(var.value, "float32") for var in group_vars}
                before = {key: tf.cast(b, "float32") for key, b in before.items()}
                for group in s["groups"]:
                    row.append(_norm_from_halves([tf.nn.l2_loss(after[id(var)]) for var in group]))
                for group in s["groups"]:
                    delta = _norm_from_halves([tf.nn.l2_loss(after[id(var)] - before[id(var)]) for var in group])
                    row.append(tf.math.divide_no_nan(
                        delta, _norm_from_halves([tf.nn.l2_loss(before[id(var)]) for var in group])))
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

    def _logs(self):
        """Per-step logs (only with `batch_logs=True`): tensors, in the step."""
        ops = keras.ops
        acc = self._state["acc"]
        if self._state["backend"] == "tensorflow":
            import tensorflow as tf

            count = tf.maximum(acc[2], 1.0)
        else:  # a copy: torch updates the variable in place
            acc = ops.copy(ops.convert_to_tensor(acc))
            count = ops.maximum(acc[2], 1.0)
        logs = {"grad_norm": acc[0] / count, "grad_nonfinite": acc[3]}
        if self._state["clipping"]:
            logs["grad_norm_clipped"] = acc[1] / count
        return logs

    # -- JAX and torch: measured with keras.ops --------------------------------------
    def _prepared_gradients(self, optimizer, grads, variables):
        """`(core, pairs, dense)`: the optimizer without wrappers, the (gradient,
        variable) pairs with a gradient, and the gradients the update applies
        (unscaled; averaged with the accumulators under gradient accumulation)."""
        ops = keras.ops
        pairs = [(g, var) for g, var in zip(grads, variables) if g is not None]
        dense = [g for g, _ in pairs]
        core = hooks.core_optimizer(optimizer)
        scale = None
        lso = hooks.loss_scale_optimizer(optimizer)
        if lso is not None:
            scale = ops.convert_to_tensor(lso.dynamic_scale)
        if core is not None and core.loss_scale_factor is not None:
            scale = core.loss_scale_factor if scale is None else scale * core.loss_scale_factor
        if scale is not None:
            dense = [g / ops.cast(scale, g.dtype) for g in dense]
        if core is not None and core.gradient_accumulation_steps:
            k = core.gradient_accumulation_steps
            dense = [(g + ops.cast(hooks.accumulated_gradient(core, var), g.dtype)) / k
                     for g, (_, var) in zip(dense, pairs)]
        return core, pairs, dense

    def _measure_gradients(self, optimizer, grads, variables):
        """The gradient columns of one update (JAX and torch), from the gradients
        `optimizer` receives for `variables` and its state before the update.

        Returns `(step, columns, is_update)`: this update's number, the norms
        (`grad_norm` first) and, under gradient accumulation, whether this
        call applies an update (else `None`: every call does).
        """
        ops = keras.ops
        s = self._state
        if s["backend"] == "jax":
            grads = _apart_from_the_update(grads)
        core, pairs, dense = self._prepared_gradients(optimizer, grads, variables)
        if s["backend"] == "torch":
            return self._torch_gradient_columns(core, pairs, dense)
        is_update = None
        if core is not None and core.gradient_accumulation_steps:
            k = core.gradient_accumulation_steps
            is_update = ops.equal((ops.convert_to_tensor(hooks.raw_iterations(core)) + 1) % k, 0)
        squares = _square_norms(dense)
        columns = [_sqrt_sum(squares)]
        if s["clipping"]:
            columns.append(_sqrt_sum(_square_norms(hooks.clip_gradients(core, dense))))
        if self.per_layer:
            columns += [_sqrt_sum(q) for q in _by_group(s, pairs, squares)]
        step = ops.convert_to_tensor(self._update_count()) + 1  # a new tensor: read before the update
        return step, columns, is_update

    def _torch_gradient_columns(self, core, pairs, dense):
        """`_measure_gradients`' columns with torch's own operations: a `keras.ops`
        call costs 10-50 us on torch, a torch one a few (this runs every step).

        The update number (and, under gradient accumulation, whether this call
        updates) is a Python int (bool) when the optimizer's counter is on the
        CPU, where reading it costs a microsecond; on an accelerator it stays
        a device tensor, so that the step never waits for the device.
        """
        import torch

        s = self._state
        squares = _torch_square_norms(dense)  # a vector, one entry per gradient
        columns = [squares.sum().sqrt()]
        if s["clipping"]:
            columns.append(_torch_square_norms(hooks.clip_gradients(core, dense)).sum().sqrt())
        if self.per_layer:
            key = tuple(id(var) for _, var in pairs)
            index = s.get("torch_group_index")
            if index is None or index[0] != key:
                index = (key, _torch_group_index(s, pairs, squares.device))
                s["torch_group_index"] = index
            by_group = torch.zeros(len(s["groups"]) + 1, dtype=torch.float32, device=squares.device)
            columns += list(by_group.index_add_(0, index[1], squares)[:-1].sqrt().unbind())
        step, is_update = self._torch_update_number(core)
        return step, columns, is_update

    def _torch_update_number(self, core):
        """torch: `(step, is_update)`, this update's number and, under gradient
        accumulation, whether this call updates (else `None`): Python values
        where the count is read on the host (`_eager`), else device tensors."""
        accumulation = core.gradient_accumulation_steps if core is not None else None
        raw = _eager.tensor(hooks.raw_iterations(core) if accumulation else self._update_count())
        on_host = _eager.reads_on_host(raw)
        if on_host:
            raw = int(raw)
        if not accumulation:
            return raw + 1, None  # (on the device, a new tensor: read before the update)
        is_update = (raw + 1) % accumulation == 0
        return raw // accumulation + 1, bool(is_update) if on_host else is_update

    # -- torch, counts on the host: one row of norms a step, folded in batches ------------
    def _add_row(self, core, pairs, dense):
        """Keeps this update's gradient norms (and the clipped gradient's) as one
        row: one fused norm a step, and a few microseconds of Python. The sums,
        counts, per-layer norms and records are computed from the rows in
        batches (`_fold`), at each epoch end or every `_ROWS` updates."""
        s, rows = self._state, self._state["rows"]
        step, is_update = self._torch_update_number(core)
        if is_update is False:  # a step that only accumulates: nothing to count or record
            return
        norms = _torch_norms(dense)
        if s["clipping"]:
            norms += _torch_norms(hooks.clip_gradients(core, dense))
        key = tuple(id(var) for _, var in pairs)
        if rows["key"] != key or len(rows["steps"]) == _ROWS:
            self._fold()
            if rows["key"] != key:
                rows.update(key=key, groups=_torch_group_index(s, pairs, norms[0].device))
        rows["norms"] += norms
        rows["steps"].append(step)

    def _fold(self):
        """Adds the kept rows to the accumulators and the record buffer."""
        import torch

        s = self._state
        rows = s.get("rows") if s is not None else None
        if not rows or not rows["steps"]:
            return
        n, width = len(rows["steps"]), len(rows["key"])
        block = torch.stack(rows["norms"]).view(n, -1)  # one row an update
        squares = block[:, :width].square()
        norm = squares.sum(1).sqrt()
        columns = [norm]
        if s["clipping"]:
            columns.append(block[:, width:].square().sum(1).sqrt())
        if self.per_layer:
            groups = len(s["groups"])
            by_group = torch.zeros((n, groups + 1), dtype=torch.float32, device=block.device)
            columns += list(by_group.index_add_(1, rows["groups"], squares)[:, :groups].sqrt().unbind(1))
        finite = torch.isfinite(norm)
        clipped = columns[1][finite].sum() if s["clipping"] else torch.zeros((), device=block.device)
        s["acc"].value.add_(torch.stack([norm[finite].sum(), clipped, finite.sum().to(torch.float32),
                                         (~finite).sum().to(torch.float32)]))
        steps = np.asarray(rows["steps"], dtype=np.int64)
        freq, capacity = self.update_freq, s["capacity"]
        recorded = np.flatnonzero(steps % freq == 0)[-capacity:]  # the latest `capacity`: distinct slots
        if len(recorded):
            slots = torch.as_tensor((steps[recorded] // freq) % capacity, device=block.device)
            picked = torch.as_tensor(recorded, device=block.device)
            s["values"].value.index_copy_(0, slots, torch.stack(columns, 1)[picked])
        rows["norms"].clear()
        rows["steps"].clear()

    def _weight_columns(self, before, after):
        """`weight_norm/<layer>` and `update_ratio/<layer>` from the weights
        before and after the update (dicts by variable id)."""
        ops = keras.ops
        groups = self._state["groups"]
        after = {key: ops.cast(a, "float32") for key, a in after.items()}
        before = {key: ops.cast(b, "float32") for key, b in before.items()}
        columns = [_sqrt_sum(_square_norms([after[id(var)] for var in group])) for group in groups]
        for group in groups:
            delta = _sqrt_sum(_square_norms([after[id(var)] - before[id(var)] for var in group]))
            columns.append(ops.divide_no_nan(delta, _sqrt_sum(_square_norms([before[id(var)] for var in group]))))
        return columns

    def _record(self, step, columns, is_update):
        """Adds one update to the accumulators and the record buffer (JAX: inside
        a `StatelessScope` over the metric's variables; torch: in place)."""
        s = self._state
        if s["backend"] == "torch":
            return self._record_torch(step, columns, is_update)
        ops = keras.ops
        norm = columns[0]
        zero, one = ops.zeros((), "float32"), ops.ones((), "float32")
        clipped = columns[1] if s["clipping"] else zero
        finite = ops.isfinite(norm)
        counted = finite if is_update is None else ops.logical_and(is_update, finite)
        nonfinite = one if is_update is None else ops.cast(is_update, "float32")
        delta = ops.where(counted, ops.stack([norm, clipped, one, zero]), ops.stack([zero, zero, zero, nonfinite]))
        capacity, freq = s["capacity"], self.update_freq
        slot = (step // freq) % capacity if freq > 1 else step % capacity
        if freq > 1 or is_update is not None:
            record = ops.equal(step % freq, 0) if freq > 1 else is_update
            if freq > 1 and is_update is not None:
                record = ops.logical_and(record, is_update)
            slot = ops.where(record, slot, capacity)
        row = ops.cast(ops.stack(columns), "float32")
        acc, values = ops.convert_to_tensor(s["acc"]), ops.convert_to_tensor(s["values"])
        s["acc"].assign(acc + delta)
        s["values"].assign(ops.slice_update(values, (ops.cast(slot, "int32"), 0), row[None]))

    def _record_torch(self, step, columns, is_update):
        """`_record` with torch's own operations, in place (no copy of the buffer).
        With the update number on the host (a CPU optimizer), the slot is
        computed in Python and only the recorded updates touch the buffer."""
        import torch

        s = self._state
        acc, values = s["acc"].value, s["values"].value
        norm = columns[0]
        consts = s.get("torch_constants")
        if consts is None or consts[0].device != norm.device:
            consts = [torch.tensor(v, dtype=torch.float32, device=norm.device) for v in (0.0, 1.0)]
            consts.append(torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float32, device=norm.device))
            s["torch_constants"] = consts
        zero, one, nonfinite_row = consts
        clipped = columns[1] if s["clipping"] else zero
        finite = torch.isfinite(norm)
        capacity, freq = s["capacity"], self.update_freq
        if isinstance(step, int):  # known on the host
            if is_update is False:  # a step that only accumulates: nothing to count or record
                return
            acc.add_(torch.where(finite, torch.stack([norm, clipped, one, zero]), nonfinite_row))
            if step % freq == 0:
                values[(step // freq) % capacity].copy_(torch.stack([c.to(torch.float32) for c in columns]))
            return
        if is_update is None:
            counted, nonfinite = finite, one
        else:
            counted, nonfinite = finite & is_update, is_update.to(torch.float32)
        acc.add_(torch.where(counted, torch.stack([norm, clipped, one, zero]),
                             torch.stack([zero, zero, zero, nonfinite])))
        slot = torch.div(step, freq, rounding_mode="floor") % capacity if freq > 1 else step % capacity
        if freq > 1 or is_update is not None:
            record = (step % freq == 0) if freq > 1 else is_update
            if freq > 1 and is_update is not None:
                record = record & is_update
            slot = torch.where(record, slot, capacity)
        row = torch.stack([c.to(torch.float32) for c in columns])
        values.index_copy_(0, slot.reshape(1).to(torch.int64), row[None])

    def _wrap_stateless_apply(self, optimizer, original):
        """JAX: measure what `stateless_apply` receives; the trainer's
        `train_step` wrapper records it into the state (`_wrap_jax_step`)."""
        def stateless_apply(optimizer_variables, grads, trainable_variables):
            built = hooks.built_variables(optimizer)
            mapping = list(zip(optimizer.variables, optimizer_variables)) + list(zip(built, trainable_variables))
            with keras.StatelessScope(state_mapping=mapping):
                step, columns, is_update = self._measure_gradients(optimizer, list(grads), built)
            new_trainable, new_optimizer = original(optimizer_variables, grads, trainable_variables)
            if self.weight_norms:
                columns += self._weight_columns(
                    {id(var): t for var, t in zip(built, trainable_variables)},
                    {id(var): t for var, t in zip(built, new_trainable)})
            self._pending = (step, columns, is_update)
            return new_trainable, new_optimizer

        return stateless_apply

    def _wrap_jax_step(self, original):
        def train_step(state, data):
            self._pending = None
            logs, state = original(state, data)
            pending, self._pending = self._pending, None
            if pending is None:
                raise RuntimeError(
                    "GradientNormLogger: the train step applied no update through "
                    "`model.optimizer.stateless_apply`, where the gradients are measured on JAX.")
            metric = self._state["metric"]
            values = hooks.jax_step_metrics_values(state)
            position = {id(var): i for i, var in enumerate(self._state["model"].metrics_variables)}
            slots = [position[id(var)] for var in metric.variables]
            with keras.StatelessScope(state_mapping=[(var, values[i]) for var, i in
                                                     zip(metric.variables, slots)]) as scope:
                self._record(*pending)
                extra = self._logs() if self.batch_logs else {}
            for var, i in zip(metric.variables, slots):
                values[i] = scope.get_current_value(var)
            return {**logs, **extra}, hooks.jax_step_state_with_metrics(state, values)

        return train_step

    def _wrap_eager_apply(self, optimizer, original):
        """torch: measure, apply, record, all eagerly in the step."""
        def apply(grads, trainable_variables=None):
            variables = (hooks.built_variables(optimizer) if trainable_variables is None
                         else list(trainable_variables))
            if self._state.get("rows") is not None:
                core, pairs, dense = self._prepared_gradients(optimizer, list(grads), variables)
                if dense:
                    self._add_row(core, pairs, dense)
                    return original(grads, trainable_variables)
            step, columns, is_update = self._measure_gradients(optimizer, list(grads), variables)
            if self.weight_norms:
                ops = keras.ops
                group_vars = [var for group in self._state["groups"] for var in group]
                before = {id(var): ops.copy(var.value) for var in group_vars}
            result = original(grads, trainable_variables)
            if self.weight_norms:
                columns += self._weight_columns(before, {id(var): var.value for var in group_vars})
            self._record(step, columns, is_update)
            return result

        return apply

    # -- host side ---------------------------------------------------------------------
    def _update_count(self):
        """Real updates applied before this one (before `iterations` moves)."""
        optimizer = self._state["model"].optimizer
        core = hooks.core_optimizer(optimizer)
        if core is not None and core.gradient_accumulation_steps:
            return hooks.raw_iterations(core) // core.gradient_accumulation_steps
        return optimizer.iterations

    def _epoch_logs(self):
        self._fold()
        acc = _numpy(self._state["acc"])
        count = max(float(acc[2]), 1.0)
        logs = {"grad_norm": float(acc[0]) / count, "grad_nonfinite": int(acc[3])}
        if self._state["clipping"]:
            logs["grad_norm_clipped"] = float(acc[1]) / count
        return logs

    # -- hooks ------------------------------------------------------------------------
    def _check(self, session):
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "jax", "torch"):
            raise RuntimeError(
                "GradientNormLogger measures inside the train step of the tensorflow, jax and torch "
                f"backends. Current backend: {backend!r}.")

    def on_train_begin(self, logs=None):
        session = Session.begin(self)
        model = self.model
        if not model.optimizer.built:
            # Measuring reads optimizer state (accumulators, loss scale) at trace time.
            with _strategy_scope(model):
                model.optimizer.build(model.trainable_variables)
        self._state = self._build_state(model)
        dirs = _summaries.tensorboard_dirs(session, self.log_dir) if _writes_summaries(model) else []
        self._writer = _summaries.ScalarWriter(dirs)
        self._state["flushed"] = int(_numpy(self._update_count()))  # updates before this fit()
        self._nonfinite_seen = 0
        if (self._state["backend"] == "torch" and not (self.weight_norms or self.batch_logs or self.stop_on_nonfinite)
                and _eager.reads_on_host(_eager.tensor(self._update_count()))):
            # Rows of norms, folded in batches (`_add_row`); the options that
            # need the running values at every step keep the per-step path.
            self._state["rows"] = dict(key=None, norms=[], groups=None, steps=[])

    def _reuse_compiled(self, session):
        test_function = self._state.get("test_function")
        if self._state["backend"] == "jax" and test_function is not None:
            # The previous fit's test step, made with this metric: the same
            # model, metrics and variables (the train step's key says so).
            self.model.test_function = test_function

    def _trace_key(self, session):
        s = self._state
        return (id(self), s["layout"], id(s["acc"]), id(s["values"]), self.update_freq, self.per_layer,
                self.weight_norms, self.batch_logs)

    def _attach(self, session):
        model, optimizer = self.model, self.model.optimizer
        backend = self._state["backend"]
        if backend == "jax":
            metric = self._state["metric"]
            hooks.add_model_metric(model, metric)
            # A compiled test step fixes the metrics' state (its output
            # shardings under a distribution): validation makes one with the
            # metric, and the one from before comes back after the fit.
            test_function, model.test_function = model.test_function, None
            state = self._state

            def detach():
                # The state Keras holds mid-epoch includes the metric's
                # variables: write it back while they still line up.
                model.jax_state_sync()
                hooks.remove_model_metric(model, metric)
                # Kept with the metric, for a fit that reuses this one's step.
                state["test_function"] = model.test_function
                model.test_function = test_function

            session.on_undo(detach)
            session.patch_per_call(optimizer, "stateless_apply",
                                   lambda original: self._wrap_stateless_apply(optimizer, original))
            session.patch_per_call(model, "train_step", self._wrap_jax_step)
        elif backend == "torch":
            session.patch_per_call(optimizer, "apply", lambda original: self._wrap_eager_apply(optimizer, original))
        else:
            def wrap(original):
                def apply(grads, trainable_variables=None):
                    if trainable_variables is None:
                        return original(grads, trainable_variables)
                    return self._measure(optimizer, list(grads), list(trainable_variables), original)

                return apply

            session.patch_per_call(optimizer, "apply", wrap)
        if self.batch_logs and backend != "jax":  # JAX: in _wrap_jax_step
            def wrap_step(original):
                def train_step(data):
                    logs = original(data)
                    return {**logs, **self._logs()} if isinstance(logs, dict) else logs

                return train_step

            session.patch_per_call(model, "train_step", wrap_step)
        session.on_undo(self._writer.close)

    def on_epoch_begin(self, epoch, logs=None):
        # The means restart each epoch; the non-finite count runs over the fit().
        # (On JAX the state is on the variables between epochs.)
        self._fold()
        acc = _numpy(self._state["acc"])
        self._state["acc"].assign(np.array([0.0, 0.0, 0.0, acc[3]], "float32"))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._epoch_logs())
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()
        self._writer.close()

    def _check_nonfinite(self, batch, logs=None):
        if self._state["backend"] == "jax":
            self.model.jax_state_sync()  # mid-epoch the values live in Keras' step state
        count = int(_numpy(self._state["acc"])[3])
        if count > self._nonfinite_seen:
            self._nonfinite_seen = count
            self.model.stop_training = True
            print(
                f"\nBatch {batch}: non-finite gradient, stopping training (GradientNormLogger).")

    def _flush(self):
        self._fold()
        s = self._state
        done = int(_numpy(self._update_count()))  # updates applied so far
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
        values = _numpy(s["values"])[slots]
        self._writer.write({name: (steps, values[:, j]) for j, name in enumerate(s["columns"])})


class _NormState(keras.metrics.Metric):
    """GradientNormLogger's accumulators and TensorBoard record buffer (JAX, torch).

    A metric so that Keras' JAX trainer threads its variables through the
    stateless train step (on JAX it sits among the model's metrics for the
    fit). It contributes nothing to the logs (`result()` is empty; the logger
    writes its own), and Keras' `reset_metrics()` (every epoch start, every
    `evaluate()`) leaves it alone: the logger resets the epoch means itself.
    """

    def __init__(self, slots: int, columns: int):
        super().__init__(name="gradient_norm_logger", dtype="float32")
        # [sum of norms, sum of clipped norms, finite updates, non-finite updates]
        self.accumulators = self.add_variable(shape=(4,), initializer="zeros", dtype="float32",
                                              aggregation="only_first_replica", name="accumulators")
        self.records = self.add_variable(shape=(slots, columns), initializer="zeros", dtype="float32",
                                         aggregation="only_first_replica", name="records")

    def update_state(self, *args, **kwargs):
        """Updated by GradientNormLogger inside the train step, not by Keras."""

    def reset_state(self):
        """Kept across Keras' metric resets (see the class doc)."""

    def result(self):
        return {}


def _numpy(value):
    if hasattr(value, "numpy") and keras.backend.backend() == "tensorflow":
        return np.asarray(value.numpy())
    if isinstance(value, keras.Variable):
        value = value.value  # the backend array (numpy 2 copy semantics)
    return np.asarray(keras.ops.convert_to_numpy(value))


def _strategy_scope(model):
    import contextlib

    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


def _writes_summaries(model) -> bool:
    """False on the non-chief workers of a multi-worker `tf.distribute` run."""
    if keras.backend.backend() != "tensorflow":
        return True
    return bool(model.distribute_strategy.extended.should_save_summary)


def _by_group(state, pairs, values):
    """`values` (one per (gradient, variable) pair) as one list per layer."""
    out: list[list[Any]] = [[] for _ in state["groups"]]
    group_of = state["group_of"]
    for (_, var), value in zip(pairs, values):
        i = group_of.get(id(var))
        if i is not None:
            out[i].append(value)
    return out


def _apart_from_the_update(grads):
    """JAX: the same gradient arrays behind an optimization barrier, so that XLA
    computes the norms' squares apart from the optimizer's own.

    Without it, common-subexpression elimination shares our `g * g` with
    Adam's second moment, which then writes the squared gradient to memory
    instead of squaring it inside its update: the MLP's jitted step measured
    1.09x-1.10x a bare step instead of 1.07x (`benchmarks/jax_step_time.py`,
    BENCHMARKS.md). The barrier costs nothing at run time: the gradients are
    materialized anyway.
    """
    import jax

    grads = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    for i, g in zip(present, jax.lax.optimization_barrier([grads[i] for i in present])):
        grads[i] = g
    return grads


def _square_norms(tensors):
    """`||t||^2` of each tensor, in float32 (JAX, torch)."""
    ops = keras.ops
    if keras.backend.backend() == "torch":
        import torch

        return [torch.linalg.vector_norm(t, dtype=torch.float32) ** 2 for t in tensors]
    return [ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors]


def _torch_norms(tensors):
    """torch: the float32 L2 norm of each tensor (one fused call)."""
    import torch

    tensors = list(tensors)
    return list(torch._foreach_norm(tensors, 2, dtype=torch.float32)) if tensors else []


def _torch_square_norms(tensors):
    """torch: `||t||^2` of each tensor as one float32 vector."""
    import torch

    norms = _torch_norms(tensors)
    if not norms:
        return torch.zeros(0, dtype=torch.float32)
    squares = torch.stack(norms)
    return squares * squares


def _torch_group_index(state, pairs, device):
    """torch: each gradient's layer group as an index tensor (the spare last
    group for a variable in none)."""
    import torch

    group_of, spare = state["group_of"], len(state["groups"])
    return torch.tensor([group_of.get(id(var), spare) for _, var in pairs], dtype=torch.int64, device=device)


def _sqrt_sum(squares):
    ops = keras.ops
    if not squares:
        return ops.zeros((), "float32")
    total = squares[0]
    for q in squares[1:]:
        total = total + q
    return ops.sqrt(total)


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
