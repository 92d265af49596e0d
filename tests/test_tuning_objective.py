"""Objective directions for every `keras.metrics` export, and objective checks before training.

The reference direction of each metric is measured: the metric is evaluated
on good and on bad predictions of the same targets, and "max" means the good
ones score higher. Keras Tuner's own inference is compared too: it must agree
everywhere except on the metrics listed in `KT_DISAGREES`, where the
measurement shows Keras Tuner 1.4.8 is wrong or cannot answer.
"""

import inspect

import keras
import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine import metrics_tracking

from keras_trainkit.tuning import (
    GeneticSearch,
    make_hypermodel,
    make_objective,
    metric_direction,
)
from keras_trainkit.tuning._objective import compiled_names, snake_case

# --- measured directions -----------------------------------------------------------
_CLASSES = 8
_LABELS = np.array(list(range(_CLASSES)) * 2)


def _probabilities(good):
    p = np.full((len(_LABELS), _CLASSES), 0.02, dtype="float32")
    for i, c in enumerate(_LABELS):
        if good:
            p[i, c] = 0.86
        else:  # the true class gets the lowest probability
            p[i, (c + 1) % _CLASSES] = 0.86
            p[i, c] = 0.0
    return p / p.sum(1, keepdims=True)


def _families():
    binary_true = np.array([[0], [1], [1], [0], [1], [0], [1], [0]], dtype="float32")
    binary_good = binary_true * 0.8 + 0.1
    reg_true = np.array([[1.0], [2.0], [3.0], [4.0], [2.5], [1.5]], dtype="float32")
    vec_true = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, 2.5], [2.0, 2.0]], dtype="float32")
    onehot = np.eye(_CLASSES, dtype="float32")[_LABELS]
    return {
        "binary": (binary_true, binary_good, 1.0 - binary_good),
        "onehot": (onehot, _probabilities(True), _probabilities(False)),
        "sparse": (_LABELS, _probabilities(True), _probabilities(False)),
        "class_ids": (_LABELS, _LABELS, (_LABELS + 1) % _CLASSES),
        "regression": (reg_true, reg_true * 1.05, reg_true.max() + reg_true.min() - reg_true),
        # Correlations are taken along the last axis.
        "series": (reg_true.T, reg_true.T * 1.05, (reg_true.max() + reg_true.min() - reg_true).T),
        "vectors": (vec_true, vec_true * 1.1, vec_true[:, ::-1] * np.array([1.0, -1.0], "float32")),
    }


# export -> (data family, constructor arguments); None: no direction of its own.
FAMILY = {
    "AUC": ("binary", {}), "Accuracy": ("class_ids", {}), "BinaryAccuracy": ("binary", {}),
    "BinaryCrossentropy": ("binary", {}), "BinaryIoU": ("binary", {}),
    "CategoricalAccuracy": ("onehot", {}), "CategoricalCrossentropy": ("onehot", {}),
    "CategoricalHinge": ("onehot", {}), "ConcordanceCorrelation": ("series", {}),
    "CosineSimilarity": ("vectors", {}), "F1Score": ("onehot", {}), "FBetaScore": ("onehot", {}),
    "FalseNegatives": ("binary", {}), "FalsePositives": ("binary", {}), "Hinge": ("binary", {}),
    "IoU": ("class_ids", {"num_classes": _CLASSES, "target_class_ids": list(range(_CLASSES))}),
    "KLDivergence": ("onehot", {}), "LogCoshError": ("regression", {}), "Mean": None,
    "MeanAbsoluteError": ("regression", {}), "MeanAbsolutePercentageError": ("regression", {}),
    "MeanIoU": ("class_ids", {"num_classes": _CLASSES}), "MeanMetricWrapper": None,
    "MeanSquaredError": ("regression", {}), "MeanSquaredLogarithmicError": ("regression", {}),
    "Metric": None,
    "OneHotIoU": ("onehot", {"num_classes": _CLASSES, "target_class_ids": list(range(_CLASSES))}),
    "OneHotMeanIoU": ("onehot", {"num_classes": _CLASSES}), "PearsonCorrelation": ("series", {}),
    "Poisson": ("regression", {}), "Precision": ("binary", {}),
    "PrecisionAtRecall": ("binary", {"recall": 0.5}), "R2Score": ("regression", {}),
    "Recall": ("binary", {}), "RecallAtPrecision": ("binary", {"precision": 0.8}),
    "RootMeanSquaredError": ("regression", {}),
    "SensitivityAtSpecificity": ("binary", {"specificity": 0.5}),
    "SparseCategoricalAccuracy": ("sparse", {}), "SparseCategoricalCrossentropy": ("sparse", {}),
    "SparseTopKCategoricalAccuracy": ("sparse", {}),
    "SpecificityAtSensitivity": ("binary", {"sensitivity": 0.5}), "SquaredHinge": ("binary", {}),
    "Sum": None, "TopKCategoricalAccuracy": ("onehot", {}), "TrueNegatives": ("binary", {}),
    "TruePositives": ("binary", {}),
    "binary_accuracy": ("binary", {}), "binary_crossentropy": ("binary", {}),
    "binary_focal_crossentropy": ("binary", {}), "categorical_accuracy": ("onehot", {}),
    "categorical_crossentropy": ("onehot", {}), "categorical_focal_crossentropy": ("onehot", {}),
    "categorical_hinge": ("onehot", {}), "concordance_correlation": ("series", {}),
    "hinge": ("binary", {}), "huber": ("regression", {}), "kl_divergence": ("onehot", {}),
    "log_cosh": ("regression", {}), "mean_absolute_error": ("regression", {}),
    "mean_absolute_percentage_error": ("regression", {}), "mean_squared_error": ("regression", {}),
    "mean_squared_logarithmic_error": ("regression", {}), "pearson_correlation": ("series", {}),
    "poisson": ("regression", {}), "sparse_categorical_accuracy": ("sparse", {}),
    "sparse_categorical_crossentropy": ("sparse", {}), "sparse_top_k_categorical_accuracy": ("sparse", {}),
    "squared_hinge": ("binary", {}), "top_k_categorical_accuracy": ("onehot", {}),
}
# Where Keras Tuner 1.4.8's inference (from the exported name) differs from the measurement.
KT_DISAGREES = {
    "BinaryIoU", "ConcordanceCorrelation", "CosineSimilarity", "F1Score", "FBetaScore", "IoU", "Mean",
    "MeanIoU", "MeanMetricWrapper", "Metric", "OneHotIoU", "OneHotMeanIoU", "PearsonCorrelation",
    "PrecisionAtRecall", "R2Score", "RecallAtPrecision", "SensitivityAtSpecificity",
    "SpecificityAtSensitivity", "Sum", "concordance_correlation", "pearson_correlation",
}
EXPORTS = sorted(n for n in dir(keras.metrics)
                 if not n.startswith("_") and n not in ("get", "serialize", "deserialize"))


def _measure(name):
    family, kwargs = FAMILY[name]
    y_true, good, bad = _families()[family]
    obj = getattr(keras.metrics, name)

    def value(y_pred):
        if inspect.isclass(obj):
            metric = obj(**kwargs)
            metric.update_state(y_true, y_pred)
            return float(np.mean(keras.ops.convert_to_numpy(metric.result())))
        return float(np.mean(keras.ops.convert_to_numpy(obj(y_true, y_pred))))

    g, b = value(good), value(bad)
    assert np.isfinite(g) and np.isfinite(b) and g != b, (name, g, b)
    return "max" if g > b else "min"


def _kt(name):
    try:
        return metrics_tracking.infer_metric_direction(name)
    except Exception:
        return "error"


def test_every_keras_metric_export_is_covered():
    assert set(EXPORTS) == set(FAMILY), set(EXPORTS) ^ set(FAMILY)


@pytest.mark.parametrize("name", EXPORTS)
def test_direction_of_every_keras_metric(name):
    expected = None if FAMILY[name] is None else _measure(name)
    obj = getattr(keras.metrics, name)
    assert metric_direction(name) == expected
    assert metric_direction(f"val_{name}") == expected
    assert metric_direction(obj) == expected
    if inspect.isclass(obj):
        assert metric_direction(f"val_{snake_case(name)}") == expected  # the default logged name
    # Keras Tuner's own inference agrees except where it is measurably wrong.
    assert (_kt(name) == expected) == (name not in KT_DISAGREES), (name, _kt(name), expected)


def test_the_issue_examples_are_minimized_while_keras_tuner_agrees():
    for name in ["val_root_mean_squared_error", "val_sparse_categorical_crossentropy",
                 "val_false_positives", "val_mean_absolute_percentage_error", "val_hinge",
                 "val_kl_divergence"]:
        assert metric_direction(name) == "min" == metrics_tracking.infer_metric_direction(name)


def test_compiled_metric_decides_the_direction_of_its_own_name():
    compiled = compiled_names([keras.metrics.AUC(name="my_auc"), keras.metrics.F1Score(name="f1"),
                               keras.metrics.MeanSquaredError(name="err"), "acc", keras.metrics.log_cosh])
    assert list(compiled) == ["loss", "my_auc", "f1", "err", "acc", "log_cosh"]
    assert make_objective("val_my_auc", compiled).direction == "max"
    assert make_objective("f1", compiled).direction == "max"
    assert make_objective("val_err", compiled).direction == "min"
    assert make_objective("val_acc", compiled).direction == "max"
    assert make_objective("val_log_cosh", compiled).direction == "min"
    with pytest.raises(ValueError, match=r"'val_auc'.*does not compile.*loss, my_auc"):
        make_objective("val_auc", compiled)
    with pytest.raises(ValueError, match="Cannot infer.*keras_tuner.Objective"):
        make_objective("val_mystery")
    with pytest.raises(ValueError, match="direction 'maximize'"):
        make_objective(keras_tuner.Objective("val_acc", "maximize"), compiled)
    # A user's subclass is judged by its Keras ancestor; a bare Mean has no direction.

    class MyAUC(keras.metrics.AUC):
        pass

    assert metric_direction(MyAUC(name="mine")) == "max"
    with pytest.raises(ValueError, match="Cannot infer"):
        make_objective("val_avg", compiled_names([keras.metrics.Mean(name="avg")]))
    custom = keras_tuner.Objective("val_avg", "min")
    assert make_objective(custom, compiled_names([keras.metrics.Mean(name="avg")])) is custom


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32").reshape(-1, 1)
    return x, y


def _hm(**kwargs):
    # Few conditional branches: a tuner's constructor builds one model per branch.
    space = {"num_layers": 1, "units_0": 8, "batch_size": 32, "optimizer": "adam", "lr_schedule": "cosine"}
    return make_hypermodel((4,), 2, epochs=1, search_space=space, **kwargs)


def _trained_batches():
    calls = []
    return calls, keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: calls.append(batch))


@pytest.mark.parametrize("objective,match", [
    ("val_f1_score", "better high"),  # Keras Tuner infers "min" from the name
    ("val_precision", "does not compile"),
])
def test_keras_tuner_objective_is_checked_before_any_training(tmp_path, tiny_data, objective, match):
    x, y = tiny_data
    hm = _hm(metrics=[keras.metrics.F1Score(name="f1_score", threshold=0.5), "accuracy"])
    tuner = keras_tuner.RandomSearch(hm, objective=objective, max_trials=2, directory=str(tmp_path),
                                     project_name="o", overwrite=True)
    calls, counter = _trained_batches()
    with pytest.raises(keras_tuner.errors.FatalValueError, match=match):
        tuner.search(x, y, validation_data=(x, y), callbacks=[counter], verbose=0)
    assert calls == []


def test_our_tuners_check_the_objective_in_their_constructor(tmp_path):
    hm = _hm(metrics=["accuracy", keras.metrics.AUC(name="auc")])
    common = dict(directory=str(tmp_path), project_name="c", overwrite=True, max_trials=2,
                  population_size=2, tournament_size=2)
    assert GeneticSearch(hm, **common).oracle.objective is hm.objective  # None: the HyperModel's
    assert GeneticSearch(hm, objective="val_auc", **common).oracle.objective.direction == "max"
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"'val_recall'.*does not compile.*auc"):
        GeneticSearch(hm, objective="val_recall", **common)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="contradicts"):
        GeneticSearch(hm, objective=keras_tuner.Objective("val_accuracy", "min"), **common)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="direction 'best'"):
        GeneticSearch(hm, objective=keras_tuner.Objective("val_auc", "best"), **common)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="Cannot infer"):
        GeneticSearch(lambda hp: None, objective="val_mystery", **common)
