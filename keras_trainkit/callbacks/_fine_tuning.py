"""Fine-tuning: gradual unfreezing inside one `fit()` (discriminative rates:
`keras_trainkit.optimizers.discriminative_optimizer`).

What this relies on in Keras 3.15 (TensorFlow backend)
------------------------------------------------------
- The compiled train step reads `model.trainable_weights` when it is traced;
  `Layer.trainable`'s own docstring says that after changing it during
  training you call `model.make_train_function(force=True)`. `fit()` looks
  `model.train_function` up at every step, so the next step runs the rebuilt
  function (one retrace per unfreezing event; no `compile()`).
- `Optimizer.apply(grads, variables)` accepts any subset of the variables the
  optimizer was built on and looks each variable's slots up by identity. So
  the optimizer is built once, before the first step, on every variable that
  will ever train (all groups unfrozen): slots are never re-created, the
  head's momentum carries across an unfreezing, and a group's slots hold their
  initial values until it first trains. `MultiOptimizer.apply` insists on a
  gradient for every variable it was built on; `DiscriminativeOptimizer` (a
  `MultiOptimizer`) accepts a subset and is otherwise Keras' class.
- A layer with `trainable=False` gets no gradient update, and
  `BatchNormalization` runs in inference mode (its moving statistics do not
  move), so frozen layers stay bit-for-bit unchanged.
- `MultiOptimizer` dispatches each variable to a sub-optimizer that counts its
  own updates (`iterations`): a group's Adam bias correction, and any
  keras_trainkit learning-rate callback (which drives each sub-optimizer on
  its own count), start when that group first trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _layer_groups as groups_of_layers
from keras_trainkit import _validation as v
from keras_trainkit.callbacks._session import Participant, Session
from keras_trainkit.optimizers._discriminative import DiscriminativeOptimizer

_MultiOptimizer = keras.optimizers.MultiOptimizer


class GradualUnfreezing(Participant):
    """Unfreezes groups of layers one after another inside a single `fit()`.

    At the start of training every group whose time has not come is frozen
    (`trainable=False`); group `i` becomes trainable from epoch (or optimizer
    update) `unfreeze_at[i]` on. Typically `groups` lists the pretrained
    backbone from the top down and the new head is not in any group (it trains
    from the start), as in ULMFiT's gradual unfreezing.

    No recompiling: on each change the callback calls
    `model.make_train_function(force=True)`, which Keras documents for a
    `trainable` change during training, and `fit()` picks the new function up at
    the next step. No optimizer state is lost: at `on_train_begin` the optimizer
    is built on every variable that will ever train (all groups unfrozen), so
    its slots exist up front and are never re-created. Frozen layers do not
    change at all, including `BatchNormalization` statistics (Keras runs a
    non-trainable BN in inference mode). Use a plain Keras optimizer or
    `discriminative_optimizer()`; Keras' own `MultiOptimizer` cannot train a
    subset of its variables.

    - `unit="epoch"`: group `i` trains from epoch `unfreeze_at[i]` (0-based).
    - `unit="step"`: group `i` trains from update `t = unfreeze_at[i]` on, with
      `t = optimizer.iterations` (updates already applied, across `fit()`
      calls): it is frozen for the first `unfreeze_at[i]` updates. The check
      runs after every batch (with `steps_per_execution=k`, after every `k`).

    Groups are unfrozen by setting `trainable=True` on their layers, which
    Keras propagates to all their sublayers. Flags stay as reached when `fit()`
    ends. The optimizer must be unbuilt when training starts, or already built
    on every variable of the groups (e.g. by an earlier `fit()` with this
    callback): freeze layers with this callback, not before compiling.

    Args:
        groups: Groups of layers in unfreezing order; each a layer, a layer name
            (searched recursively) or a list of them.
        unfreeze_at: When each group starts training, non-decreasing ints >= 0,
            one per group. Give this or `every`. Defaults to `None`.
        every: Unfreeze one more group every `every` epochs/updates (group `i`
            at `(i + 1) * every`), an int >= 1. Defaults to `None`.
        unit: `"epoch"` or `"step"`. Defaults to `"epoch"`.
        verbose: 1 prints each unfreezing. Defaults to `0`.

    Attributes:
        unfrozen_at: `{group index: epoch or update}` at which each group was
            unfrozen during the last `fit()`.

    Examples:
        >>> model.compile(discriminative_optimizer(model, keras.optimizers.Adam(1e-3),
        ...                                        groups=["head", "b3", "b2", "b1"]), ...)
        >>> model.fit(x, y, epochs=8, callbacks=[
        ...     GradualUnfreezing(["b3", "b2", "b1"], every=2)])  # b3 at 2, b2 at 4, b1 at 6
    """

    def __init__(self, groups: Sequence[Any], unfreeze_at: Sequence[int] | None = None,
                 every: int | None = None, unit: str = "epoch", verbose: int = 0):
        super().__init__()
        self.groups = groups_of_layers.check_groups(groups)
        if (unfreeze_at is None) == (every is None):
            raise ValueError(
                "Exactly one of `unfreeze_at` and `every` must be given. Received: "
                f"unfreeze_at={unfreeze_at!r}, every={every!r}")
        if every is not None:
            every = v.integer("every", every, low=1)
            unfreeze_at = [every * (i + 1) for i in range(len(self.groups))]
        else:
            requirement = (f"a sequence of {len(self.groups)} non-decreasing integers >= 0 "
                           "(one per group)")
            ok = (not isinstance(unfreeze_at, (str, bytes)) and isinstance(unfreeze_at, Sequence)
                  and len(unfreeze_at) == len(self.groups))
            if ok:
                try:
                    unfreeze_at = [v.integer("unfreeze_at", t, low=0) for t in unfreeze_at]
                except ValueError:
                    ok = False
            if not ok or any(b < a for a, b in zip(unfreeze_at, unfreeze_at[1:])):
                raise ValueError(
                    f"Argument `unfreeze_at` must be {requirement}. Received: "
                    f"unfreeze_at={unfreeze_at!r}")
        self.every = every
        self.unfreeze_at = list(unfreeze_at)
        self.unit = v.one_of("unit", unit, ("epoch", "step"))
        if self.unit == "step":
            # Instance attribute: only step-based unfreezing has a batch hook, so
            # Keras keeps its asynchronous batch dispatch otherwise.
            self.on_train_batch_end = self._check_step
        self.verbose = v.integer("verbose", verbose, low=0)
        self.unfrozen_at: dict[int, int] = {}
        self._group_layers: list[list[keras.layers.Layer]] | None = None
        self._frozen: list[bool] = []

    # -- hooks ------------------------------------------------------------------------
    _runtime_attributes = ("_group_layers",)
    _shared_attributes = ("groups",)  # layers given as objects are shared, never copied

    def _check(self, session):
        if keras.backend.backend() == "jax":
            raise RuntimeError(
                "GradualUnfreezing runs on the tensorflow and torch backends: it builds the optimizer "
                "on every variable that will ever train and applies it to the trainable subset, "
                "while Keras' JAX trainer applies the optimizer statelessly to exactly the variables "
                "it was built on. Current backend: 'jax'. On JAX, unfreeze between fit() calls and "
                "compile again.")
        _check_optimizer(self.model)
        groups_of_layers.group_variables(groups_of_layers.resolve_groups(self.model, self.groups))

    def on_train_begin(self, logs=None):
        Session.begin(self)
        model = self.model
        self._group_layers = groups_of_layers.resolve_groups(model, self.groups)
        self._build_optimizer(model, groups_of_layers.group_variables(self._group_layers))
        self.unfrozen_at = {}
        self._frozen = [False] * len(self._group_layers)

    def _attach(self, session):
        """Freezes the groups whose time has not come (undone if the fit fails;
        the flags reached stay when it ends normally)."""
        model = self.model
        flat = [sub for layers in self._group_layers for layer in layers
                for sub in hooks.flatten_layers(layer, include_self=True)]
        saved = [(layer, layer.trainable) for layer in flat]
        saved_vars = [(w, w.trainable) for layer in flat for w in layer.weights]

        def restore():
            for layer, flag in saved:  # parents come before their children
                groups_of_layers.set_trainable(layer, flag)
            for w, flag in saved_vars:
                w.trainable = flag

        session.on_undo(restore, on_success=False)
        session.rebuild_train_function_on_close = True
        position = 0 if self.unit == "epoch" else int(model.optimizer.iterations)
        for i, layers in enumerate(self._group_layers):
            for layer in layers:
                groups_of_layers.set_trainable(layer, self.unfreeze_at[i] <= position)
            self._frozen[i] = self.unfreeze_at[i] > position
            if not self._frozen[i]:
                self.unfrozen_at[i] = position

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._advance(epoch)

    def _check_step(self, batch, logs=None):
        if any(self._frozen):
            self._advance(int(self.model.optimizer.iterations))

    def on_train_end(self, logs=None):
        self._group_layers = None

    # -- internals --------------------------------------------------------------------
    def _advance(self, position: int) -> None:
        changed = []
        for i, layers in enumerate(self._group_layers or []):
            if self._frozen[i] and self.unfreeze_at[i] <= position:
                for layer in layers:
                    groups_of_layers.set_trainable(layer, True)
                self._frozen[i] = False
                self.unfrozen_at[i] = position
                changed.append(i)
        if changed:
            session = Session.of(self.model)
            if session is not None:
                session.retrace()
            else:
                self.model.make_train_function(force=True)
            if self.verbose:
                names = "; ".join(", ".join(layer.name for layer in self._group_layers[i]) for i in changed)
                print(f"\nGradualUnfreezing: {self.unit} {position}: unfroze {names}")

    def _build_optimizer(self, model: keras.Model, group_vars: list[list[Any]]) -> None:
        optimizer = _check_optimizer(model)
        with groups_of_layers.all_trainable([layer for layers in self._group_layers for layer in layers]):
            everything = list(model.trainable_variables)
        if not optimizer.built:
            optimizer.build(everything)
            return
        known = {id(w) for w in hooks.built_variables(optimizer)}
        missing = [w.path for ws in group_vars for w in ws if id(w) not in known]
        if missing:
            raise ValueError(
                "GradualUnfreezing: the optimizer was already built without the variables "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, so it cannot train them "
                "later. Compile with a fresh optimizer and let this callback freeze the groups "
                "(it builds the optimizer on every variable that will ever train).")


def _check_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("GradualUnfreezing needs a compiled model (with an optimizer).")
    inner = hooks.unwrap(optimizer)
    if isinstance(inner, _MultiOptimizer) and not isinstance(inner, DiscriminativeOptimizer):
        raise ValueError(
            "GradualUnfreezing cannot train with keras.optimizers.MultiOptimizer, whose "
            "apply() needs a gradient for every variable it was built on; build per-group "
            "optimizers with keras_trainkit.callbacks.discriminative_optimizer() instead. "
            f"Received: optimizer={inner!r}")
    return optimizer
