"""Discriminative learning rates: a rate per group of layers (ULMFiT).

`DiscriminativeOptimizer` is Keras' `MultiOptimizer` with one sub-optimizer
per group of variables; `discriminative_optimizer()` builds one from a model,
an optimizer and groups of layers. `MultiOptimizer.apply` insists on a
gradient for every variable it was built on; `DiscriminativeOptimizer`
accepts a subset (layers frozen and unfrozen by
`callbacks.GradualUnfreezing`) and is otherwise Keras' class. Each
sub-optimizer counts its own updates (`iterations`): a group's Adam bias
correction, and any keras_trainkit learning-rate callback (which drives each
sub-optimizer on its own count), start when that group first trains.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import _layer_groups as groups_of_layers
from keras_trainkit import _validation as v

_MultiOptimizer = keras.optimizers.MultiOptimizer

__all__ = ["DiscriminativeOptimizer", "discriminative_optimizer"]


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

    Examples:
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
    groups = groups_of_layers.check_groups(groups)
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
    variables = groups_of_layers.group_variables(groups_of_layers.resolve_groups(model, groups))

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
    with groups_of_layers.all_trainable([layer for group in groups_of_layers.resolve_groups(model, groups) for layer in group]):
        build_list = list(model.trainable_variables)
    _plain(result, "_group_of", result._groups_for(build_list))
    _plain(result, "_variable_paths", [w.path for w in build_list])
    return result
