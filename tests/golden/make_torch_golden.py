"""Writes the PyTorch reference trajectories that tests/test_one_cycle_schedule.py checks.

Run from the repository root (torch is needed here only, not by the library)::

    pip install torch
    python tests/golden/make_torch_golden.py

Each case builds a torch optimizer on one dummy parameter and a
`torch.optim.lr_scheduler.OneCycleLR`, then records, for every scheduler step
``k = 0 .. total_steps - 1``, the learning rate and the momentum (SGD's
``momentum`` or Adam's ``betas[0]``) that the k-th optimizer update uses, as
torch sets them in the optimizer's param group. It also records the values torch
computes at ``k = total_steps`` (one step past the cycle, where torch
extrapolates the last phase; it raises beyond that), or ``NaN`` where torch
itself fails there. Each case records the keras_trainkit arguments that must
reproduce it.

Output: tests/golden/torch_one_cycle.npz (compressed, a few kB).
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings

import numpy as np
import torch

OUT = pathlib.Path(__file__).with_name("torch_one_cycle.npz")

# name -> (torch optimizer, OneCycleLR kwargs). The keras_trainkit arguments are
# the same, with `max_lr` spelled `max_learning_rate`.
CASES = {
    "cos_sgd_defaults": ("sgd", dict(max_lr=0.1, total_steps=100)),
    "cos_adam_defaults": ("adam", dict(max_lr=3e-3, total_steps=100)),
    "linear_sgd": ("sgd", dict(max_lr=0.5, total_steps=60, anneal_strategy="linear", pct_start=0.25,
                               div_factor=10.0, final_div_factor=100.0)),
    "linear_adam_momenta": ("adam", dict(max_lr=1e-2, total_steps=45, anneal_strategy="linear",
                                         base_momentum=0.8, max_momentum=0.9)),
    "three_phase_cos_sgd": ("sgd", dict(max_lr=1.0, total_steps=120, three_phase=True)),
    "three_phase_linear_adam": ("adam", dict(max_lr=2e-3, epochs=4, steps_per_epoch=25, three_phase=True,
                                             anneal_strategy="linear", pct_start=0.4)),
    "three_phase_half": ("sgd", dict(max_lr=0.2, total_steps=40, three_phase=True, pct_start=0.5)),
    "uneven_phase_ends": ("sgd", dict(max_lr=0.3, total_steps=37, pct_start=0.35, div_factor=5.0,
                                      final_div_factor=50.0)),
    "tiny_cycle": ("adam", dict(max_lr=0.05, total_steps=7)),
    "no_warmup": ("sgd", dict(max_lr=0.1, total_steps=20, pct_start=0.0)),
    "all_warmup": ("sgd", dict(max_lr=0.1, total_steps=20, pct_start=1.0)),
    "epochs_steps": ("sgd", dict(max_lr=0.05, epochs=3, steps_per_epoch=11, pct_start=0.2,
                                 base_momentum=0.5, max_momentum=0.99)),
}


def run(kind, kwargs):
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    if kind == "sgd":
        opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
        momentum = lambda g: g["momentum"]  # noqa: E731
    else:
        opt = torch.optim.Adam([param], lr=0.1, betas=(0.9, 0.999))
        momentum = lambda g: g["betas"][0]  # noqa: E731
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, **kwargs)
    total = sched.total_steps
    lrs, moms = [], []
    for _ in range(total):
        group = opt.param_groups[0]
        lrs.append(float(group["lr"]))
        moms.append(float(momentum(group)))
        param.grad = torch.zeros_like(param)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sched.step()  # the k = total_steps step computes torch's extrapolation
            except ZeroDivisionError:
                return total, lrs, moms, math.nan, math.nan
    group = opt.param_groups[0]
    return total, lrs, moms, float(group["lr"]), float(momentum(group))


def main():
    arrays, meta_cases = {}, {}
    for name, (kind, kwargs) in CASES.items():
        total, lrs, moms, lr_end, mom_end = run(kind, kwargs)
        arrays[f"{name}__lr"] = np.asarray(lrs, "float64")
        arrays[f"{name}__momentum"] = np.asarray(moms, "float64")
        arrays[f"{name}__at_total"] = np.asarray([lr_end, mom_end], "float64")
        ours = {("max_learning_rate" if k == "max_lr" else k): v for k, v in kwargs.items()}
        momentum_kwargs = {k: ours.pop(k) for k in ("base_momentum", "max_momentum") if k in ours}
        meta_cases[name] = {"optimizer": kind, "total_steps": total, "kwargs": ours,
                            "momentum_kwargs": momentum_kwargs}
    meta = {"torch": torch.__version__, "cases": meta_cases}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(meta_cases)} cases)")


if __name__ == "__main__":
    main()
