"""A HyperModel's search space as Ray Tune's: domains, configs back to Keras
Tuner values, the define-by-run space for Ray's Optuna searcher, and the
checks of the metric Ray optimizes.

Nothing here imports Ray at module level; the functions that build Ray
objects import it when called.
"""

from __future__ import annotations

import decimal
import math
import numbers
from typing import Any

import keras_tuner
import numpy as np

from keras_trainkit.tuning._optuna_space import INDEX_SUFFIX, REFLECTED_SUFFIX

# -- the HyperModel ------------------------------------------------------------------


def check_hypermodel(hypermodel: Any, what: str = "hypermodel") -> None:
    """Raises a `ValueError` unless `hypermodel` is a `keras_tuner.HyperModel`."""
    if not isinstance(hypermodel, keras_tuner.HyperModel):
        hint = (" Wrap a build function in a keras_tuner.HyperModel subclass (its build(hp) "
                "declares the hyperparameters) or use keras_trainkit.tuning.make_hypermodel."
                if callable(hypermodel) else "")
        raise ValueError(
            f"Argument `{what}` must be a keras_tuner.HyperModel (e.g. from "
            f"keras_trainkit.tuning.make_hypermodel).{hint} Received: {what}={hypermodel!r}")


def declared_space(hypermodel: Any) -> keras_tuner.HyperParameters:
    """Every hyperparameter the HyperModel declares, as Keras Tuner's tuners see it
    before their first trial: `build()` called once with the defaults.

    A hyperparameter that `build()` declares only on a non-default branch (an
    `if` on another value instead of `hp.conditional_scope`) is not seen, as
    with Keras Tuner's own first trial.
    """
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    names = [p.name for p in hp.space]
    for name in names:
        if "/" in name:
            raise ValueError(
                f"Hyperparameter {name!r} has a '/' in its name, which Ray Tune reads as a "
                "nested config key. Rename it.")
    if not hp.space:
        raise ValueError(
            f"The HyperModel {hypermodel!r} declares no hyperparameter in build(hp): there is "
            "nothing for Ray Tune to search.")
    return hp


# -- Keras Tuner -> Ray Tune domains ----------------------------------------------------------


def _aligned(value: float, step: float) -> bool:
    ratio = value / step
    return math.isclose(ratio, round(ratio), rel_tol=0.0, abs_tol=1e-9)


def _linear_high(lo, hi, step, is_int):
    if is_int:
        return lo + ((hi - lo) // step) * step
    d_lo, d_hi, d_step = (decimal.Decimal(str(v)) for v in (lo, hi, step))
    return float(((d_hi - d_lo) // d_step) * d_step + d_lo)


def grid(hp: Any) -> list[Any] | None:
    """The values of a hyperparameter on a grid that Ray cannot express as a
    quantized domain, as Keras Tuner lists them; `None` otherwise."""
    from keras_tuner.engine import hyperparameters as hp_module

    if not isinstance(hp, (hp_module.Int, hp_module.Float)) or hp.step is None:
        return None
    is_int = isinstance(hp, hp_module.Int)
    cast = int if is_int else float
    lo, hi, step = hp.min_value, hp.max_value, hp.step
    if hp.sampling == "linear":
        high = _linear_high(lo, hi, step, is_int)
        if is_int and step == 1:
            return None
        if _aligned(lo, step) and _aligned(high, step):
            return None  # Ray's quantized domain (multiples of step) is the same grid
        n = int(round((high - lo) / step)) + 1
        return [cast(lo + i * step) for i in range(n)]
    # A multiplicative grid (Keras Tuner's log / reverse_log with a step).
    n = int(math.log(hi / lo, step) + 1e-8) + 1
    if hp.sampling == "log":
        values = [lo * math.pow(step, i) for i in range(n)]
    else:
        values = [hi + lo - lo * math.pow(step, i) for i in range(n)]
    return [cast(v) for v in values]


def ray_domain(hp: Any) -> tuple[str, Any]:
    """`(config key, Ray Tune domain or constant)` of one Keras Tuner hyperparameter."""
    from keras_tuner.engine import hyperparameters as hp_module
    from ray import tune

    name = hp.name
    if isinstance(hp, hp_module.Fixed):
        return name, hp.value
    if isinstance(hp, hp_module.Boolean):
        return name, tune.choice([False, True])
    if isinstance(hp, hp_module.Choice):
        return name, tune.choice(list(hp.values))
    if not isinstance(hp, (hp_module.Int, hp_module.Float)):
        raise ValueError(f"Hyperparameter {hp!r} has a type Ray Tune cannot sample: {type(hp).__name__}.")
    values = grid(hp)
    if values is not None:
        return name, tune.choice(values)
    is_int = isinstance(hp, hp_module.Int)
    lo, hi, step, sampling = hp.min_value, hp.max_value, hp.step, hp.sampling
    if sampling == "linear":
        if is_int:
            if step in (None, 1):
                return name, tune.randint(lo, hi + 1)
            return name, tune.qrandint(lo, _linear_high(lo, hi, step, True), step)
        if step is None:
            return name, tune.uniform(lo, hi)
        return name, tune.quniform(lo, _linear_high(lo, hi, step, False), step)
    domain = tune.lograndint(lo, hi + 1) if is_int else tune.loguniform(lo, hi)
    if sampling == "log":
        return name, domain
    # reverse_log: dense near max_value; Ray samples the reflection lo + hi - x log-uniformly.
    return name + REFLECTED_SUFFIX, domain


def ray_param_space(hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """Every hyperparameter of `hp.space` as a Ray Tune domain (conditional ones too)."""
    out: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    for p in hp.space:
        if p.name in seen:
            if _definition(seen[p.name]) != _definition(p):
                raise ValueError(
                    f"Hyperparameters {seen[p.name]!r} and {p!r} share the name {p.name!r} with "
                    "different definitions (in different conditional scopes); Ray Tune's config has "
                    "one entry per name. Give them different names, or search with "
                    "search_alg(hypermodel), whose define-by-run space allows it.")
            continue
        seen[p.name] = p
        key, domain = ray_domain(p)
        out[key] = domain
    return out


def _definition(hp: Any) -> dict[str, Any]:
    config = dict(hp.get_config())
    config.pop("conditions", None)
    config.pop("default", None)
    return {"class": type(hp).__name__, **config}


# -- Ray config -> Keras Tuner values -------------------------------------------------------


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_value(hp: Any, value: Any, key: str) -> Any:
    from keras_tuner.engine import hyperparameters as hp_module

    value = _python(value)
    if isinstance(hp, hp_module.Fixed):
        if value != hp.value:
            raise ValueError(f"config[{key!r}] must be the fixed value {hp.value!r}. Received: "
                             f"config[{key!r}]={value!r}")
        return hp.value
    if isinstance(hp, hp_module.Boolean):
        if not isinstance(value, bool):
            raise ValueError(f"config[{key!r}] must be a bool. Received: config[{key!r}]={value!r}")
        return value
    if isinstance(hp, hp_module.Choice):
        for choice in hp.values:
            if isinstance(choice, bool) == isinstance(value, bool) and choice == value:
                return choice
        raise ValueError(f"config[{key!r}] must be one of {list(hp.values)}. Received: "
                         f"config[{key!r}]={value!r}")
    if isinstance(hp, hp_module.Int):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if isinstance(value, numbers.Real) and float(value).is_integer():
                return int(value)
            raise ValueError(f"config[{key!r}] must be an int. Received: config[{key!r}]={value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"config[{key!r}] must be a finite number. Received: config[{key!r}]={value!r}")
    return float(value)


def _from_derived(hp: Any, config: dict[str, Any]) -> tuple[str, Any] | None:
    """The value of `hp` from a derived key (`x.reflected`, `x.index`), if present."""
    from keras_tuner.engine import hyperparameters as hp_module

    reflected, index = hp.name + REFLECTED_SUFFIX, hp.name + INDEX_SUFFIX
    if reflected in config and isinstance(hp, (hp_module.Int, hp_module.Float)):
        r = _python(config[reflected])
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise ValueError(f"config[{reflected!r}] must be a number. Received: "
                             f"config[{reflected!r}]={r!r}")
        cast = int if isinstance(hp, hp_module.Int) else float
        return reflected, cast(min(hp.max_value, max(hp.min_value, hp.max_value + hp.min_value - r)))
    if index in config:
        i = _python(config[index])
        values = list(hp.values) if isinstance(hp, hp_module.Choice) else grid(hp)
        if values is None and isinstance(hp, (hp_module.Int, hp_module.Float)) and hp.step is not None:
            high = _linear_high(hp.min_value, hp.max_value, hp.step, isinstance(hp, hp_module.Int))
            values = [hp.min_value + k * hp.step for k in range(int(round((high - hp.min_value) / hp.step)) + 1)]
        if values is None or isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < len(values):
            raise ValueError(f"config[{index!r}] must be an index into the values of {hp!r}. "
                             f"Received: config[{index!r}]={i!r}")
        return index, values[i]
    return None


def config_values(space: keras_tuner.HyperParameters, config: dict[str, Any]) -> dict[str, Any]:
    """The active hyperparameter values of a Ray Tune config, in declaration order.

    A hyperparameter is active when the conditions of its scope hold for the
    values chosen so far; inactive ones are skipped (with `param_space` they
    are in every config; a define-by-run search leaves them out). An active
    hyperparameter missing from `config` takes its default. Values are checked
    for type and, for choices, membership; numbers outside the declared range
    are kept (population-based training perturbs beyond it by design).

    Raises:
        ValueError: naming the key, for a value of the wrong kind, and for a
            key that is no hyperparameter of the space.
    """
    if not isinstance(config, dict):
        raise ValueError(f"A Ray Tune config must be a dict. Received: config={config!r}")
    scratch = keras_tuner.HyperParameters()
    values: dict[str, Any] = {}
    known: set[str] = set()
    for hp in space.space:
        known.update((hp.name, hp.name + INDEX_SUFFIX, hp.name + REFLECTED_SUFFIX))
        scratch.merge([hp])
        if hp.name in values or not scratch.is_active(hp):
            continue
        if hp.name in config:
            value = _check_value(hp, config[hp.name], hp.name)
        else:
            derived = _from_derived(hp, config)
            if derived is not None:
                value = _check_value(hp, derived[1], derived[0])
            else:
                value = hp.value if hasattr(hp, "value") else hp.default
        scratch.values[hp.name] = value
        values[hp.name] = value
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"The Ray Tune config has keys that are no hyperparameter of the HyperModel: {unknown} "
            f"(its hyperparameters: {[p.name for p in space.space]}). Received: config={config!r}")
    return values


def hyperparameters_for(space: keras_tuner.HyperParameters, config: dict[str, Any]) -> keras_tuner.HyperParameters:
    """`space` with the values of `config` (see `config_values`)."""
    hp = space.copy()
    hp.values = config_values(space, config)
    return hp


# -- metric and mode -------------------------------------------------------------------------------


def logged_metrics(hypermodel: Any, model: Any | None) -> dict[str, Any] | None:
    """`{name in the logs without "val_": metric}` of the trials' models, or
    `None` when it cannot be known (a compiled structure other than a list)."""
    from keras_trainkit.tuning._hypermodel import TrainkitHyperModel
    from keras_trainkit.tuning._objective import compiled_names

    if isinstance(hypermodel, TrainkitHyperModel):
        return dict(hypermodel.compiled_metrics)
    if model is None or not getattr(model, "compiled", False):
        return None
    metrics = (model.get_compile_config() or {}).get("metrics")
    if metrics is None:
        metrics = []
    if not isinstance(metrics, (list, tuple)):
        return None
    import keras

    leaves = [m if isinstance(m, str) else keras.metrics.deserialize(m) for m in metrics]
    return compiled_names(leaves)


def check_metric(hypermodel: Any, logged: dict[str, Any] | None, metric: Any, mode: Any,
                 *, has_validation: bool | None = None) -> tuple[str, str]:
    """The checked `(metric, mode)` Ray optimizes; the HyperModel's objective by default.

    Raises:
        ValueError: for a metric the model does not log (the message lists
            what it logs), a mode other than "min"/"max", a mode against the
            metric's direction, or a metric whose direction cannot be inferred
            without `mode`.
    """
    from keras_trainkit.tuning._objective import metric_direction

    objective = getattr(hypermodel, "objective", None)
    if metric is None:
        if not isinstance(objective, keras_tuner.Objective) or hasattr(objective, "objectives"):
            raise ValueError(
                "Argument `metric` is needed: this HyperModel has no single `objective` "
                "(make_hypermodel's has one). Received: metric=None")
        metric = objective.name
        mode = objective.direction if mode is None else mode
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"Argument `metric` must be a metric name as logged (e.g. 'val_accuracy'). "
                         f"Received: metric={metric!r}")
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"Argument `mode` must be 'min' or 'max'. Received: mode={mode!r}")
    target = None
    if logged is not None:
        base = metric[4:] if metric.startswith("val_") and metric[4:] in logged else metric
        if base not in logged:
            names = list(logged) + [f"val_{n}" for n in logged]
            raise ValueError(
                f"Argument `metric` names {metric!r}, which the model does not log: it logs "
                f"{', '.join(names)}. Received: metric={metric!r}")
        target = logged[base]
    if metric.startswith("val_") and has_validation is False:
        raise ValueError(f"Argument `metric` is {metric!r}, a validation metric, but the trainable "
                         "has no validation data: pass validation_data=... (or validation_split) to "
                         f"trainable(). Received: metric={metric!r}")
    if isinstance(objective, keras_tuner.Objective) and objective.name == metric:
        expected = objective.direction
    else:
        expected = metric_direction(target if target is not None else metric)
    if mode is None:
        if expected is None:
            raise ValueError(f"Cannot infer whether {metric!r} should be minimized or maximized: "
                             f"pass mode='min' or mode='max'. Received: metric={metric!r}, mode=None")
        mode = expected
    elif expected is not None and expected != mode:
        raise ValueError(
            f"Argument `mode` is {mode!r} but {metric!r} is better "
            f"{'high' if expected == 'max' else 'low'}: pass mode={expected!r}. "
            f"Received: metric={metric!r}, mode={mode!r}")
    return metric, mode


# -- define-by-run space for Ray's OptunaSearch -------------------------------------------------


class DefineByRun:
    """Ray's define-by-run space: samples a Keras Tuner space with Ray's Optuna
    trial captor through `suggest_hyperparameters` (picklable, for Ray's
    searcher checkpoints)."""

    def __init__(self, space: keras_tuner.HyperParameters):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        from keras_trainkit.tuning._optuna_space import suggest_hyperparameters

        return suggest_hyperparameters(trial, self.space)
