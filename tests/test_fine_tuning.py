"""GradualUnfreezing and discriminative learning rates on a transferred MLP.

A backbone (Dense -> BatchNormalization -> Dense) is pretrained on digits 0-4,
then transferred under a new head and fine-tuned on digits 5-9.
"""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_trainkit import callbacks as C
from keras_trainkit import optimizers as O
from keras_trainkit.data import load_digits


def digits_split():
    (x, y), _ = load_digits()
    low = y < 5
    return (x[low], y[low]), (x[~low][:320], y[~low][:320] - 5)


def make_backbone():
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu", name="b1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(16, activation="relu", name="b2"),
    ], name="backbone")


@pytest.fixture(scope="module")
def pretrained():
    """Backbone weights after a short training on digits 0-4."""
    keras.utils.set_random_seed(1)
    (x, y), _ = digits_split()
    backbone = make_backbone()
    model = keras.Sequential([backbone, keras.layers.Dense(5)])
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    return [w.numpy() for w in backbone.weights]


def transfer(pretrained, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = make_backbone()
    backbone.set_weights(pretrained)
    inputs = keras.Input((64,))
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(backbone(inputs)), name="transfer")


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
GROUPS = [["b2"], ["b1", "bn"]]


def snapshot(model):
    return {w.path.split("/", 1)[-1] if w.path.startswith("backbone/") else w.path: w.numpy().copy()
            for w in model.weights}


class Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.after = {}  # update count -> weights after it

    def on_train_begin(self, logs=None):
        self.after[int(self.model.optimizer.iterations)] = snapshot(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.after[int(self.model.optimizer.iterations)] = snapshot(self.model)


def first_change(snaps, name):
    """The first update after which `name` differs from its value before training."""
    start = min(snaps)
    for t in sorted(snaps):
        if not np.array_equal(snaps[t][name], snaps[start][name]):
            return t
    return None


def test_step_unfreezing_keeps_frozen_layers_bit_identical(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    opt = O.discriminative_optimizer(model, keras.optimizers.Adam(1e-2), groups=["head", *GROUPS],
                                     decay=0.5)
    model.compile(opt, LOSS)
    cb = C.GradualUnfreezing(GROUPS, unfreeze_at=[6, 13], unit="step")
    snaps = Snapshots()
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[cb, snaps])
    assert sorted(snaps.after) == list(range(21))
    # The head trains from update 1; b2 is frozen for 6 updates, b1 and BN for 13
    # (BN's moving statistics included), bit for bit.
    for name in ("head/kernel", "head/bias"):
        assert first_change(snaps.after, name) == 1
    for name in ("b2/kernel", "b2/bias"):
        assert first_change(snaps.after, name) == 7
    for name in ("b1/kernel", "b1/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"):
        assert first_change(snaps.after, name) == 14
    for t in range(7, 21):  # and once unfrozen they move at every update
        assert not np.array_equal(snaps.after[t]["b2/kernel"], snaps.after[t - 1]["b2/kernel"])
    assert cb.unfrozen_at == {0: 6, 1: 13}
    # No recompile, one optimizer built once: every group's optimizer counted
    # exactly the updates it applied.
    assert model.optimizer is opt
    assert [int(opt.group_optimizer(g).iterations) for g in range(3)] == [20, 14, 7]
    assert int(opt.iterations) == 20
    assert all(layer.trainable for layer in model.layers)


def test_optimizer_is_built_up_front_and_its_state_never_recreated(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    cb = C.GradualUnfreezing(GROUPS, every=1)

    class Ids(keras.callbacks.Callback):
        rows = []

        def on_epoch_begin(self, epoch, logs=None):
            opt = self.model.optimizer
            self.rows.append(([id(v) for v in opt.variables],
                              [ops.convert_to_numpy(v).copy() for v in opt.variables]))

    ids = Ids()
    model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0, callbacks=[cb, ids])
    first, _ = ids.rows[0]
    assert len(first) == 2 + 2 * len(model.trainable_variables)  # iterations, rate, m and v of all
    assert all(row[0] == first for row in ids.rows)  # same variables throughout
    # b1's slots are still at their initial zeros after epoch 1 (b1 frozen), then move.
    paths = [v.path for v in model.optimizer.variables]
    b1_m = paths.index(next(p for p in paths if p.endswith("b1_kernel_momentum")))
    assert not ids.rows[1][1][b1_m].any() and not ids.rows[2][1][b1_m].any()
    assert ops.convert_to_numpy(model.optimizer.variables[b1_m]).any()


def test_matches_an_explicit_training_loop(pretrained):
    """fit() + GradualUnfreezing == a GradientTape loop training the unfrozen subset
    with one optimizer built on everything."""
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained, seed=3)
    init = [w.numpy() for w in model.weights]
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0,
              callbacks=[C.GradualUnfreezing(GROUPS, unfreeze_at=[1, 2])])

    ref = transfer(pretrained, seed=3)
    ref.set_weights(init)
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    opt.build(ref.trainable_variables)
    b2, b1, bn = (ref.get_layer("backbone").get_layer(n) for n in ("b2", "b1", "bn"))
    for epoch in range(3):
        b2.trainable = epoch >= 1
        b1.trainable = bn.trainable = epoch >= 2
        for i in range(0, len(x), 64):
            with tf.GradientTape() as tape:
                loss = LOSS(y[i:i + 64], ref(x[i:i + 64], training=True))
            variables = ref.trainable_variables
            opt.apply(tape.gradient(loss, variables), variables)
    for a, b in zip(model.weights, ref.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_keras_needs_the_rebuilt_train_function():
    """Pins what GradualUnfreezing works around: toggling `trainable` mid-fit
    without `make_train_function(force=True)` has no effect."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a", trainable=False),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    before = model.get_layer("a").kernel.numpy()

    class Unfreeze(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.get_layer("a").trainable = True

    x = np.random.rand(32, 4).astype("float32")
    model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0, callbacks=[Unfreeze()])
    np.testing.assert_array_equal(model.get_layer("a").kernel.numpy(), before)


def test_discriminative_rates_are_geometric_per_group(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    opt = O.discriminative_optimizer(model, keras.optimizers.SGD(0.1), groups=["head", *GROUPS],
                                     decay=0.5)
    assert opt.group_learning_rates == pytest.approx([0.1, 0.05, 0.025])
    assert isinstance(opt, keras.optimizers.MultiOptimizer)
    model.compile(opt, LOSS)
    with tf.GradientTape() as tape:
        loss = LOSS(y[:64], model(x[:64], training=True))
    grads = {w.path: g.numpy() for w, g in zip(model.trainable_variables,
                                               tape.gradient(loss, model.trainable_variables))}
    before = {w.path: w.numpy() for w in model.trainable_variables}
    model.train_on_batch(x[:64], y[:64])
    rate = {"head": 0.1, "b2": 0.05, "b1": 0.025, "bn": 0.025}
    for w in model.trainable_variables:
        layer = w.path.split("/")[-2]
        np.testing.assert_allclose(w.numpy(), before[w.path] - rate[layer] * grads[w.path],
                                   rtol=1e-5, atol=1e-6, err_msg=w.path)


def test_decay_callbacks_keep_each_group_rate(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    opt = O.discriminative_optimizer(model, keras.optimizers.SGD(0.1), groups=["head", *GROUPS],
                                     decay=0.5)
    model.compile(opt, LOSS)
    model.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0,
              callbacks=[C.ExponentialDecay(decay_steps=10, decay_rate=0.5)])
    # One update at t=0: schedule(0) is each group's own rate.
    history = model.history.history
    assert [history[f"learning_rate_{opt.group_optimizer(g).name}"][0] for g in range(3)] == \
        pytest.approx([0.1, 0.05, 0.025])


def test_default_groups_and_explicit_multipliers(pretrained):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(2, name="b"),
                              keras.layers.Dense(1, name="c")])
    opt = O.discriminative_optimizer(model, "adam", decay=0.1)  # c, b, a
    assert opt.group_learning_rates == pytest.approx([1e-3, 1e-4, 1e-5])
    opt = O.discriminative_optimizer(model, keras.optimizers.Adam(0.01), groups=["c", ["b", "a"]],
                                     multipliers=[1.0, 0.3])
    assert opt.group_learning_rates == pytest.approx([0.01, 0.003])


def test_save_and_load_round_trip(pretrained, tmp_path):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    model.compile(O.discriminative_optimizer(model, keras.optimizers.Adam(1e-2),
                                             groups=["head", *GROUPS], decay=0.3), LOSS)
    model.fit(x, y, batch_size=64, epochs=3, verbose=0,
              callbacks=[C.GradualUnfreezing(GROUPS, every=1)])
    model.save(tmp_path / "fine_tuned.keras")
    loaded = keras.saving.load_model(tmp_path / "fine_tuned.keras")
    opt = loaded.optimizer
    assert type(opt) is O.DiscriminativeOptimizer
    assert opt.group_learning_rates == pytest.approx([1e-2, 3e-3, 9e-4])
    saved = model.optimizer.variables
    assert len(opt.variables) == len(saved)
    for a, b in zip(saved, opt.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    model.train_on_batch(x[:64], y[:64])
    loaded.train_on_batch(x[:64], y[:64])
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_checkpoint_taken_mid_unfreezing_restores_with_load_weights(pretrained, tmp_path):
    """Keras builds a loaded model's optimizer on the layers trainable in the file,
    so load_model() skips the state of a checkpoint with frozen groups; building
    the optimizer on everything and calling load_weights() restores all of it."""
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    model.compile(O.discriminative_optimizer(model, keras.optimizers.Adam(1e-2),
                                             groups=["head", *GROUPS]), LOSS)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[C.GradualUnfreezing(GROUPS, every=1)])
    path = tmp_path / "mid.keras"
    model.save(path)  # b1 and bn still frozen
    with pytest.warns(UserWarning, match="Skipping variable loading for optimizer"):
        keras.saving.load_model(path)
    restored = keras.saving.load_model(path, compile=False)
    for layer in restored.get_layer("backbone").layers:
        layer.trainable = True
    restored.compile(O.discriminative_optimizer(restored, keras.optimizers.Adam(1e-2),
                                                groups=["head", *GROUPS]), LOSS)
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(path)
    assert len(restored.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    # Resuming continues exactly as the original run does.
    for m in (model, restored):
        m.fit(x, y, batch_size=64, epochs=3, initial_epoch=2, verbose=0, shuffle=False,
              callbacks=[C.GradualUnfreezing(GROUPS, every=1)])
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_refuses_optimizers_that_cannot_train_later_groups(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.SGD()))
    model.compile(multi, LOSS)
    with pytest.raises(ValueError, match="discriminative_optimizer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[C.GradualUnfreezing(GROUPS, every=1)])
    model = transfer(pretrained)
    for name in ("b1", "bn", "b2"):
        model.get_layer("backbone").get_layer(name).trainable = False
    model.compile(keras.optimizers.SGD(), LOSS)
    model.optimizer.build(model.trainable_variables)  # head only
    with pytest.raises(ValueError, match="already built without"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[C.GradualUnfreezing(GROUPS, every=1)])


def test_a_container_group_freezes_and_unfreezes_all_its_layers(pretrained):
    (_, _), (x, y) = digits_split()
    model = transfer(pretrained)
    backbone = model.get_layer("backbone")
    backbone.get_layer("b1").trainable = False  # a frozen sublayer inside a trainable container
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    snaps = Snapshots()
    model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,
              callbacks=[C.GradualUnfreezing(["backbone"], unfreeze_at=[1]), snaps])
    assert first_change(snaps.after, "b2/kernel") == 6 and first_change(snaps.after, "b1/kernel") == 6
    assert all(layer.trainable for layer in backbone.layers)


def test_deepcopy_keeps_layers_shared(pretrained):
    model = transfer(pretrained)
    layer = model.get_layer("backbone").get_layer("b2")
    cb = C.GradualUnfreezing([[layer], "b1"], unfreeze_at=[0, 3], unit="step")
    clone = copy.deepcopy(cb)
    assert clone.groups[0][0] is layer and clone.unfreeze_at == [0, 3] and clone.model is None


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                             keras.layers.Dense(1, name="b")])


BAD = [
    ("groups", lambda: C.GradualUnfreezing([], every=1)),
    ("groups", lambda: C.GradualUnfreezing("a", every=1)),
    ("unfreeze_at", lambda: C.GradualUnfreezing(["a"])),
    ("unfreeze_at", lambda: C.GradualUnfreezing(["a"], unfreeze_at=[1], every=1)),
    ("unfreeze_at", lambda: C.GradualUnfreezing(["a", "b"], unfreeze_at=[1])),
    ("unfreeze_at", lambda: C.GradualUnfreezing(["a", "b"], unfreeze_at=[3, 1])),
    ("unfreeze_at", lambda: C.GradualUnfreezing(["a"], unfreeze_at=[-1])),
    ("every", lambda: C.GradualUnfreezing(["a"], every=0)),
    ("unit", lambda: C.GradualUnfreezing(["a"], every=1, unit="batch")),
    ("verbose", lambda: C.GradualUnfreezing(["a"], every=1, verbose=-2)),
    ("model", lambda: O.discriminative_optimizer("model", "adam")),
    ("optimizer", lambda: O.discriminative_optimizer(_model(), 0.1)),
    ("optimizer", lambda: O.discriminative_optimizer(
        _model(), keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.5)))),
    ("decay", lambda: O.discriminative_optimizer(_model(), "sgd", decay=0.0)),
    ("decay", lambda: O.discriminative_optimizer(_model(), "sgd", decay=1.5)),
    ("multipliers", lambda: O.discriminative_optimizer(_model(), "sgd", multipliers=[1.0])),
    ("multipliers", lambda: O.discriminative_optimizer(_model(), "sgd", multipliers=[1.0, -0.5])),
    ("groups", lambda: O.discriminative_optimizer(_model(), "sgd", groups=["nope"])),
    ("groups", lambda: O.discriminative_optimizer(_model(), "sgd", groups=["a", ["b", "a"]])),
    ("groups", lambda: O.discriminative_optimizer(_model(), "sgd", groups=[[]])),
]


@pytest.mark.parametrize("name,make", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_raise_value_error_naming_the_argument(name, make):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_example_runs_and_saves_its_plot(tmp_path):
    import os
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    main = runpy.run_path(os.path.join(root, "examples", "fine_tuning.py"))["main"]
    result = main(["--out", str(tmp_path), "--epochs", "4"])
    assert result["unfrozen_at"] == {0: 1, 1: 2, 2: 3}
    assert result["rates"] == pytest.approx([1e-2, 3e-3, 9e-4, 2.7e-4])
    assert result["accuracy"][-1] > 0.6
    assert (tmp_path / "fine_tuning_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
