"""How keras_trainkit's callbacks attach to `fit()`: one transaction per fit.

Several of our callbacks change what the compiled train step does (the
learning-rate callbacks, `BatchSizeScheduler`'s rate factor,
`GradientNormLogger`) or the model (`GradualUnfreezing`). They do it through
one `Session` per `fit()`, shared by all of them:

1. **Plan and validate** (the first participant's `on_train_begin`): the
   session finds `fit()`'s `CallbackList` (hence every participant, in any
   order), and each participant validates its part (`_check`). Nothing is
   changed yet: a rejected configuration leaves the model exactly as it was.
2. **Attach** (at the first `on_epoch_begin`, once every callback's
   `on_train_begin` has run and before any step): each change is made
   through the session, which records its undo at the moment it is made
   (`on_undo`). If attaching fails half-way, what was done is undone.
3. **Guard.** `fit()` ends by an exception without calling `on_train_end`.
   So the session wraps, for this fit only, the places the exception comes
   through: the `CallbackList`'s dispatch methods (a fit-scoped object, gone
   with the fit), `model.train_function` (the compiled step, data errors and
   Ctrl-C during a step) and `model.evaluate` (validation), and, in the main
   thread, the SIGINT handler. Any exception there undoes everything
   (`abort`) before it propagates. What could still escape (an exception in
   Keras' own loop code between two of these) is undone the moment anything
   touches what we left: a later `fit()` (its first step or its callbacks), a
   read or write of `optimizer.learning_rate`, or `model.evaluate`.
4. **Close** (after the last `on_train_end`): everything is undone except the
   changes meant to last (the optimizer's learning-rate variable as rescaled
   by `ReduceLROnPlateau`, the layers `GradualUnfreezing` unfroze).

State that changes the training trajectory is never kept here: it lives in
Keras variables that checkpoints carry (see `_lr_control`).
"""

from __future__ import annotations

import signal
import threading
import weakref
from collections.abc import Callable
from typing import Any

import keras

from keras_trainkit import _keras_hooks as hooks

# The session attached to each model, if any (a crashed fit leaves one here
# until it is healed).
_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()

# On the model (as Keras keeps its own `train_function`): the compiled step of
# its last fit with our callbacks, with what it was built from (TensorFlow,
# JAX): `(key, Keras' own train function, compiled step)`. Not in a weak
# mapping: the compiled step refers to its model, which would then live forever.
_COMPILED = "_keras_trainkit_compiled_step"

_PLANNED = "_keras_trainkit_session"  # on the fit's CallbackList

_DISPATCH = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
             "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
             "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")


def _forget_compiled(model: Any) -> None:
    """Drops the compiled step kept on `model` (it is compiled anew)."""
    if _COMPILED in model.__dict__:
        hooks.del_instance_attribute(model, _COMPILED)


class Participant(keras.callbacks.Callback):
    """Base of keras_trainkit's callbacks that attach to `fit()` through a `Session`.

    Subclasses call `Session.begin(self)` first thing in `on_train_begin` and
    implement `_check(session)` (validate, change nothing) and, where they
    change something, `_attach(session)` (make each change through the
    session). `_runtime_attributes` are reset and `_shared_attributes` shared
    (not copied) by `copy.deepcopy`.
    """

    _runtime_attributes: tuple[str, ...] = ()
    _shared_attributes: tuple[str, ...] = ()

    def _check(self, session: Session) -> None:
        """Validates this callback's part of the fit; must not change anything."""

    def _attach(self, session: Session) -> None:
        """Makes this callback's changes, each through `session`."""

    def _trace_key(self, session: Session) -> Any:
        """What this callback puts in the compiled step, as a hashable key equal
        only for fits whose steps it makes alike (it then keeps the state the
        step holds), or `None`: the step is compiled anew (the default)."""
        return None

    def _reuse_compiled(self, session: Session) -> None:
        """Called (after `_attach`) when the fit runs the step compiled for the
        model's previous fit: what else this callback kept from it can serve."""

    def set_model(self, model):
        super().set_model(model)
        # Before any on_train_begin: BackupAndRestore has not restored yet.
        from keras_trainkit.callbacks import _lr_control

        _lr_control.remember_reference_rates(model)

    def __deepcopy__(self, memo):
        return hooks.copy_callback(self, memo, self._runtime_attributes, self._shared_attributes)


class Session:
    """One `fit()` of one model with keras_trainkit participants (see the module doc)."""

    def __init__(self, model: Any, callback_list: Any, participants: list[Participant]):
        self.model = model
        self.callback_list = callback_list
        self.participants = participants
        self.frame = hooks.fit_frame(model) if callback_list is not None else None
        self.history = getattr(model, "history", None)  # each fit() sets a new History
        self.state = "planned"  # -> "attached" -> "closed"
        self.controllers: list[Any] = []  # the learning-rate controllers (_lr_control)
        self.lr_plan: Any = None
        self._undo: list[tuple[Callable[[], None], bool]] = []  # (undo, also on success)
        self._per_call: dict[tuple[int, str], list[Any]] = {}
        self._active_calls = 0
        self.train_calls = 0  # calls of the fit's train function (a host-side bound on updates)
        self.in_train_step = False  # while the fit's train function runs (or is traced)
        self.rebuild_train_function_on_close = False

    # -- life cycle ------------------------------------------------------------------
    @classmethod
    def begin(cls, callback: Participant) -> Session:
        """The session of the running fit (made and validated by the first participant)."""
        model = callback.model
        callback_list = hooks.dispatching_callback_list(callback)
        planned = callback_list.__dict__.get(_PLANNED) if callback_list is not None else None
        if planned is not None and planned.model is model and planned.state != "closed":
            return planned
        current = _SESSIONS.get(model)
        if current is not None:
            current.abort()  # left by a fit that ended by an exception
        if callback_list is None:
            participants = [callback]
        else:
            participants = [c for c in callback_list.callbacks if isinstance(c, Participant)]
        session = cls(model, callback_list, participants)
        from keras_trainkit.callbacks import _lr_control

        for participant in participants:
            participant._check(session)
        session.lr_plan = _lr_control.plan(session)  # validates the LR participants together
        if callback_list is None:
            session._close_after(callback)
            session.attach()
        else:
            # Found by the fit's other participants; registered on the model
            # only once attached (the CallbackList goes with the fit).
            hooks.set_instance_attribute(callback_list, _PLANNED, session)
            session._guard_callback_list()
        return session

    def _close_after(self, callback: Participant) -> None:
        """Hooks driven directly (no CallbackList): the callback's own
        `on_train_end` ends the session."""
        session, method = self, callback.on_train_end

        def on_train_end(logs=None):
            del callback.on_train_end
            try:
                method(logs)
            except BaseException:
                session.abort()
                raise
            session.close()

        callback.on_train_end = on_train_end

    @staticmethod
    def of(model: Any) -> Session | None:
        """The session attached to `model`, if any."""
        return _SESSIONS.get(model)

    @property
    def callbacks(self) -> list[Any]:
        """Every callback of the fit (ours and the others), or the participants."""
        return list(self.callback_list.callbacks) if self.callback_list is not None else list(self.participants)

    def attach(self) -> None:
        """Makes every participant's changes, all or nothing."""
        if self.state != "planned":
            return
        self.state = "attached"
        _SESSIONS[self.model] = self
        try:
            for participant in self.participants:
                participant._attach(self)
            from keras_trainkit.callbacks import _lr_control

            _lr_control.install(self)
            self._install_train_function()
            self._guard_evaluate()
            self._guard_sigint()
        except BaseException:
            self.abort()
            raise

    def on_undo(self, undo: Callable[[], None], on_success: bool = True) -> None:
        """Registers the undo of a change just made. `on_success=False`: undone
        only when the fit fails (the change is meant to outlast a fit that
        ends normally)."""
        self._undo.append((undo, on_success))

    def close(self) -> None:
        """The fit ended normally: undo what is not meant to last."""
        self._finish(failed=False)

    def abort(self) -> None:
        """The fit failed (or was left by a failed fit): undo everything."""
        self._finish(failed=True)

    def _finish(self, failed: bool) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.frame = None  # frees the fit's frame
        if _SESSIONS.get(self.model) is self:
            del _SESSIONS[self.model]
        errors = []
        for undo, on_success in reversed(self._undo):
            if failed or on_success:
                try:
                    undo()
                except Exception as e:  # keep undoing; report the first at the end
                    errors.append(e)
        self._undo.clear()
        if errors and not failed:
            raise errors[0]

    def alive(self) -> bool:
        """Whether the fit of this session is still running (else it failed and
        left this session behind)."""
        if self.state != "attached" or getattr(self.model, "history", None) is not self.history:
            return False
        if self._active_calls or self.frame is None:
            return True
        return self.frame.running()

    def heal(self) -> bool:
        """Undoes this session if its fit is no longer running; True if it was healed."""
        if self.state == "attached" and not self.alive():
            self.abort()
            return True
        return False

    # -- per-call patches (in effect only while a step runs or is traced) -----------
    def patch_per_call(self, obj: Any, name: str, wrap: Callable[[Any], Any], each_call: bool = False) -> None:
        """Replaces `obj.<name>` by `wrap(previous)` while each train step runs.

        The compiled step is traced inside that window, so it sees the patch,
        while the object is untouched between steps: nothing to undo if
        `fit()` fails elsewhere. With `each_call=True`, `wrap(previous)` is
        called anew at every step (an eager backend's per-step value).
        """
        key = (id(obj), name)
        if key not in self._per_call:
            had_own = name in obj.__dict__
            self._per_call[key] = [obj, name, had_own, obj.__dict__.get(name), getattr(obj, name), None]
        entry = self._per_call[key]
        if each_call:
            previous = entry[4]
            entry[4], entry[5] = previous, (lambda: wrap(previous))
        else:
            entry[4] = wrap(entry[4])

    def _apply_per_call(self) -> None:
        for obj, name, _, _, replacement, each_call in self._per_call.values():
            hooks.set_instance_attribute(obj, name, replacement if each_call is None else each_call())

    def _remove_per_call(self) -> None:
        for obj, name, had_own, previous, _, _ in self._per_call.values():
            if had_own:
                hooks.set_instance_attribute(obj, name, previous)
            elif name in obj.__dict__:
                hooks.del_instance_attribute(obj, name)

    # -- guards ------------------------------------------------------------------------
    def _install_train_function(self) -> None:
        model = self.model
        previous = hooks.train_function(model)
        fit_history = self.history
        session = self

        def restore():
            hooks.set_train_function(model, None if session.rebuild_train_function_on_close else previous)

        self.on_undo(restore)
        key = self._trace_key()
        cached = model.__dict__.get(_COMPILED)

        def restore_kept():  # a failed fit leaves the model's kept step as it found it
            _forget_compiled(model)
            if cached is not None:
                hooks.set_instance_attribute(model, _COMPILED, cached)

        self.on_undo(restore_kept, on_success=False)
        if key is not None and cached is not None and cached[0] == key and cached[1] is previous:
            # The previous fit's step, traced with callbacks, state and Keras
            # function alike: fit() compiles nothing, as with Keras alone.
            self._compiled = cached[2]
            for participant in self.participants:
                participant._reuse_compiled(self)
        else:
            _forget_compiled(model)
            self._compiled = self._rebuild()
            if key is not None:
                hooks.set_instance_attribute(model, _COMPILED, (key, previous, self._compiled))

        def train_function(*args, **kwargs):
            if session.state != "attached" or getattr(model, "history", None) is not fit_history:
                # Called by a later fit(): the fit that installed this function
                # ended by an exception. Undo it, then run the model's own.
                session.abort()
                own = hooks.train_function(model)
                if own is None:
                    own = model.make_train_function()
                return own(*args, **kwargs)
            session._active_calls += 1
            session.train_calls += 1
            session.in_train_step = True
            if session._per_call:
                session._apply_per_call()
            try:
                return session._compiled(*args, **kwargs)
            except BaseException:
                session.abort()
                raise
            finally:
                session._active_calls -= 1
                session.in_train_step = False
                if session._per_call:
                    session._remove_per_call()

        self._guarded_train_function = train_function
        hooks.set_train_function(model, train_function)

    def _trace_key(self) -> Any:
        """What the compiled step is built from, or `None` when the step must
        be compiled anew: the model's variables and optimizer, each
        participant's key (`Participant._trace_key`) and each learning-rate
        controller's (`RateController.trace_key`). TensorFlow and JAX only
        (torch runs the step eagerly: nothing to reuse)."""
        if keras.backend.backend() not in ("tensorflow", "jax"):
            return None
        if any(entry[5] is not None for entry in self._per_call.values()):
            return None  # a value set anew at every step
        parts = [participant._trace_key(self) for participant in self.participants]
        parts += [controller.trace_key() for controller in self.controllers]
        if any(part is None for part in parts):
            return None
        model = self.model
        return (keras.backend.backend(), id(model.optimizer), tuple(id(v) for v in model.trainable_variables),
                tuple(id(v) for v in model.non_trainable_variables), tuple(parts))

    def retrace(self) -> None:
        """Rebuilds the compiled step (e.g. after a change of `trainable`), keeping
        the guard; without an attached session, `make_train_function(force=True)`."""
        _forget_compiled(self.model)
        if self.state != "attached":
            hooks.rebuild_train_function(self.model)
            return
        self._compiled = self._rebuild()
        hooks.set_train_function(self.model, self._guarded_train_function)

    def _rebuild(self) -> Any:
        # Keras' TF and JAX trainers capture `model.train_step` when the
        # function is made (the optimizer's `apply` when it is traced). On JAX
        # every rebuild traces a function of its own: JAX would otherwise
        # reuse a step traced in another fit or before a change (the step
        # holds our rates and factors as traced).
        self._apply_per_call()
        try:
            return hooks.rebuild_train_function(self.model)
        finally:
            self._remove_per_call()

    def _guard_evaluate(self) -> None:
        model = self.model
        had_own = "evaluate" in model.__dict__
        original = model.evaluate
        session = self

        def evaluate(*args, **kwargs):
            if session.heal():
                return model.evaluate(*args, **kwargs)
            session._active_calls += 1
            try:
                return original(*args, **kwargs)
            except BaseException:
                session.abort()
                raise
            finally:
                session._active_calls -= 1

        hooks.set_instance_attribute(model, "evaluate", evaluate)

        def restore():
            if had_own:
                hooks.set_instance_attribute(model, "evaluate", original)
            elif "evaluate" in model.__dict__:
                hooks.del_instance_attribute(model, "evaluate")

        self.on_undo(restore)

    def _guard_callback_list(self) -> None:
        """Wraps the fit's CallbackList (a fit-scoped object: nothing to undo)."""
        callback_list, session = self.callback_list, self
        for name in _DISPATCH:
            original = getattr(callback_list, name, None)
            if original is None:
                continue

            def dispatch(*args, _original=original, _name=name, **kwargs):
                if session.state == "closed":
                    return _original(*args, **kwargs)
                session._active_calls += 1
                try:
                    if _name == "on_epoch_begin":
                        session.attach()
                    return _original(*args, **kwargs)
                except BaseException:
                    session.abort()
                    raise
                finally:
                    session._active_calls -= 1

            hooks.set_instance_attribute(callback_list, name, dispatch)
        original_end = callback_list.on_train_end

        def on_train_end(logs=None):
            session._active_calls += 1
            try:
                _result = original_end(logs)
            except BaseException:
                session.abort()
                raise
            finally:
                session._active_calls -= 1
            session.close()
            return _result

        hooks.set_instance_attribute(callback_list, "on_train_end", on_train_end)

    def _guard_sigint(self) -> None:
        """Ctrl-C anywhere in the fit undoes everything, then interrupts as before."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):  # SIG_IGN / SIG_DFL / None: leave them alone
            return
        session = self

        def handler(signum, frame):
            session.abort()
            previous(signum, frame)

        signal.signal(signal.SIGINT, handler)

        def restore():
            if signal.getsignal(signal.SIGINT) is handler:
                signal.signal(signal.SIGINT, previous)

        self.on_undo(restore)


def current_session(model: Any) -> Session | None:
    """The attached session of `model`, healed first if its fit has failed."""
    session = _SESSIONS.get(model)
    if session is not None and session.heal():
        return None
    return session
