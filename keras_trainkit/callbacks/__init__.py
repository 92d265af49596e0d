"""Callbacks for `model.fit(callbacks=[...])`."""

from keras_trainkit.callbacks._early_stopping import EarlyStopping

__all__: list[str] = ["EarlyStopping"]
