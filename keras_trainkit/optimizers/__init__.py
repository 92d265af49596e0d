"""Keras 3 optimizers written with `keras.ops` only, registered for serialization.

Drop-ins for Keras' classes of the same name (same arguments, defaults and
trajectory): `SGD`, `Adagrad`, `RMSprop`, `Adam` (which adds
`bias_correction`). Algorithms Keras lacks, matching optax's implementations:
`RAdam`, `AdaBelief`, `Yogi`, `Adan`, `LARS`, `NovoGrad`, and `Lookahead`
around any Keras optimizer. All accept Keras' base arguments and a float,
schedule or callable learning rate, and are saved with the model under the
package name `keras_trainkit`.

`discriminative_optimizer(model, optimizer, groups, decay)` gives each group
of layers its own rate (a `DiscriminativeOptimizer`, Keras' `MultiOptimizer`
that also trains a subset of its variables, for gradual unfreezing).
"""

from keras_trainkit.optimizers._adabelief import AdaBelief
from keras_trainkit.optimizers._adagrad import Adagrad
from keras_trainkit.optimizers._adam import Adam
from keras_trainkit.optimizers._adan import Adan
from keras_trainkit.optimizers._discriminative import (
    DiscriminativeOptimizer,
    discriminative_optimizer,
)
from keras_trainkit.optimizers._lars import LARS
from keras_trainkit.optimizers._lookahead import Lookahead
from keras_trainkit.optimizers._novograd import NovoGrad
from keras_trainkit.optimizers._radam import RAdam
from keras_trainkit.optimizers._rmsprop import RMSprop
from keras_trainkit.optimizers._sgd import SGD
from keras_trainkit.optimizers._yogi import Yogi

__all__ = [
    "LARS",
    "SGD",
    "AdaBelief",
    "Adagrad",
    "Adam",
    "Adan",
    "DiscriminativeOptimizer",
    "Lookahead",
    "NovoGrad",
    "RAdam",
    "RMSprop",
    "Yogi",
    "discriminative_optimizer",
]
