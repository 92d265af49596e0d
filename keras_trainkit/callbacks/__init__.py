"""Callbacks for `model.fit(callbacks=[...])`."""

__all__: list[str] = []
