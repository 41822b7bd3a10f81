"""`spade eval` end to end with main([...]): a tiny COCO-Stuff model scored on the sample, the embedded
model on synthetic landscapes, the cache, and one-line user errors.

The Inception network here has random weights (saved to a file and passed with --inception) and the
segmenter is a small CNN fitted for a moment on the sample: the numbers are plumbing checks only, not
FID or mIoU anyone could compare with the paper.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_user_error, run
from conftest import COCO_SAMPLE

from spade_core.data import PreprocessConfig, build_dataset
from spade_core.eval import FIDInceptionV3, confusion_matrix, mean_iou
from spade_core.labels import get_label_set
from spade_core.models import SPADEGenerator
from spade_core.pipeline import SPADEPipeline

NUM = 6
SIZE = 64
SEGMENTER_MODULE = "spade_test_tiny_segmenter"
SEGMENTER_SOURCE = '''
"""A tiny COCO-Stuff segmenter for the `spade eval` tests: images [0, 1] (N, 3, H, W) -> logits (N, 182, H, W)."""
import torch
from torch import nn


class TinySegmenter(nn.Sequential):
    num_classes = 182

    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 182, 1))


def build(weights=None):
    model = TinySegmenter()
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny coco model, a random-weight Inception file and a segmenter fitted on the sample's photos."""
    root = tmp_path_factory.mktemp("eval_cli")
    torch.manual_seed(0)
    gen = SPADEGenerator.from_preset("coco", ngf=2, crop_size=SIZE, spade_hidden_nc=16, norm_G="spectralspadeinstance3x3")
    SPADEPipeline(generator=gen, label_set=get_label_set("coco")).save_pretrained(root / "model")
    torch.save(FIDInceptionV3().state_dict(), root / "inception.pth")  # random weights: plumbing only

    (root / "segmenter").mkdir()
    (root / "segmenter" / f"{SEGMENTER_MODULE}.py").write_text(textwrap.dedent(SEGMENTER_SOURCE), encoding="utf-8")
    sys.path.insert(0, str(root / "segmenter"))
    try:
        from spade_test_tiny_segmenter import build
    finally:
        sys.path.remove(str(root / "segmenter"))
        sys.modules.pop(SEGMENTER_MODULE, None)
    preprocess = PreprocessConfig("resize_and_crop", load_size=SIZE, crop_size=SIZE, is_train=False)
    data = build_dataset("coco", COCO_SAMPLE, "train", preprocess, max_dataset_size=NUM)
    images = torch.stack([data[i]["image"] for i in range(NUM)]) / 2 + 0.5  # (N, 3, H, W) in [0, 1]
    labels = torch.cat([data[i]["label"] for i in range(NUM)])  # (N, H, W), 182 = don't care
    segmenter = build()
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(segmenter(images), labels, ignore_index=182).backward()
        optimizer.step()
    segmenter.eval()
    torch.save(segmenter.state_dict(), root / "segmenter.pt")
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(segmenter, (images[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "segmenter.pt2")
    return {"root": root, "model": root / "model", "inception": root / "inception.pth"}


def test_eval_scores_a_coco_model_and_reuses_cached_real_statistics(setup, capsys, monkeypatch):
    root = setup["root"]
    monkeypatch.syspath_prepend(str(root / "segmenter"))
    monkeypatch.delitem(sys.modules, SEGMENTER_MODULE, raising=False)
    common = [
        "eval", "--model", setup["model"], "--data", COCO_SAMPLE, "--format", "coco", "--split", "train",
        "--num", NUM, "--batch-size", NUM, "--seed", 3, "--inception", setup["inception"], "--cache-dir", root / "cache",
    ]

    code, out, err = run(
        capsys, *common, "--segmenter", f"{SEGMENTER_MODULE}:build", "--segmenter-weights", root / "segmenter.pt",
        "--out", root / "first.json",
    )
    assert code == 0, err
    for row in ("FID", "KID", "mIoU", "pixel accuracy", f"samples: {NUM} in 1 batches", "wrote"):
        assert row in out
    first = json.loads((root / "first.json").read_text())
    assert set(first["metrics"]) >= {"fid", "kid", "kid_std", "miou", "pixel_accuracy"}
    assert first["metrics"]["fid"] >= 0 and 0 <= first["metrics"]["miou"] <= 1
    assert 0 <= first["metrics"]["pixel_accuracy"] <= 1
    assert first["num_samples"] == NUM and first["num_batches"] == 1
    assert first["details"]["num_real_features"] == first["details"]["num_generated_features"] == NUM
    assert first["details"]["num_segmented"] == NUM and first["details"]["num_classes"] == 182
    assert first["details"]["ignore_index"] == 182  # COCO-Stuff's unlabeled pixels (don't-care) are not scored
    assert first["cache"]["real_features"] == "computed"
    assert first["setup"]["image_size_hw"] == [SIZE, SIZE] and first["setup"]["num_samples"] == NUM
    assert first["setup"]["paper_protocol"]["segmenter"] == "DeepLabV2"

    # The same segmenter, saved whole with torch.export: real features come from the cache, and the
    # fixed --seed makes every number repeat.
    code, out, err = run(capsys, *common, "--segmenter-weights", root / "segmenter.pt2", "--out", root / "second.json")
    assert code == 0, err
    second = json.loads((root / "second.json").read_text())
    assert second["cache"]["real_features"] == "loaded" and second["cache"]["real_features_from_cache"] == NUM
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)
    assert second["metrics"]["kid"] == pytest.approx(first["metrics"]["kid"], rel=1e-6, abs=1e-9)
    assert second["metrics"]["miou"] == pytest.approx(first["metrics"]["miou"], abs=1e-3)
    assert not list((root / "cache").glob("progress_*.npz"))  # a finished run leaves no partial state


def test_eval_embedded_model_on_synthetic_landscapes_reports_miou_offline(capsys, tmp_path, monkeypatch):
    """Out of the box: the shipped landscape segmenter scores the embedded model, no flags, no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run(capsys, "eval", "--format", "synthetic", "--num", 8, "--no-fid", "--out", tmp_path / "r.json")
    assert code == 0, err
    assert "skipped fid: --no-fid" in out and "skipped miou" not in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_samples"] == 8 and set(report["metrics"]) == {"miou", "pixel_accuracy"}
    assert "--no-fid" in report["skipped"]["fid"] and "--no-fid" in report["skipped"]["kid"]
    assert report["setup"]["model"] == "embedded" and report["setup"]["label_set"] == "landscape"
    assert report["setup"]["segmenter"].startswith("builtin:landscape")
    assert report["details"]["segmenter"] == "LandscapeSegmenter" and report["details"]["num_classes"] == 10
    miou, accuracy = report["metrics"]["miou"], report["metrics"]["pixel_accuracy"]
    assert math.isfinite(miou) and 0 <= 100 * miou <= 100 and 0 <= accuracy <= 1
    assert f"mIoU            {100 * miou:.2f} %" in out

    # The same numbers as the shipped segmenter run by hand on the same generated images.
    from spade_core.cli.eval import (
        build_eval_dataset,
        eval_preprocess,
        pipeline_generate_fn,
    )
    from spade_core.eval import draw_seed, load_landscape_segmenter
    from spade_core.eval.metrics import to_unit_range

    pipe = SPADEPipeline.from_pretrained()
    dataset = build_eval_dataset("synthetic", None, "val", pipe, eval_preprocess("synthetic", (128, 128)), num=8)
    labels = torch.cat([dataset[i]["label"] for i in range(8)])
    images = to_unit_range(pipeline_generate_fn(pipe)(labels, None, draw_seed(0, 0)))
    with torch.no_grad():
        pred = load_landscape_segmenter()(images).argmax(1)
    by_hand = mean_iou(confusion_matrix(pred, labels, 10))
    assert miou == pytest.approx(by_hand["miou"], abs=1e-9)
    assert accuracy == pytest.approx(by_hand["pixel_accuracy"], abs=1e-9)


def test_eval_user_errors_print_one_line_and_exit_2(setup, capsys, monkeypatch, tmp_path):
    out = ["--out", tmp_path / "r.json"]
    coco = ["eval", "--model", setup["model"], "--format", "coco", "--split", "train", "--num", 2]
    assert_user_error(run(capsys, *coco, "--data", tmp_path / "missing", *out), r"--data .*missing is not a folder")
    assert_user_error(
        run(capsys, "eval", "--format", "pascal", "--data", COCO_SAMPLE, *out), r"unknown dataset format 'pascal'.*coco"
    )
    assert_user_error(
        run(capsys, *coco, "--data", COCO_SAMPLE, "--no-fid", "--segmenter", "no_such_module_xyz:build", *out),
        "cannot import 'no_such_module_xyz'",
    )
    assert_user_error(
        run(capsys, *coco, "--data", COCO_SAMPLE, "--no-fid", "--segmenter", f"{setup['root']}/segmenter/{SEGMENTER_MODULE}.py:nope", *out),
        "has no attribute 'nope'",
    )
    assert_user_error(run(capsys, *coco, "--data", COCO_SAMPLE, "--inception", "x.pth", "--no-fid", *out), "not allowed with")

    # Offline, with no weights anywhere: name the variable that points at them and the way around them.
    monkeypatch.delenv("SPADE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("SPADE_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_user_error(run(capsys, *coco, "--data", COCO_SAMPLE, *out), r"SPADE_INCEPTION_WEIGHTS.*--no-fid")
    assert not (tmp_path / "r.json").exists()


def test_cache_dir_drops_partial_progress_of_another_model(tmp_path, capsys):
    """evaluate() keys its partial progress on the metric settings, not the generator: the command does."""
    from spade_core.cli.eval import _claim_cache_dir

    _claim_cache_dir(tmp_path, "model-a")
    (tmp_path / "progress_0123.npz").write_bytes(b"partial")
    _claim_cache_dir(tmp_path, "model-a")  # the same model resumes
    assert (tmp_path / "progress_0123.npz").exists()
    _claim_cache_dir(tmp_path, "model-b")
    assert not (tmp_path / "progress_0123.npz").exists()
    assert "discarded" in capsys.readouterr().err
