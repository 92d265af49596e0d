"""Live progress of a search: Keras Tuner's display plus "of N" and the time left.

Keras Tuner's oracle prints, per trial, "Search: Running Trial #i", the
hyperparameter table (value and best value so far), and at the end the
trial's time and score, the best score so far and the elapsed time; Keras'
own progress bar shows the epochs. `TrainkitDisplay` keeps all of that and
adds the number of trials (`#i of N`) and an estimate of the time left. It
lives in the oracle, so in Keras Tuner's distributed mode the chief prints it
for every worker; each event is printed with one `print()` call, so lines
from concurrent trials never interleave inside a line.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from keras_trainkit.tuning import _kt_hooks

__all__ = ["TrainkitDisplay", "install_display"]


class TrainkitDisplay(_kt_hooks.Display):
    """Keras Tuner's `Display` with "trial i of N" and an estimate of the time left."""

    def __init__(self, oracle, verbose=1):
        super().__init__(oracle, verbose=verbose)
        self._durations: list[float] = []  # seconds of the trials ended in this process

    def _of_n(self) -> str:
        total = getattr(self.oracle, "max_trials", None)
        return f" of {total}" if total else ""

    def on_trial_begin(self, trial):
        if self.verbose < 1:
            return
        start = datetime.now()
        self.trial_start[trial.trial_id] = start
        if self.search_start is None:
            self.search_start = start
        number = len(self.oracle.trials)
        self.trial_number[trial.trial_id] = number
        lines = ["", f"Search: Running Trial #{number}{self._of_n()}", ""]
        lines += self._table(trial)
        lines.append("")
        print("\n".join(lines), flush=True)

    def _table(self, trial) -> list[str]:
        values = trial.hyperparameters.values
        if not values:
            return ["default configuration"]
        template = f"{{0:{self.col_width}}}|{{1:{self.col_width}}}|{{2}}"
        best = self.oracle.get_best_trials()
        best_values = best[0].hyperparameters.values if best else None
        lines = [template.format("Value", "Best Value So Far", "Hyperparameter")]
        for name, value in values.items():
            best_value = best_values.get(name) if best_values is not None else "?"
            lines.append(template.format(self.format_value(value), self.format_value(best_value), name))
        return lines

    def on_trial_end(self, trial):
        if self.verbose < 1:
            return
        _clear_notebook_output()
        now = datetime.now()
        start = self.trial_start.get(trial.trial_id)
        number = self.trial_number.get(trial.trial_id, "?")
        lines = []
        if start is not None:
            taken = now - start
            self._durations.append(taken.total_seconds())
            took = f" [{self.format_duration(taken)}]"
        else:
            took = ""
        if trial.status in ("FAILED", "INVALID"):
            reason = (trial.message or "").strip().splitlines()
            lines.append(f"Trial {number}{self._of_n()} failed{took}: {reason[-1] if reason else ''}")
        else:
            lines.append(f"Trial {number}{self._of_n()} Complete{took}")
        if trial.score is not None:
            lines.append(f"{self.oracle.objective.name}: {trial.score}")
        lines.append("")
        best = self.oracle.get_best_trials()
        best_score = best[0].score if best else None
        lines.append(f"Best {self.oracle.objective.name} So Far: {best_score}")
        if self.search_start is not None:
            lines.append(f"Total elapsed time: {self.format_duration(now - self.search_start)}")
        lines.append(f"Estimated time left: {self._time_left()}")
        print("\n".join(lines), flush=True)

    def _time_left(self) -> str:
        total = getattr(self.oracle, "max_trials", None)
        if not total:
            return "unknown (no max_trials)"
        if not self._durations:
            return "unknown"
        ended = len(getattr(self.oracle, "end_order", []))  # includes the trial just ended
        left = max(0, total - ended)
        if left == 0:
            return self.format_duration_seconds(0)
        workers = max(1, len(getattr(self.oracle, "tuner_ids", ()) or ()))
        per_trial = statistics.median(self._durations[-10:])
        return (f"{self.format_duration_seconds(left * per_trial / workers)} "
                f"(at most {left} more trial{'s' if left > 1 else ''}, ~{per_trial:.0f}s each"
                f"{f', {workers} at a time' if workers > 1 else ''})")

    def format_duration_seconds(self, seconds: float) -> str:
        from datetime import timedelta

        return self.format_duration(timedelta(seconds=seconds))


def _clear_notebook_output() -> None:
    """In a Jupyter kernel, clears the cell (the finished trial's epoch bars), as Keras Tuner.

    Keras Tuner 1.4.8 decides "notebook" whenever IPython is importable, and
    then writes an erase-line escape sequence into terminals and log files;
    this checks for a real kernel instead.
    """
    try:
        import IPython
    except ImportError:
        return
    shell = IPython.get_ipython()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        from IPython.display import clear_output

        clear_output(wait=True)


def install_display(oracle) -> None:
    """Replaces a local oracle's Keras Tuner display by `TrainkitDisplay` (keeps its state)."""
    old = _kt_hooks.oracle_display(oracle)
    if old is None or isinstance(old, TrainkitDisplay):
        return
    new = TrainkitDisplay(oracle, verbose=old.verbose)
    new.set_state(old.get_state())
    _kt_hooks.set_oracle_display(oracle, new)
