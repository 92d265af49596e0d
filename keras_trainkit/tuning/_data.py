"""What `fit()` will run: batching of the training data and the trial's number of updates."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Data:
    """The training data of one `fit()` call, as `make_hypermodel` sees it.

    Attributes:
        kind: "arrays", "dataset" (tf.data), "pydataset", "loader" (torch
            DataLoader) or "generator".
        batched: Whether the data fixes the batch size itself (a batched
            tf.data.Dataset, a PyDataset, a generator, a DataLoader).
        samples: Training samples, for arrays and unbatched datasets, after
            `validation_split`; `None` when unknown or infinite.
        batches: Batches in one pass over batched data; `None` when unknown.
        infinite: The data never ends (e.g. `dataset.repeat()`).
    """

    kind: str
    batched: bool
    samples: int | None = None
    batches: int | None = None
    infinite: bool = False

    def batches_per_pass(self, batch_size: int | None) -> int | None:
        if self.batched:
            return self.batches
        if self.samples is None:
            return None
        return math.ceil(self.samples / (batch_size or 32))


def _tf():
    return sys.modules.get("tensorflow")


def is_tf_dataset(x: Any) -> bool:
    tf = _tf()
    return tf is not None and isinstance(x, tf.data.Dataset)


def _first_leaf(x: Any) -> Any:
    while isinstance(x, (list, tuple, Mapping)) and len(x):
        x = next(iter(x.values())) if isinstance(x, Mapping) else x[0]
    return x


def inspect_data(x: Any, input_rank: int, validation_split: float | None = None) -> Data:
    """Classifies the training data `x` given to `fit()`.

    Args:
        x: The training inputs (or dataset) exactly as passed to `fit()`.
        input_rank: Rank of one input sample (`len(input_shape)`), used to
            tell a batched tf.data.Dataset from an unbatched one.
        validation_split: `fit()`'s `validation_split` (arrays only).

    Raises:
        ValueError: naming `x` when its structure cannot be understood, or
            `validation_split` with data that is not arrays.
    """
    if is_tf_dataset(x):
        data = _inspect_tf_dataset(x, input_rank)
    elif _is_pydataset(x):
        batches = _pydataset_batches(x)
        data = Data("pydataset", True, batches=batches, infinite=False)
    elif type(x).__module__.startswith("torch.utils.data") and hasattr(x, "__len__"):
        data = Data("loader", True, batches=len(x))
    elif isinstance(x, (types.GeneratorType, Iterator)):
        data = Data("generator", True, batches=None)
    else:
        leaf = _first_leaf(x)
        shape = getattr(leaf, "shape", None)
        if shape is None:
            shape = np.shape(leaf) if leaf is not None else ()
        if not shape or shape[0] is None:
            raise ValueError(
                "Argument `x` must be arrays (NumPy, tensors, a dict or list of them), a "
                "tf.data.Dataset, a keras.utils.PyDataset or a generator. "
                f"Received: x of type {type(x).__name__}")
        samples = int(shape[0])
        if validation_split:
            # keras.trainers.data_adapters.array_slicing.train_validation_split
            samples = int(math.floor(samples * (1.0 - validation_split)))
        return Data("arrays", False, samples=samples)
    if validation_split:
        raise ValueError(
            "Argument `validation_split` works with arrays only (as in Keras' fit()); "
            f"x is a {data.kind}. Pass validation_data instead. "
            f"Received: validation_split={validation_split!r}")
    return data


def _inspect_tf_dataset(ds: Any, input_rank: int) -> Data:
    tf = _tf()
    spec = ds.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    leaf = tf.nest.flatten(x_spec)[0]
    rank = leaf.shape.rank
    if rank == input_rank:
        batched = False
    elif rank == input_rank + 1:
        batched = True
    else:
        raise ValueError(
            f"Argument `x` is a tf.data.Dataset whose inputs have shape {leaf.shape}: "
            f"expected one sample of rank {input_rank} (an unbatched dataset) or a batch of "
            f"rank {input_rank + 1} (a batched one), from make_hypermodel's input_shape.")
    cardinality = int(ds.cardinality())
    infinite = cardinality == int(tf.data.INFINITE_CARDINALITY)
    known = None if cardinality < 0 else cardinality
    if batched:
        return Data("dataset", True, batches=known, infinite=infinite)
    return Data("dataset", False, samples=known, infinite=infinite)


def _is_pydataset(x: Any) -> bool:
    import keras

    return isinstance(x, keras.utils.PyDataset)


def _pydataset_batches(x: Any) -> int | None:
    try:
        return x.num_batches
    except NotImplementedError:
        return None


def batches_run(per_pass: int | None, steps_per_epoch: int | None, epochs: int) -> int | None:
    """Batches `fit()` runs in `epochs` epochs, as Keras 3's epoch iterator does.

    Without `steps_per_epoch` every epoch is one pass. With it, one iterator
    runs on across epochs: an epoch takes `min(steps_per_epoch, left)` batches
    and the iterator restarts when the pass is used up (so `steps_per_epoch=3`
    over 4 batches runs 3, 1, 3, 1, ...).
    """
    if steps_per_epoch is None:
        return None if per_pass is None else per_pass * epochs
    if per_pass is None:
        return steps_per_epoch * epochs
    total, left = 0, per_pass
    for _ in range(epochs):
        take = min(steps_per_epoch, left)
        total += take
        left -= take
        if left == 0:
            left = per_pass
    return total


def count_updates(data: Data, batch_size: int | None, epochs: int, initial_epoch: int,
                  steps_per_epoch: int | None, accumulation: int = 1) -> tuple[int | None, str]:
    """Optimizer updates of one `fit()` call, or `(None, why)` when unknown.

    Updates are counted as `optimizer.iterations` counts them: one per batch,
    or one per `gradient_accumulation_steps` batches.
    """
    n_epochs = epochs - initial_epoch
    if steps_per_epoch is None:
        if data.infinite:
            return None, f"the training data ({data.kind}) is infinite (e.g. repeat())"
        if data.batches_per_pass(batch_size) is None:
            return None, f"the training data's length ({data.kind}) is unknown (e.g. after filter())"
    batches = batches_run(data.batches_per_pass(batch_size), steps_per_epoch, n_epochs)
    return batches // max(1, accumulation), ""
