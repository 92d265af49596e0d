"""keras_trainkit: training recipes for Keras 3 as tested, in-graph tools.

- `keras_trainkit.schedules`: learning-rate schedules (Keras-compatible).
- `keras_trainkit.callbacks`: LR callbacks, EarlyStopping, GradientNormLogger,
  batch-size schedules and fine-tuning.
- `keras_trainkit.optimizers`: drop-in and additional Keras 3 optimizers.
- `keras_trainkit.tuning`: Keras Tuner HyperModel factory and genetic search.
- `keras_trainkit.data`: small offline datasets; `keras_trainkit.plotting`.
- `keras_trainkit.lr_find`: the learning-rate range test.
"""

from keras_trainkit import callbacks, data, optimizers, schedules, tuning
from keras_trainkit._lr_find import LRFinderResult, lr_find
from keras_trainkit._version import __version__

__all__ = ["LRFinderResult", "__version__", "callbacks", "lr_find", "data", "optimizers", "schedules", "tuning"]
