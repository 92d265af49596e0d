"""A Keras Tuner search space sampled define-by-run by an Optuna trial.

`suggest_hyperparameters(trial, hyperparameters)` is the one mapping from
Keras Tuner's hyperparameters to Optuna's distributions. It only calls
`trial.suggest_float`, `trial.suggest_int` and `trial.suggest_categorical`,
so it works with an `optuna.Trial`, an `optuna.trial.FixedTrial` (to turn a
trial's stored params back into Keras Tuner values) and any object with the
same three methods (Ray Tune's define-by-run captor). It does not depend on
the oracle.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

__all__ = [
    "INDEX_SUFFIX",
    "REFLECTED_SUFFIX",
    "check_search_space",
    "optuna_distributions",
    "suggest_hyperparameters",
]

# Optuna parameter names of hyperparameters that are not sampled on their own scale.
INDEX_SUFFIX = ".index"
REFLECTED_SUFFIX = ".reflected"


def suggest_hyperparameters(trial: Any, hyperparameters: Any) -> dict[str, Any]:
    """Samples a Keras Tuner search space define-by-run with an Optuna trial.

    The hyperparameters of `hyperparameters.space` are visited in declaration
    order (a parent before its conditional children); each one whose
    conditions hold for the values chosen so far is suggested to `trial`, the
    others are skipped, so a conditional hyperparameter exists (in the result
    and in the Optuna trial's params) only when its parent value is active.

    Each Keras Tuner type maps to one Optuna distribution, under the Optuna
    parameter name shown (`x` is the hyperparameter's name):

    | Keras Tuner | Optuna parameter | Keras Tuner value |
    |---|---|---|
    | `Float(lo, hi)` | `x`: `FloatDistribution(lo, hi)` | the same |
    | `Float(lo, hi, step=s)` | `x`: `FloatDistribution(lo, hi', step=s)`, `hi'` the last point of `lo + k * s` `<= hi`, in decimals (so `hi` itself when on the grid, which Keras Tuner's float floor may drop) | the same |
    | `Float(..., sampling="log")`, `Int(..., sampling="log")` (no step) | `x`: `log=True` | the same |
    | `Float/Int(..., sampling="reverse_log")` (no step) | `x.reflected`: `r` with `log=True` on `[lo, hi]` | `lo + hi - r` |
    | `Float/Int(..., step=s, sampling="log" or "reverse_log")` (multiplicative grid) | `x.index`: `IntDistribution(0, n - 1)` | the index-th grid value, as Keras Tuner lists them |
    | `Int(lo, hi, step=s)` | `x`: `IntDistribution(lo, hi', step=s)` | the same |
    | `Choice(values, ordered=False)`, `Boolean` | `x`: `CategoricalDistribution(values)` | the same |
    | `Choice(values, ordered=True)` (numeric, > 1 value) | `x.index`: `IntDistribution(0, n - 1)` | `values[index]` |
    | `Fixed(v)` | `x`: `CategoricalDistribution([v])` (Optuna does not sample it) | `v` |

    Ordered choices and multiplicative grids are sampled by index so that
    samplers that model order (TPE, CMA-ES, GP) see neighbours as neighbours;
    `reverse_log` has no Optuna counterpart and is sampled as the reflection
    of a log-scale value (dense near `max_value`, as in Keras Tuner).

    Args:
        trial: An `optuna.Trial`, `optuna.trial.FixedTrial`, or any object
            with Optuna's `suggest_float`, `suggest_int` and
            `suggest_categorical` methods.
        hyperparameters: A `keras_tuner.HyperParameters` holding the search
            space (its current values are ignored).

    Returns:
        `{name: value}` of the active hyperparameters, in declaration order,
        ready for `keras_tuner.HyperParameters.values`.

    Examples:
        >>> import keras_tuner, optuna
        >>> hp = keras_tuner.HyperParameters()
        >>> hp.Choice("optimizer", ["adam", "sgd"])
        >>> with hp.conditional_scope("optimizer", ["sgd"]):
        ...     hp.Float("momentum", 0.0, 0.99)
        >>> study = optuna.create_study()
        >>> values = suggest_hyperparameters(study.ask(), hp)  # momentum only with sgd
        >>> # Back from a finished trial's params:
        >>> values == suggest_hyperparameters(optuna.trial.FixedTrial(study.trials[0].params), hp)
    """
    import keras_tuner

    scratch = keras_tuner.HyperParameters()
    values: dict[str, Any] = {}
    for hp in hyperparameters.space:
        scratch.merge([hp])
        if not scratch.is_active(hp):
            continue
        value = _suggest(trial, hp)
        scratch.values[hp.name] = value
        values[hp.name] = value
    return values


def optuna_distributions(hyperparameters: Any) -> dict[str, Any]:
    """The Optuna parameter name and distribution of every hyperparameter.

    Conditional hyperparameters are included whatever their parent's value
    (`suggest_hyperparameters` suggests them only when active).

    Args:
        hyperparameters: A `keras_tuner.HyperParameters`.

    Returns:
        `{optuna parameter name: optuna.distributions.BaseDistribution}`.

    Raises:
        ValueError: when two hyperparameters map to the same Optuna parameter
            with incompatible distributions (see `check_search_space`).
    """
    return check_search_space(hyperparameters)


def check_search_space(hyperparameters: Any) -> dict[str, Any]:
    """Checks that the space maps to Optuna; returns `optuna_distributions`.

    Keras Tuner allows one name in several conditional scopes; Optuna allows
    one parameter name with several distributions only when they are of one
    kind (and, for categorical ones, with the same choices). A hyperparameter
    named like a derived parameter (`x.index`, `x.reflected`) of another
    would also collide.

    Raises:
        ValueError: naming the colliding hyperparameters.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        check_distribution_compatibility,
    )

    seen: dict[str, tuple[Any, Any]] = {}
    for hp in hyperparameters.space:
        name, distribution, _ = _spec(hp)
        if name in seen:
            other_hp, other = seen[name]
            compatible = other_hp.name == hp.name and type(other) is type(distribution)
            if compatible:
                try:
                    check_distribution_compatibility(other, distribution)
                except ValueError:
                    compatible = False
            if compatible and isinstance(distribution, CategoricalDistribution):
                compatible = tuple(other.choices) == tuple(distribution.choices)
            if not compatible:
                raise ValueError(
                    f"Hyperparameters {other_hp!r} and {hp!r} map to the same Optuna parameter "
                    f"{name!r} with incompatible distributions ({other} and {distribution}); "
                    "give them different names.")
        else:
            seen[name] = (hp, distribution)
    return {name: distribution for name, (_, distribution) in seen.items()}


# -- one hyperparameter ---------------------------------------------------------------
def _suggest(trial, hp):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    name, distribution, to_value = _spec(hp)
    if isinstance(distribution, CategoricalDistribution):
        raw = trial.suggest_categorical(name, list(distribution.choices))
    elif isinstance(distribution, FloatDistribution):
        raw = trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                                  log=distribution.log)
    else:
        raw = trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                log=distribution.log)
    return to_value(raw)


def _spec(hp):
    """(Optuna parameter name, distribution, Optuna value -> Keras Tuner value)."""
    from keras_tuner.engine import hyperparameters as hp_module
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    name = hp.name
    if isinstance(hp, hp_module.Fixed):
        return name, CategoricalDistribution([hp.value]), lambda v: v
    if isinstance(hp, hp_module.Boolean):
        return name, CategoricalDistribution([False, True]), bool
    if isinstance(hp, hp_module.Choice):
        values = list(hp.values)
        if hp.ordered and len(values) > 1:
            return name + INDEX_SUFFIX, IntDistribution(0, len(values) - 1), lambda i: values[int(i)]
        return name, CategoricalDistribution(values), lambda v: v
    is_int = isinstance(hp, hp_module.Int)
    if not isinstance(hp, (hp_module.Int, hp_module.Float)):
        raise ValueError(f"Hyperparameter {hp!r} has a type that does not map to Optuna: {type(hp).__name__}.")
    cast = int if is_int else float
    lo, hi, step, sampling = hp.min_value, hp.max_value, hp.step, hp.sampling
    dist_cls = IntDistribution if is_int else FloatDistribution
    if sampling == "linear":
        if step is None:  # only Float: Int's linear step defaults to 1
            return name, FloatDistribution(lo, hi), float
        if is_int:
            high = lo + ((hi - lo) // step) * step
            return name, IntDistribution(lo, high, step=step), int
        return name, FloatDistribution(lo, _grid_high(lo, hi, step), step=step), float
    if step is None:
        if sampling == "log":
            return name, dist_cls(lo, hi, log=True), cast
        # reverse_log: dense near max_value; the reflection lo + hi - x is log-distributed.
        return name + REFLECTED_SUFFIX, dist_cls(lo, hi, log=True), (
            lambda r: cast(min(hi, max(lo, hi + lo - r))))
    # A multiplicative grid (step > 1): Keras Tuner's values lo * step**i (log) or
    # hi + lo - lo * step**i (reverse_log), for i < n.
    n = int(math.log(hi / lo, step) + 1e-8) + 1
    if sampling == "log":
        grid = [lo * math.pow(step, i) for i in range(n)]
    else:
        grid = [hi + lo - lo * math.pow(step, i) for i in range(n)]
    grid = [cast(v) for v in grid]
    return name + INDEX_SUFFIX, IntDistribution(0, n - 1), lambda i: grid[int(i)]


def _grid_high(lo, hi, step):
    """The last point of lo + k * step that is <= hi, computed as Optuna does (in decimals)."""
    d_lo, d_hi, d_step = (decimal.Decimal(str(v)) for v in (lo, hi, step))
    return float(((d_hi - d_lo) // d_step) * d_step + d_lo)
