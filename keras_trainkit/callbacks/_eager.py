"""Where torch's eager step reads the update count.

A torch step runs eagerly, so what the LR callbacks and GradientNormLogger do
in it is paid at every step, operation by operation. On the CPU, reading the
optimizer's update count into Python costs about a microsecond, so the slot
of a record or the row of a rate table is computed in Python. On an
accelerator that read would wait for the device, so the count stays a device
tensor and every index is computed on the device.
"""

from __future__ import annotations

from typing import Any

import keras

# None: read on the host where the count lives on the CPU. Tests set False to
# run the accelerator path on the CPU.
READ_COUNTS_ON_HOST: bool | None = None


def reads_on_host(count: Any) -> bool:
    """Whether a count held in the torch tensor `count` is read into Python."""
    if READ_COUNTS_ON_HOST is not None:
        return READ_COUNTS_ON_HOST
    return count.device.type == "cpu"


def tensor(value: Any) -> Any:
    """torch: a Keras variable's tensor (a tensor as is)."""
    return value.value if isinstance(value, keras.Variable) else value
