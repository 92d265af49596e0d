"""Eager argument checks shared by every constructor.

Each check raises ``ValueError`` naming the argument and echoing the received
value, in Keras' style: ``Argument `decay_steps` must be > 0. Received:
decay_steps=0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any


def _fail(name: str, requirement: str, value: Any) -> ValueError:
    return ValueError(f"Argument `{name}` must be {requirement}. Received: {name}={value!r}")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Checks that `value` is a finite real number in the given interval."""
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    interval = f"{'[' if low_inclusive and low is not None else '('}{lo}, {hi}{']' if high_inclusive and high is not None else ')'}"
    requirement = f"a finite number in {interval}"
    if not _is_real(value) or not math.isfinite(float(value)):
        raise _fail(name, requirement, value)
    v = float(value)
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise _fail(name, requirement, value)
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise _fail(name, requirement, value)
    return v


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    return real(name, value, low=0.0, low_inclusive=False)


def non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    return real(name, value, low=0.0)


def integer(name: str, value: Any, *, low: int | None = None) -> int:
    """An integer (``bool`` excluded) >= `low`."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and int(value) < low):
        requirement = "an integer" if low is None else f"an integer >= {low}"
        raise _fail(name, requirement, value)
    return int(value)


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise _fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "a bool", value)
    return value


def increasing_integers(name: str, values: Any, *, low: int = 0) -> list[int]:
    """A non-empty, strictly increasing sequence of integers >= `low`."""
    requirement = f"a non-empty, strictly increasing sequence of integers >= {low}"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise _fail(name, requirement, values)
    out = []
    for v in values:
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
            raise _fail(name, requirement, values)
        out.append(int(v))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise _fail(name, requirement, values)
    return out
