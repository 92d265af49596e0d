"""Groups of layers for fine-tuning: resolving names, trainable flags, variables.

Shared by `optimizers.discriminative_optimizer` (a rate per group) and
`callbacks.GradualUnfreezing` (unfreezing group by group).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras

from keras_trainkit import _keras_hooks as hooks


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    for layer in hooks.flatten_layers(model, include_self=False):
        if layer.name == name:
            return layer
    raise ValueError(
        f"Argument `groups` names a layer that model {model.name!r} does not contain. "
        f"Received: {name!r}")


def resolve_groups(model: keras.Model, groups: Sequence[Any]) -> list[list[keras.layers.Layer]]:
    resolved = []
    for group in groups:
        members = group if isinstance(group, (list, tuple)) else [group]
        if not members:
            raise ValueError(f"Argument `groups` must not contain an empty group. Received: {groups!r}")
        layers = []
        for member in members:
            if isinstance(member, str):
                layers.append(find_layer(model, member))
            elif isinstance(member, keras.layers.Layer):
                layers.append(member)
            else:
                raise ValueError(
                    "Argument `groups` must hold layers or layer names (or lists of them). "
                    f"Received: {member!r}")
        resolved.append(layers)
    return resolved


def check_groups(groups: Any) -> list[Any]:
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            "Argument `groups` must be a non-empty list of layers, layer names, or lists of "
            f"them. Received: groups={groups!r}")
    return list(groups)


def set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """`layer.trainable = value`, always propagated to the sublayers.

    On the TensorFlow backend `layer.trainable = True` is skipped when
    `layer.trainable` is already True (its `__setattr__` short-circuits
    `self.x = value` when `self.x is value`), leaving frozen sublayers frozen;
    calling the property's setter always runs it.
    """
    keras.layers.Layer.trainable.fset(layer, bool(value))


@contextlib.contextmanager
def all_trainable(layers: Sequence[keras.layers.Layer]) -> Iterator[None]:
    """Temporarily sets `trainable=True` on `layers`, then restores every flag."""
    flat = []
    for layer in layers:
        flat.extend(hooks.flatten_layers(layer, include_self=True))
    saved_layers = [(layer, layer.trainable) for layer in flat]
    saved_vars = [(w, w.trainable) for layer in flat for w in layer.weights]
    try:
        for layer in layers:
            set_trainable(layer, True)
        yield
    finally:
        for layer, flag in saved_layers:  # parents come before their children
            set_trainable(layer, flag)
        for w, flag in saved_vars:
            w.trainable = flag


def group_variables(groups: list[list[keras.layers.Layer]]) -> list[list[Any]]:
    """Each group's variables that train when the group is trainable (checked disjoint)."""
    with all_trainable([layer for group in groups for layer in group]):
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
