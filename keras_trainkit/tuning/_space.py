"""The default search space of `make_hypermodel`, user changes to it, and their checks."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping
from typing import Any

from keras_trainkit.tuning._registry import OPTIMIZERS

SCHEDULES = ("constant", "cosine", "exponential", "step", "polynomial", "inverse_time")
ACTIVATIONS = ("relu", "gelu", "swish", "tanh", "elu", "selu", "sigmoid", "leaky_relu")

# The default search space: name -> (kind, keyword arguments). Conditional
# entries name their parent and the parent values that activate them.
MAX_LAYERS, MAX_CONV_BLOCKS = 4, 3
_SPACE: dict[str, tuple[str, dict[str, Any]]] = {
    "learning_rate": ("Float", dict(min_value=1e-4, max_value=1e-1, sampling="log", default=1e-3)),
    "optimizer": ("Choice", dict(values=["adam", "adamw", "sgd", "rmsprop", "radam", "adabelief"], default="adam")),
    "sgd_momentum": ("Float", dict(min_value=0.0, max_value=0.99, default=0.9, parent=("optimizer", ["sgd"]))),
    "batch_size": ("Choice", dict(values=[16, 32, 64, 128], ordered=True, default=32)),
    "lr_schedule": ("Choice", dict(values=list(SCHEDULES), default="cosine")),
    "cosine_alpha": ("Float", dict(min_value=0.0, max_value=0.2, default=0.0, parent=("lr_schedule", ["cosine"]))),
    "exponential_decay_rate": ("Float", dict(min_value=0.01, max_value=0.9, sampling="log", default=0.1, parent=("lr_schedule", ["exponential"]))),
    "step_gamma": ("Float", dict(min_value=0.1, max_value=0.9, default=0.5, parent=("lr_schedule", ["step"]))),
    "step_count": ("Int", dict(min_value=1, max_value=5, default=2, parent=("lr_schedule", ["step"]))),
    "polynomial_power": ("Float", dict(min_value=0.5, max_value=3.0, default=1.0, parent=("lr_schedule", ["polynomial"]))),
    "inverse_time_decay_rate": ("Float", dict(min_value=0.1, max_value=20.0, sampling="log", default=1.0, parent=("lr_schedule", ["inverse_time"]))),
    "warmup_fraction": ("Float", dict(min_value=0.0, max_value=0.2, step=0.05, default=0.0)),
    "l1": ("Float", dict(min_value=1e-8, max_value=1e-2, sampling="log", default=1e-8)),
    "l2": ("Float", dict(min_value=1e-8, max_value=1e-2, sampling="log", default=1e-6)),
    "dropout": ("Float", dict(min_value=0.0, max_value=0.5, step=0.05, default=0.1)),
    "activation": ("Choice", dict(values=["relu", "gelu", "swish", "tanh"], default="relu")),
    "num_layers": ("Int", dict(min_value=1, max_value=MAX_LAYERS, default=2)),
    **{f"units_{i}": ("Int", dict(min_value=16, max_value=512, step=16, default=128,
                                  parent=("num_layers", list(range(i + 1, MAX_LAYERS + 1)))))
       for i in range(MAX_LAYERS)},
    "conv_blocks": ("Int", dict(min_value=1, max_value=MAX_CONV_BLOCKS, default=2, image=True)),
    **{f"filters_{i}": ("Int", dict(min_value=8, max_value=128, step=8, default=32, image=True,
                                    parent=("conv_blocks", list(range(i + 1, MAX_CONV_BLOCKS + 1)))))
       for i in range(MAX_CONV_BLOCKS)},
}
ARCHITECTURE = {"activation", "num_layers", "conv_blocks"} | {
    n for n in _SPACE if n.startswith(("units_", "filters_"))}

# The values each built-in hyperparameter may take:
# name -> (low, low_inclusive, high, high_inclusive, integer, what the bound means).
_INF = float("inf")
_LIMITS: dict[str, tuple[float, bool, float, bool, bool, str]] = {
    "learning_rate": (0.0, False, _INF, True, False, "a learning rate > 0"),
    "sgd_momentum": (0.0, True, 1.0, False, False, "a momentum in [0, 1)"),
    "batch_size": (1, True, _INF, True, True, "a positive integer batch size"),
    "cosine_alpha": (0.0, True, 1.0, True, False, "a floor fraction in [0, 1]"),
    "exponential_decay_rate": (0.0, False, _INF, True, False, "a decay rate > 0"),
    "step_gamma": (0.0, False, 1.0, True, False, "a factor in (0, 1]"),
    "step_count": (1, True, _INF, True, True, "an integer >= 1"),
    "polynomial_power": (0.0, False, _INF, True, False, "a power > 0"),
    "inverse_time_decay_rate": (0.0, True, _INF, True, False, "a decay rate >= 0"),
    "warmup_fraction": (0.0, True, 1.0, True, False, "a fraction of the trial's updates in [0, 1]"),
    "l1": (0.0, True, _INF, True, False, "a regularization factor >= 0"),
    "l2": (0.0, True, _INF, True, False, "a regularization factor >= 0"),
    "dropout": (0.0, True, 1.0, False, False, "a dropout rate in [0, 1)"),
    "num_layers": (0, True, MAX_LAYERS, True, True,
                   f"an integer from 0 to {MAX_LAYERS}, the most Dense layers the built-in MLP supports "
                   f"(for more, pass build_backbone)"),
    "conv_blocks": (0, True, MAX_CONV_BLOCKS, True, True,
                    f"an integer from 0 to {MAX_CONV_BLOCKS}, the most convolution blocks the built-in "
                    f"CNN supports (for more, pass build_backbone)"),
    **{f"units_{i}": (1, True, _INF, True, True, "a positive number of units") for i in range(MAX_LAYERS)},
    **{f"filters_{i}": (1, True, _INF, True, True, "a positive number of filters") for i in range(MAX_CONV_BLOCKS)},
}
# Hyperparameters that `search_space={name: None}` leaves out of the space.
REMOVABLE = ("batch_size",)
_RENAMED = {"warmup_steps": "warmup_fraction (a fraction of the trial's updates, e.g. 0.1)"}
KINDS = ("Float", "Int", "Choice", "Boolean", "Fixed")


def default_search_space() -> dict[str, tuple[str, dict[str, Any]]]:
    """A copy of the default search space table: `name -> (kind, arguments)`.

    `kind` is the `keras_tuner.HyperParameters` method (`"Float"`, `"Int"`,
    `"Choice"`, ...); `arguments` are its keyword arguments, plus `parent`
    `(name, values)` for a conditional entry and `image=True` for entries
    that exist only for image input.

    Returns:
        A new dict; changing it does not change the default.
    """
    return copy.deepcopy(_SPACE)


def space_for(image: bool, custom_backbone: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    space = default_search_space()
    for name in list(space):
        kind, kwargs = space[name]
        if (kwargs.get("image") and not image) or (custom_backbone and name in ARCHITECTURE):
            del space[name]
    return space


def apply_changes(space, changes):
    """Applies `make_hypermodel(search_space=...)` to `space` (in place) and checks it."""
    if not isinstance(changes, Mapping):
        raise ValueError(f"Argument `search_space` must be a dict. Received: search_space={changes!r}")
    for name, change in changes.items():
        where = f"search_space[{name!r}]"
        if change is None:
            if name not in REMOVABLE:
                raise ValueError(
                    f"Argument `{where}` is None, which only {list(REMOVABLE)} accept (the data "
                    f"then sets it); fix a value instead. Received: {where}=None")
            space.pop(name, None)
        elif isinstance(change, tuple) and len(change) == 2 and change[0] in KINDS:
            space[name] = (change[0], dict(change[1]))
        elif name not in space:
            hint = f" {name!r} was replaced by {_RENAMED[name]}." if name in _RENAMED else ""
            raise ValueError(
                f"Argument `search_space` names an unknown hyperparameter {name!r};{hint} known: "
                f"{sorted(space)} (add a new one as (kind, kwargs)). Received: {where}={change!r}")
        elif isinstance(change, Mapping):
            kind, kwargs = space[name]
            allowed = {"values", "ordered", "default"} if kind == "Choice" else (
                {"min_value", "max_value", "step", "sampling", "default"} if kind in ("Float", "Int") else {"default"})
            unknown = set(change) - allowed
            if unknown:
                raise ValueError(f"Argument `{where}` has keys {sorted(unknown)} that a {kind} does not take "
                                 f"(it takes {sorted(allowed)}). Received: {where}={change!r}")
            kwargs = {**kwargs, **change}
            if kind == "Choice" and "values" in change and "default" not in change \
                    and kwargs.get("default") not in change["values"]:
                kwargs.pop("default", None)
            if kind in ("Float", "Int") and "default" not in change and kwargs.get("default") is not None \
                    and _is_number(kwargs.get("min_value")) and _is_number(kwargs.get("max_value")) \
                    and not kwargs["min_value"] <= kwargs["default"] <= kwargs["max_value"]:
                kwargs.pop("default")  # the inherited default left the narrowed range
            space[name] = (kind, kwargs)
        elif isinstance(change, list):
            # Any hyperparameter becomes a Choice among the given values.
            kind, kwargs = space[name]
            new = {"values": list(change)}
            if kind == "Choice" and "ordered" in kwargs:
                new["ordered"] = kwargs["ordered"]
            if kwargs.get("default") in change:
                new["default"] = kwargs["default"]
            if "parent" in kwargs:
                new["parent"] = kwargs["parent"]
            space[name] = ("Choice", new)
        else:
            kwargs = {"value": change}
            if "parent" in space[name][1]:
                kwargs["parent"] = space[name][1]["parent"]
            space[name] = ("Fixed", kwargs)
    for name, (kind, kwargs) in space.items():
        check_entry(name, kind, kwargs)
    return space


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _possible_values(kind, kwargs) -> list[tuple[str, Any]]:
    """(argument, value) pairs bounding what a hyperparameter can take."""
    if kind in ("Float", "Int"):
        out = [("min_value", kwargs.get("min_value")), ("max_value", kwargs.get("max_value"))]
        if kwargs.get("default") is not None:
            out.append(("default", kwargs["default"]))
        return out
    if kind == "Choice":
        return [("values", v) for v in kwargs.get("values") or []]
    if kind == "Fixed":
        return [("value", kwargs.get("value"))]
    return []


def check_entry(name, kind, kwargs):
    where = f"search_space[{name!r}]"
    if kind not in KINDS:
        raise ValueError(f"Argument `{where}` has an unknown type {kind!r}; use one of {KINDS}.")
    if kind in ("Float", "Int"):
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        if not _is_number(lo) or not _is_number(hi) or not lo <= hi:
            raise ValueError(f"Argument `{where}` needs min_value <= max_value. Received: min_value={lo!r}, max_value={hi!r}")
        if kwargs.get("sampling") == "log" and lo <= 0:
            raise ValueError(f"Argument `{where}` samples on a log scale and needs min_value > 0. Received: min_value={lo!r}")
        default = kwargs.get("default")
        if default is not None and not lo <= default <= hi:
            raise ValueError(f"Argument `{where}` has a default outside [min_value, max_value]. Received: default={default!r}")
    if kind == "Choice":
        values = kwargs.get("values")
        if not values:
            raise ValueError(f"Argument `{where}` needs a non-empty list of values. Received: values={values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"Argument `{where}` has repeated values. Received: values={values!r}")
    values = kwargs.get("values") if kind == "Choice" else [kwargs.get("value")] if kind == "Fixed" else None
    known = {"optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES, "activation": ACTIVATIONS}.get(name)
    if known is not None and values is not None:
        bad = [x for x in values if x not in known]
        if bad:
            extra = " (add one with keras_trainkit.tuning.register_optimizer)" if name == "optimizer" else ""
            raise ValueError(f"Argument `{where}` has unknown {name} names {bad}; known: {sorted(known)}{extra}.")
    if name in _LIMITS:
        if kind == "Boolean":
            raise ValueError(f"Argument `{where}` cannot be a Boolean. Received: {where}={(kind, kwargs)!r}")
        low, low_in, high, high_in, integer, meaning = _LIMITS[name]
        for argument, value in _possible_values(kind, kwargs):
            ok = _is_number(value) and (low < value or (low_in and value == low)) and (
                value < high or (high_in and value == high))
            if integer and (kind == "Float" or not isinstance(value, numbers.Integral)):
                ok = False
            if not ok:
                raise ValueError(
                    f"Argument `{where}` must only give {name} values that are {meaning}; its "
                    f"{argument} is {value!r}. Received: {where}={_shown(kind, kwargs)}")


def _shown(kind, kwargs):
    shown = {k: v for k, v in kwargs.items() if k not in ("parent", "image")}
    return f"({kind!r}, {shown!r})"
