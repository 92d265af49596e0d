"""Objectives: the direction of a metric, and the metric names a model compiles."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import keras_tuner
from keras_tuner.engine import metrics_tracking

__all__ = ["make_objective", "metric_direction"]

# Metrics exported by `keras.metrics` for which higher is better although Keras
# Tuner 1.4.8's `infer_metric_direction` says "min" (its rule: a name known to
# keras.metrics that is not on its short list of "max" metrics is minimized)
# or fails. Pinned against measured values of every `keras.metrics` export by
# tests/test_tuning_objective.py.
HIGHER_IS_BETTER = frozenset({
    "BinaryIoU", "ConcordanceCorrelation", "CosineSimilarity", "F1Score", "FBetaScore", "IoU",
    "MeanIoU", "OneHotIoU", "OneHotMeanIoU", "PearsonCorrelation", "PrecisionAtRecall", "R2Score",
    "RecallAtPrecision", "concordance_correlation", "pearson_correlation",
    "sparse_top_k_categorical_accuracy", "top_k_categorical_accuracy",
})
# Aggregators: their direction is that of whatever they aggregate.
NO_DIRECTION = frozenset({"Metric", "Mean", "Sum", "MeanMetricWrapper"})

_ALIASES = {"bce": "BinaryCrossentropy", "mse": "MeanSquaredError", "mae": "MeanAbsoluteError",
            "mape": "MeanAbsolutePercentageError", "msle": "MeanSquaredLogarithmicError"}


def _strip(name: str) -> str:
    if name.startswith("val_"):
        name = name[4:]
    if name.startswith("weighted_"):
        name = name[9:]
    return name


def snake_case(name: str) -> str:
    """Keras' `to_snake_case`: the name a metric class or function logs by default."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Any]:
    """Every name `keras.metrics.get` / `keras.losses.get` resolves -> class or function.

    Classes are not instantiated: an instance would take a Keras auto-name and
    shift the default names of the user's own metrics.
    """
    table: dict[str, Any] = {}
    for module in (keras.losses, keras.metrics):  # metrics win over losses
        for attr in dir(module):
            obj = getattr(module, attr)
            if attr.startswith("_") or not callable(obj) or attr in ("get", "deserialize", "serialize"):
                continue
            table[attr] = obj
            if inspect.isclass(obj):
                table[snake_case(attr)] = obj
    for alias, target in _ALIASES.items():
        table[alias] = table[alias.upper()] = getattr(keras.metrics, target)
    return table


def _keras_ancestor(cls: type) -> type | None:
    """`cls` if Keras exports it, else its nearest ancestor that keras.metrics/losses export."""
    for base in cls.__mro__:
        if not base.__module__.startswith("keras"):
            continue
        for module in (keras.metrics, keras.losses):
            if getattr(module, base.__name__, None) is base:
                return base
    return None


def metric_direction(metric: Any) -> str | None:
    """Whether a metric is better high (`"max"`) or low (`"min"`); `None` if unknown.

    Keras Tuner's own inference (`keras_tuner.engine.metrics_tracking.
    infer_metric_direction`, which knows Keras' metric and loss registries),
    corrected where it is wrong for `keras.metrics` exports: F1/F-beta, R2,
    the IoU family, the correlations, cosine similarity, precision at recall,
    recall at precision and the top-k accuracy functions are maximized;
    `Mean`, `Sum` and a bare `Metric` have no direction of their own.

    Args:
        metric: A name as it appears in the logs (`"val_"` and `"weighted_"`
            prefixes are ignored), a `keras.metrics.Metric` instance or class
            (a subclass is judged by its nearest Keras ancestor), or a metric
            function.

    Returns:
        `"min"`, `"max"` or `None`.

    Examples:
        >>> metric_direction("val_root_mean_squared_error")
        'min'
        >>> metric_direction(keras.metrics.F1Score(name="f1"))
        'max'
    """
    if isinstance(metric, str):
        name = _strip(metric)
        if name in ("loss", "crossentropy", "ce") or name.endswith("_loss"):
            return "min"
        if name in ("acc", "accuracy"):
            return "max"
        obj = _registry().get(name)
    else:
        obj = metric
    if obj is None:
        return None
    if type(obj) is keras.metrics.MeanMetricWrapper:  # judged by the function it wraps
        fn = obj.get_config().get("fn")
        fn_name = fn.get("config") if isinstance(fn, dict) else getattr(fn, "__name__", None)
        return metric_direction(fn_name) if isinstance(fn_name, str) else None
    if isinstance(obj, (keras.metrics.Metric, keras.losses.Loss)):
        obj = type(obj)
    if inspect.isclass(obj):
        obj = _keras_ancestor(obj)
        if obj is None:
            return None
    key = getattr(obj, "__name__", None)
    if key in HIGHER_IS_BETTER:
        return "max"
    if key is None or key in NO_DIRECTION:
        return None
    try:
        # A class or a function: Keras Tuner judges it by `__name__`, no instance made.
        return metrics_tracking.infer_metric_direction(obj)
    except Exception:  # e.g. a name Keras Tuner cannot deserialize
        return None


def compiled_names(metrics: Iterable[Any]) -> dict[str, Any]:
    """Name in the logs -> metric, for `compile(metrics=...)`, plus `"loss"`.

    Follows Keras' `compile_utils.get_metric`: a string keeps its own name
    (`"acc"` logs as `acc`), an instance its `name`, a function its
    snake-cased `__name__`.
    """
    out: dict[str, Any] = {"loss": "loss"}
    for metric in metrics:
        if isinstance(metric, str):
            out[metric] = metric
        elif isinstance(metric, keras.metrics.Metric):
            out[metric.name] = metric
        elif callable(metric):
            out[snake_case(getattr(metric, "__name__", type(metric).__name__))] = metric
    return out


def make_objective(objective: Any, metrics: Mapping[str, Any] | None = None,
                   what: str = "objective") -> keras_tuner.Objective:
    """A checked `keras_tuner.Objective` from a metric name or an `Objective`.

    Args:
        objective: A metric name as logged (e.g. `"val_auc"`) or a
            `keras_tuner.Objective`.
        metrics: Optional `{logged name: metric}` of the model (as
            `TrainkitHyperModel.compiled_metrics`): the objective must name
            one of them (with or without `val_`), and its direction comes from
            that metric itself (so `"val_my_auc"` for `AUC(name="my_auc")` is
            maximized). Defaults to `None`.
        what: The argument name used in error messages. Defaults to `"objective"`.

    Returns:
        A `keras_tuner.Objective` (the same object when one was given).

    Raises:
        ValueError: for a direction other than "min"/"max", a metric the model
            does not compile, or a name whose direction cannot be inferred
            (then pass `keras_tuner.Objective(name, direction)`).
    """
    if isinstance(objective, keras_tuner.Objective) and not hasattr(objective, "objectives"):
        name, direction = objective.name, objective.direction
        if not isinstance(name, str) or not name:
            raise ValueError(f"Argument `{what}` must name a metric. Received: {what}={objective}")
        if direction not in ("min", "max"):
            raise ValueError(
                f"Argument `{what}` has direction {direction!r}; use \"min\" or \"max\". "
                f"Received: {what}={objective}")
        if metrics is not None:
            _compiled(name, metrics, what)
        return objective
    if not isinstance(objective, str) or not objective:
        raise ValueError(
            f"Argument `{what}` must be a metric name or a keras_tuner.Objective. "
            f"Received: {what}={objective!r}")
    if metrics is not None:
        target = _compiled(objective, metrics, what)
        direction = metric_direction(target)
    else:
        direction = metric_direction(objective)
    if direction is None:
        raise ValueError(
            f"Cannot infer whether {objective!r} should be minimized or maximized. Pass "
            f"keras_tuner.Objective({objective!r}, direction=\"min\") (or \"max\") instead. "
            f"Received: {what}={objective!r}")
    return keras_tuner.Objective(objective, direction)


def _compiled(name: str, metrics: Mapping[str, Any], what: str) -> Any:
    base = name[4:] if name.startswith("val_") and name[4:] in metrics else name
    if base not in metrics:
        logged = list(metrics) + [f"val_{n}" for n in metrics]
        raise ValueError(
            f"Argument `{what}` names {name!r}, which the model does not compile: it logs "
            f"{', '.join(logged)}. Add the metric to make_hypermodel(metrics=[...]) or pick "
            f"one of those. Received: {what}={name!r}")
    return metrics[base]
