"""Shared test setup: offline Hub, deterministic threads, fixture paths."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

TESTS = Path(__file__).resolve().parent
NVLABS = TESTS / "fixtures" / "nvlabs"
COCO_SAMPLE = TESTS / "data" / "coco_stuff_sample"
EVAL_CASES = [
    "v1_normal_syncbatch_dontcare",
    "v2_more_instance_spadebatch_aspect2",
    "v3_vae_encoder_spadeinstance_64x256",
    "v4_most_nonspectral_syncbatch",
]
TRAIN_CASES = ["v5_train_step_syncbatch"]

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def nvlabs_dir() -> Path:
    return NVLABS


@pytest.fixture
def coco_sample() -> Path:
    return COCO_SAMPLE


@pytest.fixture
def one_thread():
    """One intra-op thread (the training tests use it): faster on 2 shared cores, and the same
    numerics as the training subprocesses they compare against."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def full_fp32():
    """float32 convs and matmuls at full precision on CUDA (TF32 would round both paths at 1e-3):
    for the tests comparing two float32 computations there."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
