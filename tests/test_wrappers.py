"""Every LR callback drives every optimizer wrapper, at the exact per-update rate.

Wrappers: keras_trainkit's `Lookahead`, Keras' `LossScaleOptimizer` and
`MultiOptimizer`, the discriminative optimizer, gradient accumulation and EMA.
For each, every callback's rates (read through Keras' `optimizer.learning_rate`
before each update) follow the schedule built on that sub-optimizer's own rate,
and one composed schedule's trained weights equal those of Keras' own optimizer
driven by the same schedule object (the rate applied inside the step).
Then every optimizer of `tuning.OPTIMIZERS` trains with every schedule of the
default search space.
"""

import keras
import numpy as np
import pytest

from keras_trainkit import callbacks as C
from keras_trainkit import optimizers as O
from keras_trainkit import schedules as S

N, BATCH = 32, 8  # 4 updates per epoch


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 4)).astype("float32")
    return x, (x @ rng.normal(size=(4, 1))).astype("float32")


def build(optimizer_fn):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(optimizer_fn(model), "mse")
    return model


class _PerRealUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """Keras evaluates a compiled schedule at the batch count under gradient
    accumulation; the reference keys it on real updates."""

    def __init__(self, schedule, every):
        self.schedule, self.every = schedule, every

    def __call__(self, step):
        return self.schedule(keras.ops.floor_divide(step, self.every))


# name -> (optimizer from a rate, the sub-optimizers' own rates, batches per update)
def _discriminative(rate):
    return lambda model: O.discriminative_optimizer(model, keras.optimizers.SGD(rate), groups=["out", "hidden"],
                                                    decay=0.5)


WRAPPERS = {
    "lookahead": (lambda rate: lambda model: O.Lookahead(keras.optimizers.SGD(rate), sync_period=2), [0.1], 1),
    "loss_scale": (lambda rate: lambda model: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(rate)),
                   [0.1], 1),
    "multi": (lambda rate: lambda model: keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.SGD(rate), {".*out.*": keras.optimizers.Adam(rate if callable(rate) else rate / 10)})),
        [0.1, 0.01], 1),
    "discriminative": (_discriminative, [0.1, 0.05], 1),
    "accumulation": (lambda rate: lambda model: keras.optimizers.SGD(rate, gradient_accumulation_steps=2), [0.1], 2),
    "ema": (lambda rate: lambda model: keras.optimizers.SGD(rate, momentum=0.9, use_ema=True), [0.1], 1),
}

CALLBACKS = [
    ("warmup", lambda: C.WarmUp(3, initial_learning_rate=0.001), lambda b: S.WarmUp(b, 3, 0.001)),
    ("step", lambda: C.StepDecay(step_size=2, gamma=0.5), lambda b: S.StepDecay(b, step_size=2, gamma=0.5)),
    ("exponential", lambda: C.ExponentialDecay(3, 0.5), lambda b: S.ExponentialDecay(b, 3, 0.5)),
    ("polynomial", lambda: C.PolynomialDecay(6, end_learning_rate=0.001, power=2.0),
     lambda b: S.PolynomialDecay(b, 6, 0.001, 2.0)),
    ("inverse_time", lambda: C.InverseTimeDecay(2, 1.0), lambda b: S.InverseTimeDecay(b, 2, 1.0)),
    ("cosine", lambda: C.CosineDecay(5, alpha=0.1), lambda b: S.CosineDecay(b, 5, alpha=0.1)),
    ("schedule", lambda: C.LearningRateSchedule(S.ExponentialDecay(0.02, 2, 0.5)),
     lambda b: S.ExponentialDecay(0.02, 2, 0.5)),
]


class SubRates(keras.callbacks.Callback):
    """Before each batch: the update count and the rate of each sub-optimizer."""

    def __init__(self, subs):
        super().__init__()
        self.subs, self.seen = subs, []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append([(int(o.iterations), float(o.learning_rate)) for o in self.subs])


def sub_optimizers(optimizer):
    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    return list(optimizer.optimizers) if isinstance(optimizer, keras.optimizers.MultiOptimizer) else [optimizer]


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_every_callback_drives_the_wrapper(wrapper):
    """Successive fits of one model (eager steps: the same controller, read on
    the host; the next test checks the rate applied inside compiled steps)."""
    make, own_rates, every = WRAPPERS[wrapper]
    x, y = data()
    model = build(make(0.1))
    model.run_eagerly = True
    subs = sub_optimizers(model.optimizer)
    own = [float(o.learning_rate) for o in subs]
    assert sorted(own) == pytest.approx(sorted(own_rates))
    for name, make_cb, expected in CALLBACKS:
        rec = SubRates(subs)
        start = int(subs[0].iterations)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[make_cb(), rec])
        for i, (sub, base) in enumerate(zip(subs, own)):
            steps = np.array([row[i][0] for row in rec.seen])
            assert list(steps) == [start + b // every for b in range(4)], (wrapper, name)
            np.testing.assert_allclose([row[i][1] for row in rec.seen], expected(base)(steps), rtol=1e-6,
                                       err_msg=f"{wrapper}/{name}/optimizer {i}")
            assert isinstance(sub._learning_rate, keras.Variable)  # given back
            assert float(sub.learning_rate) == pytest.approx(base)


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_rate_is_applied_inside_the_step(wrapper):
    """WarmUp + CosineDecay callbacks train exactly as the wrapper built on
    the composed schedule object (what Keras evaluates in its own step)."""
    make, _, every = WRAPPERS[wrapper]
    x, y = data()
    ours = build(make(0.1))
    ours.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
             callbacks=[C.WarmUp(3, initial_learning_rate=0.001), C.CosineDecay(4, alpha=0.1)])
    if wrapper in ("multi", "discriminative"):
        return  # sub-optimizers have different bases: checked through the rates above
    schedule = S.WarmUp(S.CosineDecay(0.1, 4, alpha=0.1), 3, 0.001)
    reference = build(make(_PerRealUpdate(schedule, every) if every > 1 else schedule))
    reference.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_every_tuning_optimizer_trains_with_every_schedule_of_the_search_space():
    """Each optimizer of `tuning.OPTIMIZERS` through the HyperModel's own fit(),
    with each `lr_schedule` of the default space in turn (eager steps; the
    compiled path is the same controller, checked per wrapper above)."""
    import keras_tuner

    from keras_trainkit import tuning

    x, y = data()
    schedule_choices = tuning.default_search_space()["lr_schedule"][1]["values"]
    hypermodel = tuning.make_hypermodel((4,), task="regression", epochs=1, early_stopping_patience=None)

    def hp_for(name, schedule):
        hp = keras_tuner.HyperParameters()
        for key, value in {"optimizer": name, "lr_schedule": schedule, "learning_rate": 0.01,
                           "num_layers": 1, "batch_size": 16}.items():
            hp.Fixed(key, value)
        return hp

    for name in tuning.OPTIMIZERS:
        model = hypermodel.build(hp_for(name, "constant"))
        model.run_eagerly = True
        subs = sub_optimizers(model.optimizer)
        for schedule in schedule_choices:
            hp = hp_for(name, schedule)
            hypermodel.build(hp)  # declares the schedule's own hyperparameters, with their defaults
            rec = SubRates(subs)
            history = hypermodel.fit(hp, model, x, y, verbose=0, shuffle=False, callbacks=[rec])
            assert np.isfinite(history.history["loss"]).all(), (name, schedule)
            rates = [row[0][1] for row in rec.seen]
            assert len(rates) == 2 and max(rates) <= 0.01 + 1e-9, (name, schedule, rates)
            if schedule != "constant":
                assert rates[-1] < rates[0] or rates[0] < 0.01, (name, schedule, rates)
    for name in ("adam", "lookahead_adam"):  # compiled steps too (a plain optimizer, a wrapper)
        hp = hp_for(name, "cosine")
        model = hypermodel.build(hp)
        history = hypermodel.fit(hp, model, x, y, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), name
