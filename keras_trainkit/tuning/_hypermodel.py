"""`make_hypermodel`: a Keras Tuner HyperModel over the whole training recipe."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import keras
import keras_tuner

from keras_trainkit import callbacks as tk_callbacks
from keras_trainkit.tuning import _data, _kt_hooks
from keras_trainkit.tuning._errors import fatal
from keras_trainkit.tuning._objective import (
    compiled_names,
    make_objective,
    metric_direction,
)
from keras_trainkit.tuning._registry import OPTIMIZERS, build_optimizer
from keras_trainkit.tuning._space import (
    ACTIVATIONS,
    MAX_CONV_BLOCKS,
    MAX_LAYERS,
    SCHEDULES,
    apply_changes,
    default_search_space,
    space_for,
)

__all__ = ["TrainkitHyperModel", "make_hypermodel", "regularizer_from", "default_search_space",
           "OPTIMIZERS", "SCHEDULES", "ACTIVATIONS", "MAX_LAYERS", "MAX_CONV_BLOCKS"]


class TrainkitHyperModel(keras_tuner.HyperModel):
    """A HyperModel over optimizer, learning-rate schedule, warm-up, batch size,
    regularization and architecture; built by `make_hypermodel` (see there).

    Attributes:
        space: The search space table (`name -> (kind, arguments)`).
        objective: The `keras_tuner.Objective` that `EarlyStopping` monitors;
            pass it to the tuner too.
        compiled_metrics: `{name in the logs: metric}` of every built model,
            `"loss"` included.
    """

    def __init__(self, space, input_shape, task, num_classes, labels, build_backbone, metrics, loss,
                 objective, epochs, early_stopping_patience, log_grad_norm, name=None):
        super().__init__(name=name, tunable=True)
        self.space = space
        self.input_shape = input_shape
        self.task = task
        self.num_classes = num_classes
        self.labels = labels
        self.build_backbone = build_backbone
        self.metrics = metrics
        self.loss = loss
        self.objective = objective
        self.epochs = epochs
        self.early_stopping_patience = early_stopping_patience
        self.log_grad_norm = log_grad_norm
        self.compiled_metrics = compiled_names(metrics)

    # -- search space -------------------------------------------------------------
    def declare(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares every hyperparameter (so each tuner sees all from trial 1)."""
        values = {}
        for name, (kind, kwargs) in self.space.items():
            kwargs = dict(kwargs)
            parent = kwargs.pop("parent", None)
            kwargs.pop("image", None)
            if parent is not None and parent[0] in self.space:
                with hp.conditional_scope(parent[0], parent[1]):
                    values[name] = _declare(hp, name, kind, kwargs)
            else:
                values[name] = _declare(hp, name, kind, kwargs)
        return values

    def build(self, hp):
        values = self.declare(hp)
        regularizer = regularizer_from(hp)
        inputs = keras.Input(self.input_shape)
        if self.build_backbone is not None:
            x = self.build_backbone(hp, inputs)
        else:
            x = inputs
            activation = values.get("activation") or "relu"
            if values.get("conv_blocks"):
                for i in range(values["conv_blocks"]):
                    x = keras.layers.Conv2D(values[f"filters_{i}"], 3, padding="same", activation=activation,
                                            kernel_regularizer=regularizer)(x)
                    if min(x.shape[1:3]) >= 2:
                        x = keras.layers.MaxPooling2D()(x)
            if len(x.shape) > 2:
                x = keras.layers.Flatten()(x)
            for i in range(values.get("num_layers") or 0):
                x = keras.layers.Dense(values[f"units_{i}"], activation=activation,
                                       kernel_regularizer=regularizer)(x)
                if values.get("dropout"):
                    x = keras.layers.Dropout(values["dropout"])(x)
        if self.task == "regression":
            outputs = keras.layers.Dense(self.num_classes, kernel_regularizer=regularizer)(x)
            loss = self.loss or "mse"
        elif self.num_classes == 2:
            outputs = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer)(x)
            loss = self.loss or "binary_crossentropy"
        else:
            outputs = keras.layers.Dense(self.num_classes, activation="softmax",
                                         kernel_regularizer=regularizer)(x)
            loss = self.loss or ("sparse_categorical_crossentropy" if self.labels == "sparse"
                                 else "categorical_crossentropy")
        model = keras.Model(inputs, outputs)
        optimizer = build_optimizer(hp.get("optimizer"), hp.get("learning_rate"), hp)
        model.compile(optimizer=optimizer, loss=loss, metrics=[_fresh(m) for m in self.metrics])
        return model

    # -- training ---------------------------------------------------------------------
    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial: tuned batch size, recipe callbacks, the tuner's epochs.

        Checks first (a `keras_tuner.errors.FatalValueError` stops the search
        before any training): the tuner's objective is a metric the model
        compiles and agrees with `objective`; validation data exists for a
        `val_` objective; the data's batching is compatible with the space.
        """
        args = list(args)
        with fatal():
            self._check_objectives(kwargs)
            x = args[0] if args else kwargs.get("x")
            data = _data.inspect_data(x, len(self.input_shape), kwargs.get("validation_split"))
            batch_size = self._batch_size(hp, data, kwargs)
            if data.kind == "dataset":
                kwargs.setdefault("shuffle", False)  # Keras ignores it for tf.data, with a warning
                if not data.batched:
                    x = x.batch(batch_size or 32)
                    if args:
                        args[0] = x
                    else:
                        kwargs["x"] = x
            elif batch_size is not None:
                kwargs["batch_size"] = batch_size
            validation = kwargs.get("validation_data")
            if _data.is_tf_dataset(validation) and not _data.inspect_data(validation, len(self.input_shape)).batched:
                kwargs["validation_data"] = validation.batch(batch_size or 32)
            epochs = kwargs.pop("epochs", self.epochs)  # Hyperband passes its own
            from keras_trainkit import _validation as v

            v.integer("epochs", epochs, low=1)
            initial_epoch = v.integer("initial_epoch", kwargs.get("initial_epoch", 0), low=0)
            if initial_epoch >= epochs:
                raise ValueError(f"Argument `initial_epoch` must be < epochs ({epochs}). "
                                 f"Received: initial_epoch={initial_epoch!r}")
            steps = kwargs.get("steps_per_epoch")
            if steps is not None:
                v.integer("steps_per_epoch", steps, low=1)
            accumulation = getattr(model.optimizer, "gradient_accumulation_steps", None) or 1
            updates, why = _data.count_updates(data, batch_size, epochs, initial_epoch, steps, accumulation)
            callbacks = list(kwargs.pop("callbacks", None) or [])
            callbacks += self.recipe_callbacks(hp, updates, why)
        if "verbose" not in kwargs and _kt_hooks.is_distributed_worker():
            kwargs["verbose"] = 2  # one line per epoch: no carriage-return bars mixing between workers
        return model.fit(*args, epochs=epochs, callbacks=callbacks, **kwargs)

    def _batch_size(self, hp, data, kwargs) -> int | None:
        tuned = "batch_size" in hp.values
        given = kwargs.pop("batch_size", None)
        if tuned and given is not None:
            raise ValueError(
                "Do not pass `batch_size` to search(): it is tuned as the hyperparameter "
                f"'batch_size'. Fix it with make_hypermodel(search_space={{'batch_size': "
                f"{given!r}}}) instead. Received: batch_size={given!r}")
        if data.batched:
            if tuned:
                raise ValueError(
                    f"Argument `x` is a {_KIND[data.kind]}: its batches set the batch size, so the "
                    f"hyperparameter 'batch_size' (here {hp.get('batch_size')!r}) cannot apply. "
                    "Pass make_hypermodel(search_space={'batch_size': None}) to leave it out of the "
                    "space, pass the data unbatched (dataset.unbatch()) to tune it, or search with a "
                    "keras_trainkit tuner (GeneticSearch, GridSearch, TrainkitTunerMixin), which "
                    "leaves it out by itself.")
            if given is not None:
                raise ValueError(
                    f"Argument `batch_size` cannot apply: x is a {_KIND[data.kind]} whose batches set "
                    f"the batch size. Received: batch_size={given!r}")
            return None
        return hp.get("batch_size") if tuned else given

    def _check_objectives(self, kwargs) -> None:
        tuner_objective = _kt_hooks.tuner_objective(kwargs.get("callbacks"))
        names = [self.objective.name] if self.early_stopping_patience is not None else []
        if tuner_objective is not None:
            for objective in getattr(tuner_objective, "objectives", None) or [tuner_objective]:
                if objective.name == "default_objective":
                    continue
                make_objective(objective, self.compiled_metrics, what="objective")
                names.append(objective.name)
                ours = self.objective
                if objective.name == ours.name:
                    if objective.direction != ours.direction:
                        raise ValueError(
                            f"The tuner {_verb(objective.direction)} {objective.name!r} but this "
                            f"HyperModel's EarlyStopping {_verb(ours.direction)} it. Pass "
                            f"objective=hypermodel.objective to the tuner. Received: "
                            f"objective={objective}")
                    continue
                base = objective.name[4:] if objective.name.startswith("val_") else objective.name
                expected = metric_direction(self.compiled_metrics.get(base, base))
                if expected is not None and expected != objective.direction:
                    raise ValueError(
                        f"The tuner {_verb(objective.direction)} {objective.name!r}, but it is "
                        f"better {'high' if expected == 'max' else 'low'} (Keras Tuner's inference "
                        f"from a name is wrong for some metrics). Pass keras_tuner.Objective("
                        f"{objective.name!r}, {expected!r}) to the tuner, or set it as "
                        f"make_hypermodel(objective=...) and pass objective=hypermodel.objective. "
                        f"Received: objective={objective}")
        if any(n.startswith("val_") for n in names) and kwargs.get("validation_data") is None \
                and not kwargs.get("validation_split"):
            raise ValueError(
                f"The objective {[n for n in names if n.startswith('val_')][0]!r} needs validation "
                "data: pass validation_data=... or validation_split=... to search().")

    def recipe_callbacks(self, hp, total_steps: int | None, why: str = "") -> list[keras.callbacks.Callback]:
        """The keras_trainkit callbacks this trial's hyperparameters ask for.

        Args:
            hp: The trial's `keras_tuner.HyperParameters`.
            total_steps: The optimizer updates the trial runs (`fit()`
                computes them from the data), or `None` when unknown.
            why: Why `total_steps` is unknown, for the error message.
                Defaults to `""`.

        Returns:
            `WarmUp` over `round(warmup_fraction * total_steps)` updates and
            the decay schedule over the rest, `EarlyStopping` on `objective`
            and `GradientNormLogger`, as configured.
        """
        out = []
        schedule = hp.values.get("lr_schedule", "constant")
        fraction = hp.values.get("warmup_fraction", 0.0) or 0.0
        if schedule != "constant" or fraction:
            if total_steps is None:
                raise keras_tuner.errors.FatalValueError(
                    f"Cannot size the learning-rate schedule: {why or 'the training data has no length'}. "
                    "Pass `steps_per_epoch` to search().")
            warmup = int(round(fraction * total_steps))
            decay_steps = max(1, total_steps - warmup)
            if warmup:
                out.append(tk_callbacks.WarmUp(warmup_steps=warmup))
            if schedule == "cosine":
                out.append(tk_callbacks.CosineDecay(decay_steps=decay_steps, alpha=hp.get("cosine_alpha")))
            elif schedule == "exponential":
                out.append(tk_callbacks.ExponentialDecay(decay_steps=decay_steps,
                                                         decay_rate=hp.get("exponential_decay_rate")))
            elif schedule == "step":
                count = hp.get("step_count")
                period = max(1, decay_steps // (count + 1))
                out.append(tk_callbacks.StepDecay(milestones=[period * (i + 1) for i in range(count)],
                                                  gamma=hp.get("step_gamma")))
            elif schedule == "polynomial":
                out.append(tk_callbacks.PolynomialDecay(decay_steps=decay_steps, end_learning_rate=0.0,
                                                        power=hp.get("polynomial_power")))
            elif schedule == "inverse_time":
                out.append(tk_callbacks.InverseTimeDecay(decay_steps=decay_steps,
                                                         decay_rate=hp.get("inverse_time_decay_rate")))
        if self.early_stopping_patience is not None:
            out.append(tk_callbacks.EarlyStopping(
                monitor=self.objective.name, mode=self.objective.direction,
                patience=self.early_stopping_patience, restore_best_weights=True))
        if self.log_grad_norm:
            out.append(tk_callbacks.GradientNormLogger(update_freq=self.log_grad_norm))
        return out

    def _leave_out_batch_size(self) -> None:
        """The data sets the batch size: stop declaring 'batch_size'."""
        self.space.pop("batch_size", None)


_KIND = {"dataset": "batched tf.data.Dataset", "pydataset": "keras.utils.PyDataset",
         "generator": "generator", "loader": "torch DataLoader"}


def _verb(direction: str) -> str:
    return "maximizes" if direction == "max" else "minimizes"


def regularizer_from(hp: keras_tuner.HyperParameters):
    """The L1/L2 kernel regularizer of a trial (for layers of your own backbone).

    Args:
        hp: The trial's hyperparameters.

    Returns:
        `keras.regularizers.L1L2(l1, l2)` from the trial's `l1` and `l2`, or
        `None` when both are 0 or absent.
    """
    l1 = hp.values.get("l1", 0.0) or 0.0
    l2 = hp.values.get("l2", 0.0) or 0.0
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def make_hypermodel(input_shape: tuple[int, ...], num_classes: int | None = None,
                    task: str = "classification", *, labels: str = "sparse",
                    build_backbone: Callable[[Any, Any], Any] | None = None,
                    search_space: Mapping[str, Any] | None = None, metrics: list | None = None,
                    loss: Any = None, objective: Any = None, epochs: int = 10,
                    early_stopping_patience: int | None = 3, log_grad_norm: int | bool = False,
                    name: str | None = None) -> TrainkitHyperModel:
    """A `keras_tuner.HyperModel` tuning the whole training recipe.

    The default search space (see `default_search_space()` for the exact
    table; every entry has a stable name and default):

    - `learning_rate` (log scale), `optimizer` (Keras' and keras_trainkit's:
      see `OPTIMIZERS`, extend with `register_optimizer`), `sgd_momentum`
      (only for SGD), `batch_size`;
    - `lr_schedule` (constant, cosine, exponential, step, polynomial,
      inverse_time) with its own parameters, conditional on it, and
      `warmup_fraction` (0 to 0.2 of the trial's updates);
    - `l1`, `l2` (kernel regularization), `dropout`;
    - architecture: `activation`, `num_layers` (at most `MAX_LAYERS` = 4) and
      `units_<i>` for the layers that exist; for image input
      (`len(input_shape) == 3`) also `conv_blocks` (at most 3) and `filters_<i>`.

    Everything is declared in `build()`, so every tuner sees every
    hyperparameter (batch size included) from trial 1.

    `fit()` counts the optimizer updates the trial will really run - from the
    array length (after `validation_split`) and the tuned batch size, a
    tf.data.Dataset's cardinality, a `PyDataset`'s length, `steps_per_epoch`
    (as Keras' epoch iterator consumes it), the tuner's `epochs` minus
    `initial_epoch` (Hyperband), and `gradient_accumulation_steps` - and
    spans the warm-up (`round(warmup_fraction * updates)`) and the decay
    schedule over exactly those updates, with keras_trainkit's in-graph LR
    callbacks. An unbatched tf.data.Dataset is batched with the tuned batch
    size; a batched one (or a `PyDataset`, a generator) sets its own batch
    size, so `batch_size` must be left out of the space:
    `search_space={"batch_size": None}` (keras_trainkit's tuners do it by
    themselves). It also adds `EarlyStopping` with best-weight restore on
    `objective` and optionally `GradientNormLogger`.

    Args:
        input_shape: Shape of one input sample, e.g. `(64,)` or `(8, 8, 1)`.
        num_classes: Classes (>= 2) for classification; outputs (>= 1) for
            regression. Defaults to `None` (1 output for regression).
        task: `"classification"` or `"regression"`. Defaults to `"classification"`.
        labels: `"sparse"` (integer labels) or `"one_hot"` for multi-class
            classification. Defaults to `"sparse"`.
        build_backbone: Optional `build_backbone(hp, inputs) -> tensor`
            replacing the built-in MLP/CNN trunk; it may declare its own
            hyperparameters and use `regularizer_from(hp)`. The architecture
            hyperparameters are then left out. Defaults to `None`.
        search_space: Changes to the default space: `name -> value` fixes a
            hyperparameter, `name -> [values]` sets the choices of a Choice,
            `name -> {"min_value": ..., ...}` overrides its arguments,
            `"batch_size" -> None` leaves the batch size to the data, and
            `name -> ("Float" | "Int" | "Choice" | "Boolean", {...})` adds a new
            one (read it in your `build_backbone`). Every value a built-in
            hyperparameter can take is checked (e.g. learning rate > 0,
            `l1`/`l2` >= 0, dropout in [0, 1), units > 0). Defaults to `None`.
        metrics: Keras metrics to compile (names, instances, classes or
            functions, e.g. `keras.metrics.AUC`, `F1Score`, `Precision`).
            Defaults to `["accuracy"]` for classification, `["mae"]` for
            regression.
        loss: Loss; by default derived from the task and labels. Defaults to `None`.
        objective: What `EarlyStopping` monitors and the tuner should optimize:
            a name as logged (`"val_auc"`) of a compiled metric (or the loss),
            or a `keras_tuner.Objective`. The direction comes from the
            compiled metric (Keras Tuner's inference, corrected where it is
            wrong); when it cannot be inferred, pass a `keras_tuner.Objective`.
            Pass `hypermodel.objective` to the tuner. Defaults to
            `"val_accuracy"` for classification when accuracy is compiled,
            else `"val_loss"`.
        epochs: Epochs per trial when the tuner does not set them. Defaults to `10`.
        early_stopping_patience: Patience of the `EarlyStopping`, or `None`
            for none. Defaults to `3`.
        log_grad_norm: Add a `GradientNormLogger` with this `update_freq`
            (`True` means 1). Defaults to `False`.
        name: HyperModel name. Defaults to `None`.

    Returns:
        A `TrainkitHyperModel`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for a bad
            configuration, before any search starts, naming the argument.

    Examples:
        >>> hm = make_hypermodel((64,), 10, search_space={"num_layers": [1, 2]})
        >>> tuner = GeneticSearch(hm, objective=hm.objective, max_trials=20)
        >>> tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
    """
    from keras_trainkit import _validation as v

    with fatal():
        if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape):
            raise ValueError(f"Argument `input_shape` must be a tuple of positive ints. Received: input_shape={input_shape!r}")
        v.one_of("task", task, ("classification", "regression"))
        v.one_of("labels", labels, ("sparse", "one_hot"))
        if task == "classification":
            num_classes = v.integer("num_classes", num_classes, low=2)
        else:
            num_classes = 1 if num_classes is None else v.integer("num_classes", num_classes, low=1)
        epochs = v.integer("epochs", epochs, low=1)
        if early_stopping_patience is not None:
            v.integer("early_stopping_patience", early_stopping_patience, low=0)
        if log_grad_norm is True:
            log_grad_norm = 1
        if log_grad_norm is not False:
            v.integer("log_grad_norm", log_grad_norm, low=1)
        if build_backbone is not None and not callable(build_backbone):
            raise ValueError(f"Argument `build_backbone` must be callable. Received: build_backbone={build_backbone!r}")
        space = space_for(len(input_shape) == 3, build_backbone is not None)
        space = apply_changes(space, search_space or {})
        metrics = _metrics(metrics, task)
        compiled = compiled_names(metrics)
        if objective is None:
            objective = "val_accuracy" if task == "classification" and "accuracy" in compiled else "val_loss"
        objective = make_objective(objective, compiled)
    return TrainkitHyperModel(space, tuple(input_shape), task, num_classes, labels, build_backbone,
                              metrics, loss, objective, epochs, early_stopping_patience,
                              log_grad_norm, name=name)


def _metrics(metrics, task) -> list:
    if metrics is None:
        return ["accuracy"] if task == "classification" else ["mae"]
    if isinstance(metrics, (str, keras.metrics.Metric)) or not isinstance(metrics, (list, tuple)):
        raise ValueError(f"Argument `metrics` must be a list of metrics. Received: metrics={metrics!r}")
    out = []
    for metric in metrics:
        if inspect.isclass(metric) and issubclass(metric, keras.metrics.Metric):
            metric = metric()  # an instance now: its name is fixed once, as the objective sees it
        if not (isinstance(metric, (str, keras.metrics.Metric)) or callable(metric)):
            raise ValueError(f"Argument `metrics` has an entry that is not a metric: {metric!r}. "
                             f"Received: metrics={metrics!r}")
        out.append(metric)
    return out


def _declare(hp, name, kind, kwargs):
    if kind == "Fixed":
        return hp.Fixed(name, kwargs["value"])
    return getattr(hp, kind)(name, **kwargs)


def _fresh(metric):
    if isinstance(metric, keras.metrics.Metric):
        return keras.metrics.deserialize(keras.metrics.serialize(metric))
    return metric
