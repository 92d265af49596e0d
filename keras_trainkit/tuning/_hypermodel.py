"""`make_hypermodel`: a Keras Tuner HyperModel over the whole training recipe."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import keras_tuner

from keras_trainkit import callbacks as tk_callbacks
from keras_trainkit import optimizers as tk_optimizers
from keras_trainkit.tuning._errors import fatal

# name -> factory(learning_rate, hp) building the optimizer.
OPTIMIZERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "adam": lambda lr, hp: keras.optimizers.Adam(lr),
    "adamw": lambda lr, hp: keras.optimizers.AdamW(lr),
    "sgd": lambda lr, hp: keras.optimizers.SGD(lr, momentum=hp.get("sgd_momentum")),
    "rmsprop": lambda lr, hp: keras.optimizers.RMSprop(lr),
    "adagrad": lambda lr, hp: keras.optimizers.Adagrad(lr),
    "nadam": lambda lr, hp: keras.optimizers.Nadam(lr),
    "lion": lambda lr, hp: keras.optimizers.Lion(lr),
    "radam": lambda lr, hp: tk_optimizers.RAdam(lr),
    "adabelief": lambda lr, hp: tk_optimizers.AdaBelief(lr),
    "yogi": lambda lr, hp: tk_optimizers.Yogi(lr),
    "adan": lambda lr, hp: tk_optimizers.Adan(lr),
    "lars": lambda lr, hp: tk_optimizers.LARS(lr),
    "novograd": lambda lr, hp: tk_optimizers.NovoGrad(lr),
    "lookahead_adam": lambda lr, hp: tk_optimizers.Lookahead(keras.optimizers.Adam(lr)),
}
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
    "warmup_steps": ("Int", dict(min_value=0, max_value=500, step=50, default=0)),
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
_ARCHITECTURE = {"activation", "num_layers", "conv_blocks"} | {
    n for n in _SPACE if n.startswith(("units_", "filters_"))}


def default_search_space() -> dict[str, tuple[str, dict[str, Any]]]:
    """A copy of the default search space table (name -> (type, arguments))."""
    return copy.deepcopy(_SPACE)


class TrainkitHyperModel(keras_tuner.HyperModel):
    """A HyperModel over optimizer, learning-rate schedule, warm-up, batch size,
    regularization and architecture; built by `make_hypermodel`."""

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
        optimizer = OPTIMIZERS[hp.get("optimizer")](hp.get("learning_rate"), hp)
        model.compile(optimizer=optimizer, loss=loss, metrics=[_fresh(m) for m in self.metrics])
        return model

    # -- training ---------------------------------------------------------------------
    def fit(self, hp, model, *args, **kwargs):
        if "batch_size" in kwargs:
            raise keras_tuner.errors.FatalValueError(
                "Do not pass `batch_size` to search(): it is tuned as the hyperparameter "
                f"'batch_size'. Fix it with make_hypermodel(search_space={{'batch_size': "
                f"{kwargs['batch_size']!r}}}) instead. Received: batch_size={kwargs['batch_size']!r}")
        batch_size = hp.get("batch_size")
        epochs = kwargs.pop("epochs", self.epochs)  # Hyperband passes its own
        initial_epoch = kwargs.get("initial_epoch", 0)
        steps_per_epoch = kwargs.get("steps_per_epoch") or _steps_per_epoch(args, kwargs, batch_size)
        total_steps = max(1, (epochs - initial_epoch) * steps_per_epoch) if steps_per_epoch else None
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks += self.recipe_callbacks(hp, total_steps)
        return model.fit(*args, batch_size=batch_size, epochs=epochs, callbacks=callbacks, **kwargs)

    def recipe_callbacks(self, hp, total_steps):
        """The keras_trainkit callbacks this trial's hyperparameters ask for."""
        out = []
        schedule = hp.get("lr_schedule") if "lr_schedule" in hp.values else "constant"
        warmup = hp.get("warmup_steps") if "warmup_steps" in hp.values else 0
        if schedule != "constant" or warmup:
            if total_steps is None:
                raise keras_tuner.errors.FatalValueError(
                    "Cannot size the learning-rate schedule: pass `steps_per_epoch` to search() "
                    "when the training data has no length.")
            decay_steps = max(1, total_steps - warmup)
            if warmup:
                out.append(tk_callbacks.WarmUp(warmup))
            if schedule == "cosine":
                out.append(tk_callbacks.CosineDecay(decay_steps, alpha=hp.get("cosine_alpha")))
            elif schedule == "exponential":
                out.append(tk_callbacks.ExponentialDecay(decay_steps, hp.get("exponential_decay_rate")))
            elif schedule == "step":
                count = hp.get("step_count")
                period = max(1, decay_steps // (count + 1))
                out.append(tk_callbacks.StepDecay(milestones=[period * (i + 1) for i in range(count)],
                                                  gamma=hp.get("step_gamma")))
            elif schedule == "polynomial":
                out.append(tk_callbacks.PolynomialDecay(decay_steps, end_learning_rate=0.0,
                                                        power=hp.get("polynomial_power")))
            elif schedule == "inverse_time":
                out.append(tk_callbacks.InverseTimeDecay(decay_steps, hp.get("inverse_time_decay_rate")))
        if self.early_stopping_patience is not None:
            out.append(tk_callbacks.EarlyStopping(
                monitor=self.objective.name, mode=self.objective.direction,
                patience=self.early_stopping_patience, restore_best_weights=True))
        if self.log_grad_norm:
            out.append(tk_callbacks.GradientNormLogger(update_freq=self.log_grad_norm))
        return out


def regularizer_from(hp: keras_tuner.HyperParameters):
    """The L1/L2 kernel regularizer of a trial (for layers of your own backbone)."""
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
      see `OPTIMIZERS`), `sgd_momentum` (only for SGD), `batch_size`;
    - `lr_schedule` (constant, cosine, exponential, step, polynomial,
      inverse_time) with its own parameters, conditional on it, and
      `warmup_steps`; the schedule spans the trial's training and is applied
      with keras_trainkit's in-graph LR callbacks;
    - `l1`, `l2` (kernel regularization), `dropout`;
    - architecture: `activation`, `num_layers` and `units_<i>` for the layers
      that exist; for image input (`len(input_shape) == 3`) also
      `conv_blocks` and `filters_<i>`.

    Everything is declared in `build()`, so every tuner sees every
    hyperparameter (batch size included) from trial 1. `fit()` adds the
    keras_trainkit callbacks (LR schedule and warm-up, `EarlyStopping` with
    best-weight restore on `objective`, optional `GradientNormLogger`), tunes
    the batch size, and takes `epochs` from the tuner when it passes one
    (Hyperband) without passing it twice.

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
            `name -> {"min_value": ..., ...}` overrides its arguments, and
            `name -> ("Float" | "Int" | "Choice" | "Boolean", {...})` adds a new
            one (read it in your `build_backbone`). Defaults to `None`.
        metrics: Keras metrics to compile (any, e.g. `keras.metrics.AUC`,
            `F1Score`, `Precision`, `Recall`). Defaults to `["accuracy"]` for
            classification, `["mae"]` for regression.
        loss: Loss; by default derived from the task and labels. Defaults to `None`.
        objective: What `EarlyStopping` monitors and the tuner should optimize
            (a name or a `keras_tuner.Objective`; its direction is inferred for
            Keras' metrics). Defaults to `"val_accuracy"` for classification,
            `"val_loss"` for regression.
        epochs: Epochs per trial when the tuner does not set them. Defaults to `10`.
        early_stopping_patience: Patience of the `EarlyStopping`, or `None`
            for none. Defaults to `3`.
        log_grad_norm: Add a `GradientNormLogger` with this `update_freq`
            (`True` means 1). Defaults to `False`.
        name: HyperModel name. Defaults to `None`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for a bad
            configuration, before any search starts.
    """
    from keras_trainkit import _validation as v

    with fatal():
        if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
                isinstance(d, int) and d > 0 for d in input_shape):
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
        space = _space_for(len(input_shape) == 3, build_backbone is not None)
        space = _apply_changes(space, search_space or {})
        if objective is None:
            objective = "val_accuracy" if task == "classification" else "val_loss"
        objective = _objective(objective)
        metrics = list(metrics) if metrics is not None else (["accuracy"] if task == "classification" else ["mae"])
    return TrainkitHyperModel(space, tuple(input_shape), task, num_classes, labels, build_backbone,
                              metrics, loss, objective, epochs, early_stopping_patience,
                              log_grad_norm, name=name)


def _space_for(image: bool, custom_backbone: bool):
    space = default_search_space()
    for name in list(space):
        kind, kwargs = space[name]
        if (kwargs.get("image") and not image) or (custom_backbone and name in _ARCHITECTURE):
            del space[name]
    return space


_KINDS = ("Float", "Int", "Choice", "Boolean", "Fixed")


def _apply_changes(space, changes):
    if not isinstance(changes, Mapping):
        raise ValueError(f"Argument `search_space` must be a dict. Received: search_space={changes!r}")
    for name, change in changes.items():
        where = f"search_space[{name!r}]"
        if isinstance(change, tuple) and len(change) == 2 and change[0] in _KINDS:
            space[name] = (change[0], dict(change[1]))
        elif name not in space:
            raise ValueError(
                f"Argument `search_space` names an unknown hyperparameter {name!r}; known: "
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
        _check_entry(name, kind, kwargs)
    return space


def _check_entry(name, kind, kwargs):
    where = f"search_space[{name!r}]"
    if kind not in _KINDS:
        raise ValueError(f"Argument `{where}` has an unknown type {kind!r}; use one of {_KINDS}.")
    if kind in ("Float", "Int"):
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        if lo is None or hi is None or not lo <= hi:
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
            raise ValueError(f"Argument `{where}` has unknown {name} names {bad}; known: {sorted(known)}.")
    if name == "batch_size" and values is not None and not all(isinstance(b, int) and b > 0 for b in values):
        raise ValueError(f"Argument `{where}` needs positive integer batch sizes. Received: {values!r}")


def _declare(hp, name, kind, kwargs):
    if kind == "Fixed":
        return hp.Fixed(name, kwargs["value"])
    return getattr(hp, kind)(name, **kwargs)


def _objective(objective):
    if isinstance(objective, keras_tuner.Objective):
        return objective
    if isinstance(objective, str):
        name = objective[4:] if objective.startswith("val_") else objective
        direction = "min" if name in ("loss", "mae", "mse", "mape", "msle", "mean_absolute_error",
                                      "mean_squared_error") or name.endswith("loss") else "max"
        return keras_tuner.Objective(objective, direction)
    raise ValueError(f"Argument `objective` must be a metric name or a keras_tuner.Objective. Received: objective={objective!r}")


def _fresh(metric):
    if isinstance(metric, keras.metrics.Metric):
        return keras.metrics.deserialize(keras.metrics.serialize(metric))
    return metric


def _steps_per_epoch(args, kwargs, batch_size):
    x = args[0] if args else kwargs.get("x")
    try:
        n = len(x) if not isinstance(x, dict) else len(next(iter(x.values())))
    except TypeError:
        return None
    if kwargs.get("validation_split"):
        n = int(n * (1 - kwargs["validation_split"]))
    return math.ceil(n / batch_size)
