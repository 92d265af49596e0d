"""Every public module defines `__all__`, and everything it exports is documented.

Walks the public modules (no leading underscore in their dotted path). Each
name in `__all__` that is a class or a function needs a docstring of its own
(a class may not rely on its base's); each public method or property a
keras_trainkit class defines needs one too (its own, or the one of the method it
overrides).
"""

import importlib
import inspect
import pkgutil

import pytest

import keras_trainkit

OPTIONAL = {"keras_trainkit.tuning.ray_tune": "ray"}


def public_modules():
    names = ["keras_trainkit"]
    for info in pkgutil.walk_packages(keras_trainkit.__path__, "keras_trainkit."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _load(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    return importlib.import_module(name)


@pytest.mark.parametrize("name", public_modules())
def test_public_module_documents_all_it_exports(name):
    module = _load(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} defines no __all__"
    missing = []
    for attr in exported:
        obj = getattr(module, attr)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{name}.{attr}")
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                if member.startswith("_"):
                    continue
                function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                if inspect.isfunction(function) and not inspect.getdoc(getattr(obj, member)):
                    missing.append(f"{name}.{attr}.{member}")
    assert missing == []


@pytest.mark.parametrize("name,new", [("ScheduledBatches", "keras_trainkit.data"),
                                      ("DiscriminativeOptimizer", "keras_trainkit.optimizers"),
                                      ("discriminative_optimizer", "keras_trainkit.optimizers")])
def test_moved_names_still_import_from_callbacks_with_a_deprecation_warning(name, new):
    from keras_trainkit import callbacks

    with pytest.warns(DeprecationWarning, match=f"moved to {new}.{name}"):
        old = getattr(callbacks, name)
    assert old is getattr(importlib.import_module(new), name)
    assert name not in callbacks.__all__
    with pytest.raises(AttributeError):
        callbacks.NoSuchThing  # noqa: B018
