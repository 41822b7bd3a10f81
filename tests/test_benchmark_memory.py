"""The training benchmark's CPU tensor-memory measure (the memory target's measure) counts what it should."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

MiB = 2**20


def _train_step_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    spec = importlib.util.spec_from_file_location("train_step_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensor_peak_counts_frees_of_the_first_calls_blocks_and_temporaries():
    measure = _train_step_benchmark().tensor_peak_above_start_mib
    kept: list[torch.Tensor] = []

    def step() -> None:
        kept.clear()  # frees the previous step's block (4 MiB)
        temporary = torch.ones(16 * MiB // 4)
        temporary.add_(1)
        del temporary
        kept.append(torch.ones(4 * MiB // 4))

    peak = measure(step, [step, step])
    assert abs(peak - 12.0) < 0.05, peak  # -4 + 16 at the worst point of each measured step


def test_tensor_peak_is_near_zero_for_an_in_place_step():
    measure = _train_step_benchmark().tensor_peak_above_start_mib
    x = torch.ones(1000)
    assert measure(lambda: x.mul_(1.0), [lambda: x.mul_(1.0)]) < 0.001  # a wrapped scalar: bytes
