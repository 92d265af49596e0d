"""Building blocks of keras_trainkit's optimizers, each written once.

optax builds its optimizers by chaining small gradient transformations
(`scale_by_adam` = `update_moment` + `bias_correction` + ...). Keras'
optimizers update each variable in place inside `update_step`; these blocks
are the pieces of those update rules that several optimizers share, as
functions of `keras.ops` tensors (so they run inside the compiled step on
every backend). The ones that change a state take the optimizer, whose
`assign*` methods work in compiled and JAX-stateless steps alike.

Notation: `t` is the 1-based update count, `lr` the learning rate, `g` the
gradient, `w` the variable. Each block states the exact operation order it
computes: the drop-ins must stay bitwise equal to Keras' own optimizers, so a
block is used only where its order is the one the optimizer had.

| block | computes | used by |
|---|---|---|
| `update_count` | `t` as a float | Adam, RAdam, AdaBelief, Yogi, Adan |
| `dense_gradient` | `g` densified and cast to `w`'s dtype | the optax family |
| `update_moment` | `m <- m + (1 - decay) * (x - m)` in place | Adam, RAdam, AdaBelief, Yogi, Adan |
| `moving_average` | `decay * a + (1 - decay) * x` | RMSprop, NovoGrad |
| `update_trace` | `b <- decay * b + x` in place | RMSprop, NovoGrad, Adan |
| `apply_momentum` | `update_trace`, then `w += b` (Nesterov `w += decay * b + x`) | SGD, LARS |
| `bias_correction` | `1 - decay**t` | Adam, RAdam, `debias` |
| `debias` | the scalar `scale / (1 - decay**t)` | RAdam, AdaBelief, Yogi, Adan |
| `nesterov_debiased` | optax's bias-corrected Nesterov momentum | RAdam, AdaBelief |
| `scale_by_root` | `u / (sqrt(s * c + epsilon_root) + epsilon)` | all but SGD, LARS, Lookahead |
| `add_decayed_weights` | `u + weight_decay * w` (coupled decay) | LARS, NovoGrad |
| `l2_norm`, `squared_l2_norm` | `norm(x)`, `norm(x)**2` | LARS, NovoGrad |
| `trust_ratio` | `coefficient * norm(w) / (norm(u) + epsilon)`, 1 if a norm is 0 | LARS |

Decoupled weight decay (`w <- w - lr * weight_decay * w` before the update,
AdamW-style) is Keras' own, applied before `update_step` to every optimizer
whose class keeps `decoupled_weight_decay = True` (the default, see
`keras_trainkit._keras_hooks.OptimizerHooks`); an optimizer whose paper
couples the decay into its update sets it to `False` and calls
`add_decayed_weights` where the paper adds the decay.
"""

from __future__ import annotations

from typing import Any

from keras import ops

__all__ = [
    "add_decayed_weights",
    "apply_momentum",
    "bias_correction",
    "debias",
    "dense_gradient",
    "is_indexed_slices",
    "l2_norm",
    "moving_average",
    "nesterov_debiased",
    "scale_by_root",
    "squared_l2_norm",
    "trust_ratio",
    "update_count",
    "update_moment",
    "update_trace",
]


# -- gradients and counts ------------------------------------------------------------
def is_indexed_slices(gradient: Any) -> bool:
    """True for TensorFlow's `IndexedSlices` (sparse rows, e.g. of an Embedding).

    Recognised by name and shape of its parts, so no TensorFlow import is needed.
    """
    return type(gradient).__name__ == "IndexedSlices" and all(
        hasattr(gradient, a) for a in ("indices", "values", "dense_shape")
    )


def dense_gradient(gradient: Any, variable: Any) -> Any:
    """The gradient as a dense tensor of `variable`'s dtype.

    Rows repeated in `IndexedSlices` are summed (the gradient of the sum), as
    optax sees them. Only the TensorFlow backend produces `IndexedSlices`;
    elsewhere this is a cast, which costs nothing in the compiled step. The
    drop-ins do not call it: Keras' arithmetic on sparse rows differs.
    """
    if is_indexed_slices(gradient):
        indices = ops.expand_dims(ops.cast(gradient.indices, "int32"), -1)
        gradient = ops.scatter(indices, gradient.values, tuple(variable.shape))
    return ops.cast(gradient, variable.dtype)


def update_count(optimizer: Any, dtype: str = "float32") -> Any:
    """`t`, the 1-based number of the update being applied, as `dtype`.

    optax and the papers count updates from 1; Keras' `iterations` counts the
    updates already applied.
    """
    return ops.cast(ops.add(optimizer.iterations, 1), dtype)


# -- moments ---------------------------------------------------------------------------
def update_moment(optimizer: Any, moment: Any, value: Any, decay: float, offset: float = 0.0) -> Any:
    """Exponential moving average in place: `moment <- decay * moment + (1 - decay) * value`.

    Computed as Keras' Adam does, `moment += (value - moment) * (1 - decay)`
    (`+ offset` when `offset` is non-zero: AdaBelief's `epsilon_root`).
    `value` may be TensorFlow `IndexedSlices`: the subtraction densifies it
    (repeated rows summed), as in Keras. optax: `update_moment`.

    Args:
        optimizer: The optimizer owning `moment` (its `assign_add` is used).
        moment: The moment, an optimizer variable.
        value: The new observation (`g` for a first moment, `g**2` for a
            second one).
        decay: The decay rate, a Python float in [0, 1).
        offset: A constant added to the moment at every update. Defaults to
            `0.0`.

    Returns:
        `moment`, updated.
    """
    increment = ops.multiply(ops.subtract(value, moment), 1.0 - decay)
    if offset:
        increment = ops.add(increment, offset)
    optimizer.assign_add(moment, increment)
    return moment


def moving_average(average: Any, value: Any, decay: Any) -> Any:
    """`decay * average + (1 - decay) * value`, as a new tensor (Keras RMSprop's form).

    The same average as `update_moment`, in the other rounding order; for
    the optimizers whose reference computes it this way. `value` may be
    `IndexedSlices` (scaled row by row, then densified by the addition).
    """
    return ops.add(ops.multiply(decay, average), ops.multiply(1.0 - decay, value))


def update_trace(
    optimizer: Any, trace: Any, value: Any, decay: Any, *, value_first: bool = False
) -> Any:
    """Heavy-ball accumulation in place: `trace <- decay * trace + value`.

    optax: `trace`. `value` is what the trace accumulates: a step, with its
    sign (SGD, LARS), or a normalised gradient (NovoGrad). The sum is
    computed as `decay * trace + value` (Keras' order), or as `value + decay
    * trace` with `value_first=True` (optax's order): XLA may fuse either
    into a multiply-add and round them differently, so an optimizer takes
    the order of the reference it reproduces bit for bit on JAX.

    Returns:
        `trace`, updated.
    """
    optimizer.assign(trace, _add_scaled(trace, decay, value, value_first))
    return trace


def apply_momentum(
    optimizer: Any,
    variable: Any,
    trace: Any,
    step: Any,
    momentum: Any,
    nesterov: bool,
    *,
    value_first: bool = False,
) -> None:
    """Momentum on an additive `step` (e.g. `-lr * g`), then the variable update.

    `trace <- momentum * trace + step`, then `w <- w + trace`, or with
    Nesterov momentum `w <- w + momentum * trace + step` (with the new trace).
    `value_first` as in `update_trace`, for both sums.
    """
    update_trace(optimizer, trace, step, momentum, value_first=value_first)
    if nesterov:
        optimizer.assign_add(variable, _add_scaled(trace, momentum, step, value_first))
    else:
        optimizer.assign_add(variable, trace)


def _add_scaled(trace: Any, decay: Any, value: Any, value_first: bool) -> Any:
    scaled = ops.multiply(trace, decay)
    return ops.add(value, scaled) if value_first else ops.add(scaled, value)


# -- bias correction -----------------------------------------------------------------------
def bias_correction(decay: Any, count: Any) -> Any:
    """`1 - decay**count`: the weight a zero-initialised moving average has gathered.

    A moment started at 0 and averaged with `decay` for `count` updates is
    `1 - decay**count` times the average it estimates; dividing by this
    corrects it. Computed in `count`'s dtype.
    """
    return ops.subtract(1.0, ops.power(decay, count))


def debias(decay: Any, count: Any, dtype: Any, scale: Any = 1.0) -> Any:
    """The scalar `scale / (1 - decay**count)`, cast to `dtype`.

    Multiplying a moment by it gives the bias-corrected moment times `scale`
    (e.g. `lr`): the scalars are folded first, so the per-element work is one
    multiplication. optax: `bias_correction` (a division by the correction).
    """
    return ops.cast(ops.divide(scale, bias_correction(decay, count)), dtype)


def nesterov_debiased(moment: Any, gradient: Any, decay: float, count: Any, scale: Any = 1.0) -> Any:
    """`scale` times optax's bias-corrected Nesterov momentum.

    `scale * (decay * m / (1 - decay**(t+1)) + (1 - decay) * g / (1 - decay**t))`,
    with the scalar factors folded first; `moment` already holds the new `m`.
    """
    dtype = moment.dtype
    return ops.add(
        ops.multiply(moment, debias(decay, ops.add(count, 1.0), dtype, ops.multiply(scale, decay))),
        ops.multiply(gradient, debias(decay, count, dtype, ops.multiply(scale, 1.0 - decay))),
    )


def scale_by_root(
    numerator: Any,
    second_moment: Any,
    epsilon: float,
    scale: Any = None,
    epsilon_root: float = 0.0,
) -> Any:
    """`numerator / (sqrt(second_moment * scale + epsilon_root) + epsilon)`: an adaptive step.

    `scale` (e.g. `debias(beta_2, t, dtype)`) is left out when `None`, and
    `epsilon_root` and `epsilon` when they are the number 0, so the drop-ins
    compute exactly Keras' operations (Adagrad and RMSprop put their epsilon
    inside the root, Adam outside). A TensorFlow `IndexedSlices` numerator
    stays sparse (Keras' sparse division), as Adagrad's update needs.
    """
    root = second_moment if scale is None else ops.multiply(second_moment, scale)
    if not _is_zero(epsilon_root):
        root = ops.add(root, epsilon_root)
    denominator = ops.sqrt(root)
    if not _is_zero(epsilon):
        denominator = ops.add(denominator, epsilon)
    return ops.divide(numerator, denominator)


def _is_zero(x: Any) -> bool:
    return isinstance(x, (int, float)) and x == 0


# -- weight decay and norms ----------------------------------------------------------------
def add_decayed_weights(optimizer: Any, update: Any, variable: Any) -> Any:
    """`update + weight_decay * w`: weight decay coupled into the update (optax's name).

    Returns `update` unchanged when the optimizer has no `weight_decay` or
    `variable` is excluded by `exclude_from_weight_decay()` (optax's
    `weight_decay_mask`). Only for optimizers with `decoupled_weight_decay =
    False`, which would otherwise decay twice.
    """
    if optimizer.decoupled_weight_decay:
        raise TypeError(
            f"{type(optimizer).__name__} couples its weight decay into the update: set "
            "`decoupled_weight_decay = False` on the class, or Keras decays the variables too."
        )
    if not optimizer.weight_decay or not optimizer.applies_weight_decay_to(variable):
        return update
    return ops.add(update, ops.multiply(variable, optimizer.weight_decay))


def squared_l2_norm(x: Any) -> Any:
    """`||x||**2`, the sum of the squared entries (a scalar)."""
    return ops.sum(ops.square(x))


def l2_norm(x: Any) -> Any:
    """`||x||`, the Euclidean norm of all entries (a scalar)."""
    return ops.sqrt(squared_l2_norm(x))


def trust_ratio(variable: Any, update: Any, trust_coefficient: float, epsilon: float) -> Any:
    """Layer-wise trust ratio `trust_coefficient * ||w|| / (||u|| + epsilon)`.

    1 where `||w||` or `||u||` is 0 (a zero-initialised bias, a zero
    gradient), as in optax's `scale_by_trust_ratio`. A scalar of `w`'s dtype.
    """
    w_norm = l2_norm(variable)
    u_norm = l2_norm(update)
    return ops.where(
        ops.logical_or(ops.equal(w_norm, 0.0), ops.equal(u_norm, 0.0)),
        ops.ones((), variable.dtype),
        ops.divide(ops.multiply(w_norm, trust_coefficient), ops.add(u_norm, epsilon)),
    )
