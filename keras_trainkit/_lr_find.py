"""The learning-rate range test (Smith 2017), as fastai's `lr_find`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _validation as v
from keras_trainkit.schedules._base import Schedule

__all__ = ["LRFinderResult", "lr_find"]

SUGGESTIONS = ("valley", "steepest", "minimum/10")


class _Ramp(Schedule):
    """`min_lr * (max_lr / min_lr) ** (k / (num_steps - 1))` at the k-th update of
    the test, `k = iterations - start` (subtracted before the float32 cast)."""

    def __init__(self, min_lr: float, max_lr: float, num_steps: int, start: int):
        super().__init__()
        self.min_lr, self.max_lr, self.num_steps, self.start = min_lr, max_lr, num_steps, start
        self._log_ratio = math.log(max_lr / min_lr)

    def __call__(self, step):
        if not ops.is_tensor(step) and not isinstance(step, keras.Variable):
            return super().__call__(np.asarray(step) - self.start)
        return self.compute(ops.cast(step - self.start, "float32"))

    def compute(self, k):
        return self.min_lr * ops.exp(k * (self._log_ratio / (self.num_steps - 1)))

    def get_config(self):  # pragma: no cover - never saved (lives only during lr_find)
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "num_steps": self.num_steps,
                "start": self.start}


# -- data ----------------------------------------------------------------------


def _is_tf_dataset(data: Any) -> bool:
    module = type(data).__module__
    if not module.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def _batches(x, y, batch_size, shuffle, seed) -> tuple[str, Any]:
    """Validates the data and returns (kind, factory of an endless batch iterator)."""
    if _is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset):
        kind = "tf.data.Dataset" if _is_tf_dataset(x) else "PyDataset"
        if y is not None:
            raise ValueError(f"Argument `y` must be None when `x` is a {kind} (which yields "
                             f"the targets). Received: y={type(y).__name__}")
        if batch_size is not None:
            raise ValueError(f"Argument `batch_size` must be None when `x` is a {kind}, which "
                             f"is already batched. Received: batch_size={batch_size!r}")
        if kind == "PyDataset":
            if x.num_batches == 0:
                raise ValueError("Argument `x` must yield at least one batch. Received: an empty PyDataset")
            return kind, lambda: _py_dataset_batches(x)
        return kind, lambda: _tf_dataset_batches(x)

    batch_size = 32 if batch_size is None else v.integer("batch_size", batch_size, low=1)
    try:
        xs = keras.tree.map_structure(np.asarray, x)
        ys = None if y is None else keras.tree.map_structure(np.asarray, y)
    except Exception as e:  # noqa: BLE001 - reported with the argument's name
        raise ValueError(
            "Argument `x` must be a numpy-convertible array (or a list/tuple/dict of them), "
            f"a tf.data.Dataset or a keras.utils.PyDataset. Received: x={type(x).__name__} ({e})"
        ) from None
    leaves = keras.tree.flatten(xs) + ([] if ys is None else keras.tree.flatten(ys))
    sizes = {len(a) if a.ndim else -1 for a in leaves}
    if not leaves or len(sizes) != 1 or min(sizes) < 1:
        raise ValueError(
            "Arguments `x` and `y` must be arrays with the same number (>= 1) of samples. "
            f"Received: sample counts {sorted(sizes)}"
        )
    n = sizes.pop()
    return "arrays", lambda: _array_batches(xs, ys, n, batch_size, shuffle, seed)


def _array_batches(xs, ys, n, batch_size, shuffle, seed) -> Iterator[tuple]:
    """Full batches of `batch_size` (the last partial one dropped, as fastai's
    training loader does) in a new order each pass; one batch of all samples
    when there are fewer than `batch_size`. Uses its own generator: the
    global random state is not touched."""
    rng = np.random.default_rng(seed)
    size = min(batch_size, n)
    while True:
        order = rng.permutation(n) if shuffle else np.arange(n)
        for start in range(0, n - size + 1, size):
            idx = order[start:start + size]
            yield (keras.tree.map_structure(lambda a, i=idx: a[i], xs),
                   None if ys is None else keras.tree.map_structure(lambda a, i=idx: a[i], ys), None)


def _tf_dataset_batches(dataset) -> Iterator[tuple]:
    while True:
        empty = True
        for batch in dataset:
            empty = False
            yield keras.utils.unpack_x_y_sample_weight(batch)
        if empty:
            raise ValueError("Argument `x` must yield at least one batch. Received: an empty tf.data.Dataset")


def _py_dataset_batches(dataset) -> Iterator[tuple]:
    count = dataset.num_batches
    while True:
        i = 0
        while count is None or i < count:
            yield keras.utils.unpack_x_y_sample_weight(dataset[i])
            i += 1
        dataset.on_epoch_end()


# -- state ---------------------------------------------------------------------


def _optimizer_chain(model) -> list[Any]:
    """The model's optimizer and the ones it wraps (LossScaleOptimizer, Lookahead)."""
    chain = [model.optimizer]
    while chain[-1] is not hooks.unwrap(chain[-1]):
        chain.append(chain[-1].inner_optimizer)
    return chain


class _Snapshot:
    """Host copies of every variable of the model, its metrics and optimizers."""

    def __init__(self, model, optimizers):
        seen, self.variables = set(), []
        groups = [model.variables, model.metrics_variables] + [o.variables for o in optimizers]
        for group in groups:
            for var in group:
                if id(var) not in seen:
                    seen.add(id(var))
                    self.variables.append(var)
        self.values = [np.array(ops.convert_to_numpy(var), copy=True) for var in self.variables]
        # On the torch backend an unseeded Dropout draws from torch's global generator.
        self.torch_rng = None
        if keras.backend.backend() == "torch":
            import torch

            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            self.torch_rng = (torch.get_rng_state(), cuda)

    def restore(self):
        for var, value in zip(self.variables, self.values):
            var.assign(value)
        if self.torch_rng is not None:
            import torch

            torch.set_rng_state(self.torch_rng[0])
            if self.torch_rng[1] is not None:
                torch.cuda.set_rng_state_all(self.torch_rng[1])


# -- result --------------------------------------------------------------------


class LRFinderResult:
    """What `lr_find` measured, with its suggestions and plot.

    Attributes:
        learning_rates: The rate of each update made, float64 numpy.
        losses: The smoothed training loss after each update (a debiased
            exponential moving average of `raw_losses`, as fastai and
            Lightning record and plot).
        raw_losses: The loss of each update's batch, as computed in the
            train step (including regularization losses).
        num_steps: The number of updates planned.
        stopped_early: Whether the test stopped because the loss diverged.
        smoothing: The smoothing factor used.
    """

    def __init__(self, learning_rates, losses, raw_losses, num_steps, stopped_early, smoothing):
        self.learning_rates = np.asarray(learning_rates, "float64")
        self.losses = np.asarray(losses, "float64")
        self.raw_losses = np.asarray(raw_losses, "float64")
        self.num_steps = num_steps
        self.stopped_early = stopped_early
        self.smoothing = smoothing

    def _window(self, skip_start, skip_end):
        """fastai's range for suggestions: without the first `num_steps // 10`
        and the last 5 points, and cut at the first non-finite loss."""
        skip_start = self.num_steps // 10 if skip_start is None else v.integer("skip_start", skip_start, low=0)
        skip_end = 5 if skip_end is None else v.integer("skip_end", skip_end, low=0)
        lrs = self.learning_rates[skip_start:len(self.losses) - skip_end]
        losses = self.losses[skip_start:len(self.losses) - skip_end]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            lrs, losses = lrs[:bad[0]], losses[:bad[0]]
        if len(losses) < 2:
            raise ValueError(
                f"Too few points for a suggestion: {len(self.losses)} updates recorded, "
                f"{len(losses)} left after skipping the first {skip_start} and the last {skip_end} "
                "(and any non-finite loss). Lower `min_lr`, raise `num_steps`, or pass smaller "
                f"`skip_start`/`skip_end`. Received: skip_start={skip_start}, skip_end={skip_end}"
            )
        return lrs, losses

    def suggestion(self, method: str = "valley", skip_start: int | None = None,
                   skip_end: int | None = None) -> float:
        """A learning rate read off the smoothed loss curve.

        - `"valley"` (fastai's default): the longest run of decreasing losses
          (the longest strictly decreasing subsequence of the curve), then the
          point about 2/3 of the way down it.
        - `"steepest"`: where the loss falls fastest per unit of `log(lr)`
          (central differences, `np.gradient`).
        - `"minimum/10"`: a tenth of the rate at the lowest loss.

        As fastai, the curve is first cut to leave out its first
        `num_steps // 10` and last 5 points (the noisy start and the
        divergence), and at the first non-finite loss.

        Args:
            method: `"valley"`, `"steepest"` or `"minimum/10"`. Defaults to `"valley"`.
            skip_start: Points left out at the start, or `None` for
                `num_steps // 10`. Defaults to `None`.
            skip_end: Points left out at the end, or `None` for 5. Defaults to `None`.

        Returns:
            The suggested learning rate, a float.
        """
        v.one_of("method", method, SUGGESTIONS)
        lrs, losses = self._window(skip_start, skip_end)
        if method == "minimum/10":
            return float(lrs[np.argmin(losses)] / 10.0)
        if method == "steepest":
            return float(lrs[np.argmin(np.gradient(losses, np.log(lrs)))])
        return float(lrs[_valley_index(losses)])

    def plot(self, ax: Any = None, method: str | None = "valley", path: str | None = None):
        """Plots the smoothed loss against the learning rate (log scale).

        Args:
            ax: Matplotlib axes to draw on; a new figure when `None`. Defaults to `None`.
            method: Suggestion to mark on the curve, or `None`. Defaults to `"valley"`.
            path: Save the figure there when given. Defaults to `None`.

        Returns:
            The matplotlib `Axes`.
        """
        try:
            import matplotlib
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError('LRFinderResult.plot needs matplotlib: pip install "keras_trainkit[examples]"') from None
        if ax is None:
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.learning_rates, self.losses, label="smoothed loss")
        if method is not None:
            lr = self.suggestion(method)
            loss = np.interp(np.log(lr), np.log(self.learning_rates), self.losses)
            ax.plot([lr], [loss], "o", color="C3", label=f"{method}: {lr:.2g}")
            ax.legend()
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        if path is not None:
            ax.figure.tight_layout()
            ax.figure.savefig(path, dpi=80)
        return ax

    def __repr__(self):
        return (f"LRFinderResult(updates={len(self.losses)}/{self.num_steps}, "
                f"stopped_early={self.stopped_early}, lr=[{self.learning_rates[0]:.3g}, "
                f"{self.learning_rates[-1]:.3g}])")


def _valley_index(losses: np.ndarray) -> int:
    """fastai's `valley`: with `run[i]` the length of the longest strictly
    decreasing subsequence ending at `i`, the valley ends at the first `i` of
    the longest one and starts `run[i]` points earlier; the suggestion lies
    `int(run / 3) + int(run / 6)` points after that start (0 at the least)."""
    run = np.ones(len(losses), dtype=int)
    for i in range(1, len(losses)):
        higher = losses[:i] > losses[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    end = int(np.argmax(run))
    start = end - int(run[end])
    sections = (end - start) / 3
    return max(start + int(sections) + int(sections / 2), 0)


# -- the test --------------------------------------------------------------------


def lr_find(model: keras.Model, x: Any, y: Any = None, *, batch_size: int | None = None,
            min_lr: float = 1e-7, max_lr: float = 10.0, num_steps: int = 100,
            stop_factor: float | None = 4.0, smoothing: float = 0.98, shuffle: bool = True,
            seed: int | None = None, verbose: int = 0) -> LRFinderResult:
    """Runs the learning-rate range test and puts the model back as it was.

    Trains `model` for up to `num_steps` updates while the learning rate grows
    exponentially from `min_lr` to `max_lr`::

        lr_k = min_lr * (max_lr / min_lr) ** (k / (num_steps - 1)),   k = 0 .. num_steps - 1

    recording the loss of every batch and its debiased moving average
    (`avg_k = smoothing * avg_{k-1} + (1 - smoothing) * loss_k`,
    `smoothed_k = avg_k / (1 - smoothing ** (k + 1))`). It stops early once
    `smoothed_k > stop_factor * min(smoothed_0..k)` or the loss is not finite.
    The defaults are fastai's.

    The rate is a schedule of the optimizer's update count, evaluated in the
    compiled train step at every update (no Python per-step rate setting);
    each batch goes through `model.train_on_batch`, whose loss is that
    batch's own (not fit's running mean). The model's optimizer is used as
    compiled (its momentum, weight decay, clipping, loss scaling), starting
    from its current state.

    Afterwards, however the test ends (an exception or Ctrl-C included), the
    model is exactly as before: every model variable (trainable,
    non-trainable, random-seed state), metric variable and optimizer variable
    (`iterations` included) bit for bit, on the torch backend torch's global
    random state (which unseeded dropout draws from), the optimizer's learning rate (the
    same variable or schedule object, tracked as before) and the model's
    compiled train function, so a later `fit()` runs exactly as it would have.
    An optimizer that was not built yet is built first, as `fit()` would build
    it; an unbuilt model is built by calling it on the first batch.

    Args:
        model: A compiled `keras.Model` with a single optimizer.
        x: Inputs: numpy-convertible arrays (or a list/tuple/dict of them), a
            batched `tf.data.Dataset` (not re-batched) or a
            `keras.utils.PyDataset` yielding `(x, y)` or `(x, y, sample_weight)`.
            Datasets are repeated as needed.
        y: Targets, for array inputs only. Defaults to `None`.
        batch_size: Batch size for array inputs (the last partial batch of a
            pass is dropped); must be `None` for datasets. Defaults to `None`
            (32 for arrays).
        min_lr: First learning rate, a float > 0. Defaults to `1e-7`.
        max_lr: Last learning rate, a float > `min_lr`. Defaults to `10.0`.
        num_steps: Number of updates, an int >= 2. Defaults to `100`.
        stop_factor: Stop when the smoothed loss exceeds this multiple (> 1)
            of its minimum, or `None` to stop only at a non-finite loss.
            Defaults to `4.0`.
        smoothing: Moving-average factor of the loss, in [0, 1) (0: raw
            losses). Defaults to `0.98`.
        shuffle: Shuffle array inputs at each pass (with a private generator;
            the global random state is untouched). Defaults to `True`.
        seed: Seed of that shuffling. Defaults to `None`.
        verbose: 1 prints one line per update. Defaults to `0`.

    Returns:
        An `LRFinderResult` (`learning_rates`, `losses`, `raw_losses`,
        `suggestion(method)`, `plot()`).

    References:
        Smith, 2017. Cyclical Learning Rates for Training Neural Networks.
        https://arxiv.org/abs/1506.01186

    Examples:
        >>> result = keras_trainkit.lr_find(model, x_train, y_train)
        >>> lr = result.suggestion()            # fastai's "valley"
        >>> model.optimizer.learning_rate = lr  # the model is as before the test
        >>> result.plot()
    """
    # Validate everything before changing anything.
    if not isinstance(model, keras.Model):
        raise ValueError(f"Argument `model` must be a keras.Model. Received: model={type(model).__name__}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("Argument `model` must be compiled with an optimizer and a loss before "
                         f"lr_find. Received: an uncompiled model {model.name!r}")
    optimizers = _optimizer_chain(model)
    target = optimizers[-1]
    if hasattr(target, "optimizers"):
        raise ValueError(
            "lr_find ramps a single optimizer's learning rate; this model's optimizer combines "
            f"{len(target.optimizers)} optimizers. Received: optimizer={type(target).__name__}"
        )
    min_lr = v.positive("min_lr", min_lr)
    max_lr = v.positive("max_lr", max_lr)
    if max_lr <= min_lr:
        raise ValueError(f"Argument `max_lr` must be > `min_lr` ({min_lr!r}). Received: max_lr={max_lr!r}")
    num_steps = v.integer("num_steps", num_steps, low=2)
    if stop_factor is not None:
        stop_factor = v.real("stop_factor", stop_factor, low=1.0, low_inclusive=False)
    smoothing = v.real("smoothing", smoothing, low=0.0, high=1.0, high_inclusive=False)
    v.boolean("shuffle", shuffle)
    if seed is not None:
        v.integer("seed", seed)
    verbose = v.integer("verbose", verbose, low=0)
    _, make_batches = _batches(x, y, batch_size, shuffle, seed)

    batches = make_batches()
    first = next(batches)
    if not model.built:
        model(first[0])  # builds the weights as fit() would
    for optimizer in optimizers:
        if not optimizer.built:
            optimizer.build(model.trainable_variables)

    start = int(ops.convert_to_numpy(target.iterations))
    ramp = _Ramp(min_lr, max_lr, num_steps, start)
    rates = min_lr * (max_lr / min_lr) ** (np.arange(num_steps) / (num_steps - 1))
    raw, smoothed = [], []
    stopped = False

    snapshot = _Snapshot(model, optimizers)
    own_rate = hooks.learning_rate_slot(target)
    train_function = model.train_function
    try:
        hooks.set_learning_rate_slot(target, ramp)
        # Traced with the ramp; on JAX a function of its own (JAX would reuse a
        # step traced for the bound `train_step`, e.g. by an earlier range test).
        hooks.rebuild_train_function(model)
        average, best = 0.0, math.inf
        batch = first
        for k in range(num_steps):
            if k:
                batch = next(batches)
            logs = model.train_on_batch(*batch, return_dict=True)
            loss = float(logs["loss"])
            average = smoothing * average + (1.0 - smoothing) * loss
            value = average / (1.0 - smoothing ** (k + 1))
            raw.append(loss)
            smoothed.append(value)
            if verbose:
                print(f"lr_find {k + 1}/{num_steps}: lr={rates[k]:.4g} loss={loss:.4f} smoothed={value:.4f}")
            best = min(best, value)
            if not math.isfinite(value) or (stop_factor is not None and k > 0 and value > stop_factor * best):
                stopped = True
                break
    finally:
        hooks.set_learning_rate_slot(target, own_rate)
        model.train_function = train_function
        if hasattr(model, "jax_state_sync"):
            model.jax_state_sync()
        model.reset_metrics()  # metric variables made during the test start fresh
        snapshot.restore()
    return LRFinderResult(rates[:len(raw)], smoothed, raw, num_steps, stopped, smoothing)
