"""The two-layer regression problem (x, y and starting weights of a 5-4-1 MLP)
that the backend and distribution tests share with their worker processes
through an `.npz` file."""

from __future__ import annotations

import numpy as np


def make_inputs(path, seed):
    """Draws x (64x5), y and the four weight arrays from `seed`, saves them to
    `path` (`x`, `y`, `w0`..`w3`) and returns `(x, y, weights)`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    weights = [rng.normal(scale=0.5, size=s).astype("float32") for s in [(5, 4), (4,), (4, 1), (1,)]]
    np.savez(path, x=x, y=y, **{f"w{i}": w for i, w in enumerate(weights)})
    return x, y, weights
