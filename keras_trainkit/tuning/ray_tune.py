"""Ray Tune for keras_trainkit's HyperModels: the same recipe search on a Ray
cluster, with Ray's schedulers (ASHA, population-based training), searchers
and fault tolerance.

```python
from ray import tune
from keras_trainkit.data import load_digits
from keras_trainkit.tuning import make_hypermodel
from keras_trainkit.tuning.ray_tune import param_space, trainable, tune_config

(x, y), (x_val, y_val) = load_digits()
hm = make_hypermodel(input_shape=(64,), num_classes=10, epochs=8)
tuner = tune.Tuner(
    trainable(hm, x, y, validation_data=(x_val, y_val)),
    param_space=param_space(hm),
    tune_config=tune_config(hm, num_samples=16, scheduler=tune.schedulers.ASHAScheduler()),
)
best = tuner.fit().get_best_result()
model = load_model(hm, best)   # the trial's model, at its best epoch
```

`tune_config(hm, ...)` is `tune.TuneConfig(metric=hm.objective.name,
mode=hm.objective.direction, ...)` with the metric checked; a plain
`tune.TuneConfig(metric="val_accuracy", mode="max", ...)` works as well.

Each trial builds and fits with the HyperModel's own `build(hp)` and
`fit(hp, model, ...)` (so `make_hypermodel`'s warm-up, schedules, early
stopping and gradient-norm logging run as in any Keras Tuner search),
reports every epoch's logs to Ray, and saves a Ray checkpoint each epoch:
the weights, the optimizer's variables (update count, learning-rate variable)
and the state of every `keras_trainkit.callbacks.EarlyStopping`. A trial that
Ray restores (after a failure, or from a clone in population-based training)
continues exactly where the checkpoint was taken. See `docs/ray_tune.md`.

Needs Ray Tune: `pip install "keras_trainkit[ray]"` (and `[optuna]` for
`search_alg`). `import keras_trainkit` never imports Ray.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["hyperparameters", "load_model", "param_space", "search_alg", "trainable", "tune_config"]

_RESERVED = ("initial_epoch", "x", "y")
# Seconds a stopped trial's thread has to end before its worker is reused
# (Ray's TUNE_FUNCTION_THREAD_TIMEOUT_S, 2 by default; a user's setting wins).
_THREAD_TIMEOUT_S = 60


def _require_ray():
    try:
        from ray import tune
    except ImportError as error:
        raise ImportError(
            'keras_trainkit.tuning.ray_tune needs Ray Tune: pip install "keras_trainkit[ray]"'
        ) from error
    return tune


def _fatal():
    from keras_trainkit.tuning._errors import fatal

    return fatal()


def param_space(hypermodel: Any) -> dict[str, Any]:
    """The HyperModel's search space as a Ray Tune `param_space`.

    Each Keras Tuner hyperparameter becomes the Ray Tune domain of the same
    distribution, under its own name:

    | Keras Tuner | Ray Tune |
    |---|---|
    | `Float(lo, hi)` | `tune.uniform(lo, hi)` |
    | `Float(lo, hi, sampling="log")` | `tune.loguniform(lo, hi)` |
    | `Float(lo, hi, step=s)` (`lo`, `hi` multiples of `s`) | `tune.quniform(lo, hi', s)`, `hi'` the last grid point |
    | `Int(lo, hi)` | `tune.randint(lo, hi + 1)` |
    | `Int(lo, hi, step=s)` (`lo` a multiple of `s`) | `tune.qrandint(lo, hi', s)` |
    | `Int(lo, hi, sampling="log")` | `tune.lograndint(lo, hi + 1)` |
    | other grids (an offset linear grid, a `step` with `log`/`reverse_log`) | `tune.choice(grid)`, the values as Keras Tuner lists them |
    | `sampling="reverse_log"` (no step) | `x.reflected`: `loguniform(lo, hi)` of `r`; the value is `lo + hi - r` |
    | `Choice(values)`, `Boolean` | `tune.choice(values)` |
    | `Fixed(v)` | `v` |

    Ray's basic search has no conditions: a conditional hyperparameter (e.g.
    `sgd_momentum`, only for SGD) is in every trial's config, and the trial
    uses it only when its parent value is active. For a space in which it
    exists only then, search with `search_alg(hypermodel)` instead.

    You may pass a smaller `param_space` (a dict with some of these keys, or
    constants): every hyperparameter missing from a trial's config takes its
    default.

    Args:
        hypermodel: A `keras_tuner.HyperModel` (e.g. `make_hypermodel(...)`)
            whose `build(hp)` declares every hyperparameter.

    Returns:
        `{name: Ray Tune domain or constant}`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for something
            that is not a HyperModel, a space without hyperparameters, names
            containing `/`, or one name declared twice with different
            definitions.

    Examples:
        >>> space = param_space(make_hypermodel((64,), 10))
        >>> space["learning_rate"]        # tune.loguniform(1e-4, 0.1)
    """
    _require_ray()
    from keras_trainkit.tuning._ray_space import (
        check_hypermodel,
        declared_space,
        ray_param_space,
    )

    with _fatal():
        check_hypermodel(hypermodel)
        return ray_param_space(declared_space(hypermodel))


def search_alg(hypermodel: Any, sampler: Any = None, *, metric: str | None = None, mode: str | None = None,
               seed: int | None = None, **kwargs: Any) -> Any:
    """Ray's `OptunaSearch` over the HyperModel's space, define-by-run.

    The space is sampled by `keras_trainkit.tuning._optuna_space.
    suggest_hyperparameters` (the mapping of `OptunaSearch`, see
    `docs/optuna.md`): a conditional hyperparameter is suggested, and is in
    the trial's config, only when its parent value is active. Ordered choices
    and multiplicative grids are sampled as an index (`batch_size.index`), so
    TPE models their order; the config holds the value too (`batch_size`).
    Pass it as `tune.TuneConfig(search_alg=...)` with no `param_space`.

    Args:
        hypermodel: A `keras_tuner.HyperModel`.
        sampler: An `optuna.samplers.BaseSampler`. Defaults to `None` (Ray's
            default, `TPESampler(seed=seed)`).
        metric: The metric to optimize, as the trials report it. Defaults to
            `None` (the HyperModel's `objective`).
        mode: `"min"` or `"max"`. Defaults to `None` (the objective's
            direction, or the metric's inferred one).
        seed: Seed of the default sampler; rejected with `sampler` (seed
            yours). Defaults to `None`.
        **kwargs: More arguments of `ray.tune.search.optuna.OptunaSearch`
            (`points_to_evaluate`, `study_name`, `storage`).

    Returns:
        A `ray.tune.search.optuna.OptunaSearch`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for something
            that is not a HyperModel, a metric the model does not log, a mode
            against the metric's direction, `seed` with `sampler`, or a space
            Optuna cannot hold (see `check_search_space`).
        ImportError: without Ray Tune or Optuna.

    Examples:
        >>> tuner = tune.Tuner(trainable(hm, x, y, validation_data=(xv, yv)),
        ...                    tune_config=tune.TuneConfig(search_alg=search_alg(hm, seed=0),
        ...                                                num_samples=20))
    """
    _require_ray()
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as error:  # pragma: no cover - optuna is in the test extra
        raise ImportError('search_alg needs Optuna: pip install "keras_trainkit[ray,optuna]"') from error
    from keras_trainkit.tuning._optuna_space import check_search_space
    from keras_trainkit.tuning._ray_space import (
        DefineByRun,
        check_hypermodel,
        check_metric,
        declared_space,
    )

    with _fatal():
        check_hypermodel(hypermodel)
        if sampler is not None and seed is not None:
            raise ValueError("Pass `seed` or a seeded `sampler`, not both (the seed would not reach "
                             f"your sampler). Received: seed={seed!r}, sampler={sampler!r}")
        space = declared_space(hypermodel)
        check_search_space(space)
        metric, mode = check_metric(hypermodel, _logged(hypermodel), metric, mode)
    return OptunaSearch(space=DefineByRun(space), metric=metric, mode=mode, sampler=sampler, seed=seed, **kwargs)


def _logged(hypermodel: Any) -> dict[str, Any] | None:
    from keras_trainkit.tuning._hypermodel import TrainkitHyperModel
    from keras_trainkit.tuning._ray_space import logged_metrics

    if isinstance(hypermodel, TrainkitHyperModel):
        return logged_metrics(hypermodel, None)
    import keras_tuner

    return logged_metrics(hypermodel, hypermodel.build(keras_tuner.HyperParameters()))


def tune_config(hypermodel: Any, *, metric: str | None = None, mode: str | None = None, **kwargs: Any) -> Any:
    """`ray.tune.TuneConfig` optimizing the HyperModel's objective, checked before any trial.

    Ray reads the metric from each trial's reported logs; a name the model
    does not log would fail only after the first epoch of the first trial.
    This checks it (and the mode against the metric's direction) at once. A
    `scheduler` or `search_alg` created with their own `metric` are checked
    too; a scheduler's is then not repeated in the `TuneConfig` (Ray refuses
    a metric in both).

    Args:
        hypermodel: A `keras_tuner.HyperModel`.
        metric: The metric, as logged (`"val_accuracy"`, `"val_loss"`).
            Defaults to `None` (the HyperModel's `objective`).
        mode: `"min"` or `"max"`. Defaults to `None` (the objective's
            direction, or the metric's inferred one).
        **kwargs: Other `ray.tune.TuneConfig` arguments (`num_samples`,
            `scheduler`, `search_alg`, ...). `reuse_actors` defaults to
            `True` here (Ray's default is `False`): a trial then runs in a
            worker that has already imported TensorFlow. (The trainable
            gives a stopped trial's thread 60 s, not Ray's 2 s, to end before
            its worker is reused: `TUNE_FUNCTION_THREAD_TIMEOUT_S`, unless
            set.)

    Returns:
        A `ray.tune.TuneConfig`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for a metric the
            model does not log (the message lists what it logs), a mode other
            than "min"/"max" or against the metric's direction.

    Examples:
        >>> tune_config(hm, num_samples=16, scheduler=tune.schedulers.ASHAScheduler())
    """
    tune = _require_ray()
    from keras_trainkit.tuning._ray_space import check_hypermodel, check_metric

    kwargs.setdefault("reuse_actors", True)
    with _fatal():
        check_hypermodel(hypermodel)
        logged = _logged(hypermodel)
        scheduler_metric = False
        for what in ("scheduler", "search_alg"):
            obj = kwargs.get(what)
            their_metric = getattr(obj, "metric", None)
            if isinstance(their_metric, str) and their_metric != "_metric":
                check_metric(hypermodel, logged, their_metric, getattr(obj, "mode", None))
                scheduler_metric = scheduler_metric or what == "scheduler"
        if scheduler_metric and metric is None and mode is None:
            return tune.TuneConfig(**kwargs)  # Ray refuses a metric in both
        metric, mode = check_metric(hypermodel, logged, metric, mode)
    return tune.TuneConfig(metric=metric, mode=mode, **kwargs)


def trainable(hypermodel: Any, x: Any, y: Any = None, *, validation_data: Any = None, epochs: int | None = None,
              **fit_kwargs: Any) -> Any:
    """A Ray Tune function trainable that builds and fits the HyperModel.

    Each trial turns its config into `keras_tuner.HyperParameters` (see
    `hyperparameters`), builds with `hypermodel.build(hp)`, trains with
    `hypermodel.fit(hp, model, x, y, validation_data=..., epochs=...,
    **fit_kwargs)` and, after every epoch, calls `ray.tune.report` with the
    epoch's logs plus `epoch` (epochs completed) and a checkpoint. The
    checkpoint holds the model's weights, the optimizer's variables (its
    update count, which positions every keras_trainkit learning-rate schedule,
    and its learning-rate variable) and the state of each
    `keras_trainkit.callbacks.EarlyStopping` of the fit (`make_hypermodel`'s
    included).

    When Ray gives the trial a checkpoint (`ray.tune.get_checkpoint()`: a
    restart after a failure, or population-based training's exploit), the
    trial loads it and continues at the next epoch: the schedules are sized
    for the whole trial and resume at the restored update count, early
    stopping keeps its best value, patience and best weights. A config whose
    learning rate differs from the checkpoint's (PBT's explore step)
    rescales the restored rate variable by new / old: the schedule continues
    at the cloned update count with the perturbed base.

    Keras' progress bars are off (`verbose=0`) unless `fit_kwargs` sets
    `verbose`. Callbacks in `fit_kwargs` are deep-copied for each trial (as
    Keras Tuner does); a keras_trainkit `EarlyStopping` among them is
    checkpointed too (its `backup_dir` is set to the trial's).

    Args:
        hypermodel: A `keras_tuner.HyperModel`, e.g. `make_hypermodel(...)`.
        x: Training inputs, sent to Ray's workers through the object store
            (`tune.with_parameters`): arrays, or a picklable
            `keras.utils.PyDataset`; not a `tf.data.Dataset` or a generator.
        y: Training targets. Defaults to `None`.
        validation_data: As in `fit()`; needed for a `val_` objective.
            Defaults to `None`.
        epochs: Epochs of a trial (the most any scheduler lets it run).
            Defaults to `None` (`make_hypermodel(epochs=...)`; required for
            other HyperModels).
        **fit_kwargs: More `fit()` arguments (`callbacks`, `validation_split`,
            `steps_per_epoch`, `verbose`, `batch_size` when it is not tuned).

    Returns:
        A function trainable for `tune.Tuner`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) before Ray starts
            any trial, for something that is not a HyperModel, missing or bad
            `epochs`, `initial_epoch` in `fit_kwargs`, data Ray cannot send to
            its workers, a tuned `batch_size` passed or fixed by batched
            data, or a `val_` objective without validation data.
        ImportError: without Ray Tune.

    Examples:
        >>> hm = make_hypermodel(input_shape=(64,), num_classes=10, epochs=8)
        >>> tuner = tune.Tuner(trainable(hm, x, y, validation_data=(xv, yv)),
        ...                    param_space=param_space(hm), tune_config=tune_config(hm))
    """
    tune = _require_ray()
    import keras

    from keras_trainkit import _validation as v
    from keras_trainkit.tuning import _data
    from keras_trainkit.tuning._hypermodel import TrainkitHyperModel
    from keras_trainkit.tuning._ray_space import check_hypermodel, declared_space
    from keras_trainkit.tuning._ray_trial import TrialSpec

    with _fatal():
        check_hypermodel(hypermodel)
        ours = isinstance(hypermodel, TrainkitHyperModel)
        if epochs is None:
            if not ours:
                raise ValueError(
                    "Argument `epochs` is needed: this HyperModel does not set its trials' epochs "
                    "(make_hypermodel(epochs=...) does). Pass trainable(..., epochs=N). "
                    "Received: epochs=None")
            epochs = hypermodel.epochs
        epochs = v.integer("epochs", epochs, low=1)
        for key in _RESERVED:
            if key in fit_kwargs:
                raise ValueError(
                    f"Argument `{key}` cannot be passed to trainable(): "
                    + ("each trial starts at epoch 0, or where Ray's checkpoint says."
                       if key == "initial_epoch" else "pass it positionally.")
                    + f" Received: {key}={fit_kwargs[key]!r}")
        callbacks = fit_kwargs.pop("callbacks", None)
        callbacks = [] if callbacks is None else callbacks
        if not isinstance(callbacks, (list, tuple)) or not all(
                isinstance(c, keras.callbacks.Callback) for c in callbacks):
            raise ValueError(f"Argument `callbacks` must be a list of keras.callbacks.Callback. "
                             f"Received: callbacks={callbacks!r}")
        for name, data in (("x", x), ("validation_data", validation_data)):
            if _data.is_tf_dataset(data) or isinstance(data, (types.GeneratorType, Iterator)):
                raise ValueError(
                    f"Argument `{name}` is a {type(data).__name__}, which Ray cannot send to its "
                    "worker processes (it is not picklable). Pass NumPy arrays (or a picklable "
                    f"keras.utils.PyDataset). Received: {name} of type {type(data).__name__}")
        space = declared_space(hypermodel)
        if ours:
            tuned_batch = any(p.name == "batch_size" for p in space.space)
            info = _data.inspect_data(x, len(hypermodel.input_shape), fit_kwargs.get("validation_split"))
            if tuned_batch and "batch_size" in fit_kwargs:
                raise ValueError(
                    "Do not pass `batch_size` to trainable(): it is tuned as the hyperparameter "
                    "'batch_size'. Fix it with make_hypermodel(search_space={'batch_size': "
                    f"{fit_kwargs['batch_size']!r}}}) instead. Received: batch_size={fit_kwargs['batch_size']!r}")
            if tuned_batch and info.batched:
                raise ValueError(
                    f"Argument `x` is a {info.kind} whose batches set the batch size, so the "
                    "hyperparameter 'batch_size' cannot apply. Pass make_hypermodel(search_space="
                    "{'batch_size': None}).")
            objective = hypermodel.objective.name
            if hypermodel.early_stopping_patience is not None and objective.startswith("val_") \
                    and validation_data is None and not fit_kwargs.get("validation_split"):
                raise ValueError(
                    f"The HyperModel's objective {objective!r} (monitored by its EarlyStopping) "
                    "needs validation data: pass validation_data=... (or validation_split=...) to "
                    "trainable().")
    spec = TrialSpec(hypermodel=hypermodel, space=space, x=x, y=y, validation_data=validation_data,
                     epochs=epochs, fit_kwargs=dict(fit_kwargs), callbacks=list(callbacks))

    def keras_trainkit_trial(config, spec):
        from keras_trainkit.tuning._ray_trial import RaySession, run_trial

        # With reuse_actors=True (our default) Ray gives a stopped trial's
        # thread TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s) to unwind before the
        # worker takes the next trial, and fails that trial when it does not.
        # Unwinding a fit (its `finally` blocks, mid-step on a busy machine)
        # can take longer: read in this worker when the next trial starts.
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(_THREAD_TIMEOUT_S))
        run_trial(spec, config, RaySession())

    return tune.with_parameters(keras_trainkit_trial, spec=spec)


def hyperparameters(hypermodel: Any, config: dict[str, Any]) -> Any:
    """The `keras_tuner.HyperParameters` a trial of this config builds with.

    Active hyperparameters take their value from `config` (a derived key
    `x.reflected` or `x.index` gives the value of `x` when `x` is absent),
    missing ones their default; inactive ones are left out. Values are
    checked for type and choice membership; numbers outside the declared
    range are kept (population-based training perturbs beyond it).

    Args:
        hypermodel: A `keras_tuner.HyperModel`.
        config: A Ray Tune config, e.g. `result.config`.

    Returns:
        `keras_tuner.HyperParameters` holding the space and the values.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) naming the key of
            a value of the wrong kind, or a key that is no hyperparameter.

    Examples:
        >>> model = hm.build(hyperparameters(hm, best.config))
    """
    from keras_trainkit.tuning._ray_space import (
        check_hypermodel,
        declared_space,
        hyperparameters_for,
    )

    with _fatal():
        check_hypermodel(hypermodel)
        return hyperparameters_for(declared_space(hypermodel), config)


def load_model(hypermodel: Any, result: Any, *, best_epoch: bool = True) -> Any:
    """The model of a trial, built from its config and loaded from its checkpoint.

    Args:
        hypermodel: The HyperModel the search ran.
        result: A `ray.tune.Result` (e.g. `result_grid.get_best_result()`),
            whose `config` and `checkpoint` are used.
        best_epoch: Load the weights of the best epoch that the trial's
            `EarlyStopping` on the HyperModel's objective kept (as it would
            restore them when training ends), when there are some; else the
            weights of the checkpoint's epoch. Defaults to `True`.

    Returns:
        The compiled `keras.Model`, with its optimizer state.

    Raises:
        ValueError: when the result has no checkpoint or the checkpoint does
            not fit the config's model.

    Examples:
        >>> model = load_model(hm, tuner.fit().get_best_result())
        >>> model.evaluate(x_test, y_test)
    """
    import os

    from keras_trainkit.callbacks._early_stopping_state import Snapshot, StateStore
    from keras_trainkit.tuning._ray_trial import load_checkpoint, read_state

    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None:
        raise ValueError(f"Argument `result` has no checkpoint to load. Received: result={result!r}")
    hp = hyperparameters(hypermodel, result.config)
    model = hypermodel.build(hp)
    objective = getattr(getattr(hypermodel, "objective", None), "name", None)
    with checkpoint.as_directory() as directory:
        state = read_state(directory)
        load_checkpoint(model, directory, state, dict(hp.values))
        if best_epoch:
            for name in state["early_stopping"]:
                store = StateStore(os.path.join(directory, name))
                saved = store.read_state(int(state["epoch"]))
                if saved.get("monitor") == objective and saved.get("weights_file"):
                    Snapshot.load(store.path(saved["weights_file"])).restore(model)
                    break
    return model
