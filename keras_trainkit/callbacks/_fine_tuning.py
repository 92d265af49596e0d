"""Fine-tuning: gradual unfreezing inside one `fit()`, discriminative rates.

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

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import keras

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _validation as v
from keras_trainkit.callbacks._session import Participant, Session

_MultiOptimizer = keras.optimizers.MultiOptimizer


@keras.saving.register_keras_serializable(package="keras_trainkit")
class DiscriminativeOptimizer(hooks.SubsetMultiOptimizer):
    """Keras' `MultiOptimizer` with one sub-optimizer per group of variables.

    Build it with `discriminative_optimizer()`. Two differences from Keras'
    class, both needed for fine-tuning:

    - Keras' `MultiOptimizer.apply` requires a gradient for every variable it
      was built on, so it cannot train a model whose layers are frozen and
      unfrozen after it was built; this subclass dispatches whatever subset it
      receives (each variable to its group's optimizer).
    - Keras maps variables to sub-optimizers by `variable.path`, which is not
      stable across a save/load round trip (a model rebuilt from its config
      creates `dense/kernel` where the original had `sequential/dense/kernel`),
      so Keras' own `MultiOptimizer` fails to load its state in Keras 3.15.
      This subclass maps the variables it was created for by identity, and
      saves each variable's group by its position in the list it was built on
      (Keras builds a loaded model's optimizer on `model.trainable_variables`,
      the same list when the model is saved with the same layers trainable).

    Args:
        optimizer_map: A `keras.optimizers.OptimizerMap` whose default optimizer
            is group 0's and whose key `"group<i>"` holds group `i`'s.
        group_of: Group index of each variable, in build order (set by
            `discriminative_optimizer()` and by saving). Defaults to `None`.
        variable_paths: The paths of those variables, for a best-effort
            match when a loaded model is built on a different list. Defaults to
            `None`.
        loss_scale_factor: As in `MultiOptimizer`. Defaults to `None`.
        name: As in `MultiOptimizer`. Defaults to `None`.
    """

    def __init__(self, optimizer_map, group_of=None, variable_paths=None,
                 loss_scale_factor=None, name=None):
        super().__init__(optimizer_map, loss_scale_factor=loss_scale_factor, name=name)
        # Plain attributes (object.__setattr__): Keras' tracker would wrap lists.
        _plain(self, "_group_of", None if group_of is None else [int(g) for g in group_of])
        _plain(self, "_variable_paths", None if variable_paths is None else list(variable_paths))
        _plain(self, "_group_by_id", None)

    def group_optimizer(self, group: int) -> keras.optimizers.Optimizer:
        """The sub-optimizer of group `group` (0 is the default optimizer)."""
        if group == 0:
            return self.optimizer_map().default_optimizer
        return hooks.optimizer_map_entry(self.optimizer_map(), f"group{group}")

    @property
    def num_groups(self) -> int:
        """The number of groups (sub-optimizers)."""
        return len(self.optimizer_map()) + 1

    @property
    def group_learning_rates(self) -> list[float]:
        """The current learning rate of each group, group 0 first."""
        return [float(keras.ops.convert_to_numpy(self.group_optimizer(g).learning_rate))
                for g in range(self.num_groups)]

    def _groups_for(self, var_list) -> list[int]:
        if self._group_by_id is not None:
            return [self._group_by_id.get(id(w), 0) for w in var_list]
        if self._group_of is not None and len(self._group_of) == len(var_list):
            return list(self._group_of)
        if self._group_of is None or self._variable_paths is None:
            return [0] * len(var_list)
        return _match_paths(var_list, self._variable_paths, self._group_of)

    def build(self, var_list):
        """Builds each group's optimizer on its variables (groups by identity,
        then by saved position or path)."""
        if self.built:
            return
        var_list = list(var_list)
        groups = self._groups_for(var_list)
        targets = {id(w): self.group_optimizer(g) for w, g in zip(var_list, groups)}
        self.build_with(var_list, lambda w: targets[id(w)])
        _plain(self, "_group_of", groups)
        _plain(self, "_variable_paths", [w.path for w in var_list])

    def get_config(self):
        return {**super().get_config(), "group_of": self._group_of,
                "variable_paths": self._variable_paths}


def _plain(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _match_paths(var_list, paths: list[str], group_of: list[int]) -> list[int]:
    """Best effort: a variable matches a saved path when one ends with the other."""
    groups, unmatched = [], []
    for w in var_list:
        hits = {g for p, g in zip(paths, group_of)
                if p == w.path or p.endswith("/" + w.path) or w.path.endswith("/" + p)}
        if len(hits) != 1:
            unmatched.append(w.path)
        groups.append(hits.pop() if len(hits) == 1 else 0)
    if unmatched:
        warnings.warn(
            "DiscriminativeOptimizer: built on other variables than it was saved with; "
            f"{len(unmatched)} could not be matched to a group and train with group 0: "
            f"{unmatched[:5]}", stacklevel=2)
    return groups


# -- groups of layers ---------------------------------------------------------------
def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    for layer in hooks.flatten_layers(model, include_self=False):
        if layer.name == name:
            return layer
    raise ValueError(
        f"Argument `groups` names a layer that model {model.name!r} does not contain. "
        f"Received: {name!r}")


def _resolve_groups(model: keras.Model, groups: Sequence[Any]) -> list[list[keras.layers.Layer]]:
    resolved = []
    for group in groups:
        members = group if isinstance(group, (list, tuple)) else [group]
        if not members:
            raise ValueError(f"Argument `groups` must not contain an empty group. Received: {groups!r}")
        layers = []
        for member in members:
            if isinstance(member, str):
                layers.append(_find_layer(model, member))
            elif isinstance(member, keras.layers.Layer):
                layers.append(member)
            else:
                raise ValueError(
                    "Argument `groups` must hold layers or layer names (or lists of them). "
                    f"Received: {member!r}")
        resolved.append(layers)
    return resolved


def _check_groups(groups: Any) -> list[Any]:
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            "Argument `groups` must be a non-empty list of layers, layer names, or lists of "
            f"them. Received: groups={groups!r}")
    return list(groups)


def _set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """`layer.trainable = value`, always propagated to the sublayers.

    On the TensorFlow backend `layer.trainable = True` is skipped when
    `layer.trainable` is already True (its `__setattr__` short-circuits
    `self.x = value` when `self.x is value`), leaving frozen sublayers frozen;
    calling the property's setter always runs it.
    """
    keras.layers.Layer.trainable.fset(layer, bool(value))


@contextlib.contextmanager
def _all_trainable(layers: Sequence[keras.layers.Layer]) -> Iterator[None]:
    """Temporarily sets `trainable=True` on `layers`, then restores every flag."""
    flat = []
    for layer in layers:
        flat.extend(hooks.flatten_layers(layer, include_self=True))
    saved_layers = [(layer, layer.trainable) for layer in flat]
    saved_vars = [(w, w.trainable) for layer in flat for w in layer.weights]
    try:
        for layer in layers:
            _set_trainable(layer, True)
        yield
    finally:
        for layer, flag in saved_layers:  # parents come before their children
            _set_trainable(layer, flag)
        for w, flag in saved_vars:
            w.trainable = flag


def _group_variables(groups: list[list[keras.layers.Layer]]) -> list[list[Any]]:
    """Each group's variables that train when the group is trainable (checked disjoint)."""
    with _all_trainable([layer for group in groups for layer in group]):
        out = []
        for group in groups:
            seen: dict[int, Any] = {}
            for layer in group:
                for w in layer.trainable_weights:
                    seen.setdefault(id(w), w)
            out.append(list(seen.values()))
    owner: dict[int, int] = {}
    for i, variables in enumerate(out):
        if not variables:
            names = [layer.name for layer in groups[i]]
            raise ValueError(
                f"Argument `groups`: group {i} ({names}) has no trainable weights (is the model "
                "built?).")
        for w in variables:
            if owner.setdefault(id(w), i) != i:
                raise ValueError(
                    f"Argument `groups`: variable {w.path!r} is in groups {owner[id(w)]} and {i}; "
                    "groups must not overlap.")
    return out


# -- discriminative learning rates ----------------------------------------------------
def discriminative_optimizer(model: keras.Model, optimizer: Any, groups: Sequence[Any] | None = None,
                             decay: float = 0.5, multipliers: Sequence[float] | None = None,
                             name: str | None = None) -> DiscriminativeOptimizer:
    """Per-group learning rates, lower towards the input (ULMFiT's discriminative rates).

    ```
    lr_i = lr * m_i,    m_i = decay ** i   (or multipliers[i])
    ```

    for group `i`, counted from the output (`groups[0]`, usually the new head,
    gets `lr`). Each group gets its own copy of `optimizer` (same class and
    hyperparameters, rate `lr_i`) inside a `DiscriminativeOptimizer` (Keras'
    `MultiOptimizer`). Variables in no group train with group 0's optimizer.
    Groups are matched by variable path, so the optimizer saves and loads with
    the model.

    Args:
        model: The model to train, built (its variables must exist).
        optimizer: A Keras optimizer (or its name) with a float learning rate:
            the rate and hyperparameters of group 0. For a schedule, compile
            with a float and add a keras_trainkit learning-rate callback: it
            drives every group, each from its own base rate.
        groups: Groups from the output down; each a layer, a layer name, or a
            list of them. `None` makes each top-level layer with weights its
            own group, last layer first. Defaults to `None`.
        decay: Geometric factor between consecutive groups, in (0, 1].
            Ignored when `multipliers` is given. Defaults to `0.5`.
        multipliers: Explicit multiplier of each group, finite floats > 0.
            Defaults to `None`.
        name: Name of the optimizer. Defaults to `None` (`"discriminative"`).

    Returns:
        A `DiscriminativeOptimizer` to pass to `model.compile()`.

    Example:
        >>> opt = discriminative_optimizer(model, keras.optimizers.Adam(1e-3),
        ...                                groups=["head", "block3", ["block2", "block1"]],
        ...                                decay=0.3)   # 1e-3, 3e-4, 9e-5
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Argument `model` must be a keras.Model. Received: model={model!r}")
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
            optimizer, (_MultiOptimizer, keras.optimizers.LossScaleOptimizer)):
        raise ValueError(
            "Argument `optimizer` must be a single Keras optimizer (not a MultiOptimizer or "
            f"LossScaleOptimizer). Received: optimizer={optimizer!r}")
    if not isinstance(hooks.learning_rate_slot(optimizer), keras.Variable):
        raise ValueError(
            "Argument `optimizer` must have a float learning rate (drive schedules with a "
            "keras_trainkit learning-rate callback). Received: "
            f"learning_rate={hooks.learning_rate_slot(optimizer)!r}")
    if groups is None:
        groups = [layer for layer in reversed(model.layers) if layer.weights]
    groups = _check_groups(groups)
    if multipliers is None:
        decay = v.real("decay", decay, low=0.0, high=1.0, low_inclusive=False)
        multipliers = [decay**i for i in range(len(groups))]
    else:
        if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, Sequence) or \
                len(multipliers) != len(groups):
            raise ValueError(
                f"Argument `multipliers` must be a sequence of {len(groups)} numbers (one per "
                f"group). Received: multipliers={multipliers!r}")
        multipliers = [v.positive("multipliers", m) for m in multipliers]
    variables = _group_variables(_resolve_groups(model, groups))

    config = optimizer.get_config()
    base_rate = float(config["learning_rate"])
    base_name = config.get("name") or "optimizer"

    def copy_with(i: int):
        return type(optimizer).from_config(
            {**config, "learning_rate": base_rate * multipliers[i], "name": f"{base_name}_group{i}"})

    optimizer_map = keras.optimizers.OptimizerMap(copy_with(0))
    for i in range(1, len(groups)):
        optimizer_map[f"group{i}"] = copy_with(i)
    result = DiscriminativeOptimizer(optimizer_map, name=name or "discriminative")
    _plain(result, "_group_by_id", {id(w): i for i, ws in enumerate(variables) for w in ws})
    # What get_config() saves until the optimizer is built: groups in the order
    # Keras builds it (model.trainable_variables with every group trainable).
    with _all_trainable([layer for group in _resolve_groups(model, groups) for layer in group]):
        build_list = list(model.trainable_variables)
    _plain(result, "_group_of", result._groups_for(build_list))
    _plain(result, "_variable_paths", [w.path for w in build_list])
    return result


# -- gradual unfreezing -----------------------------------------------------------------
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

    Example:
        >>> model.compile(discriminative_optimizer(model, keras.optimizers.Adam(1e-3),
        ...                                        groups=["head", "b3", "b2", "b1"]), ...)
        >>> model.fit(x, y, epochs=8, callbacks=[
        ...     GradualUnfreezing(["b3", "b2", "b1"], every=2)])  # b3 at 2, b2 at 4, b1 at 6
    """

    def __init__(self, groups: Sequence[Any], unfreeze_at: Sequence[int] | None = None,
                 every: int | None = None, unit: str = "epoch", verbose: int = 0):
        super().__init__()
        self.groups = _check_groups(groups)
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
        _group_variables(_resolve_groups(self.model, self.groups))

    def on_train_begin(self, logs=None):
        Session.begin(self)
        model = self.model
        self._group_layers = _resolve_groups(model, self.groups)
        self._build_optimizer(model, _group_variables(self._group_layers))
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
                _set_trainable(layer, flag)
            for w, flag in saved_vars:
                w.trainable = flag

        session.on_undo(restore, on_success=False)
        session.rebuild_train_function_on_close = True
        position = 0 if self.unit == "epoch" else int(model.optimizer.iterations)
        for i, layers in enumerate(self._group_layers):
            for layer in layers:
                _set_trainable(layer, self.unfreeze_at[i] <= position)
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
                    _set_trainable(layer, True)
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
        with _all_trainable([layer for layers in self._group_layers for layer in layers]):
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
