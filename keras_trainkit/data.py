"""Small offline datasets for examples, tests and benchmarks.

Everything here ships inside scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

__all__ = ["load_digits"]


def load_digits(validation_split: float = 0.25, seed: int = 0, images: bool = False):
    """scikit-learn's 8x8 handwritten digits (1797 samples, 10 classes).

    Pixels are scaled to [0, 1] and the split is stratified and reproducible.

    Args:
        validation_split: Fraction held out, in (0, 1). Defaults to `0.25`.
        seed: Seed of the split. Defaults to `0`.
        images: Return `(n, 8, 8, 1)` images instead of `(n, 64)` vectors.
            Defaults to `False`.

    Returns:
        `((x_train, y_train), (x_val, y_val))` with float32 inputs and int32
        labels.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    if not 0.0 < validation_split < 1.0:
        raise ValueError(
            "Argument `validation_split` must be in (0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    x, y = _load(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if images:
        x = x.reshape(-1, 8, 8, 1)
    y = y.astype("int32")
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=validation_split, random_state=seed, stratify=y
    )
    return (x_tr, y_tr), (x_va, y_va)
