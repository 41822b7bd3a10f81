"""`evaluate` end to end on tiny data, resuming from cache_dir, and the diversity metric.

The Inception model here has random weights: these tests check plumbing (batching, caching, report),
not FID values.
"""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from spade_core.eval import (
    CITYSCAPES_35_TO_19,
    FIDInceptionV3,
    Metric,
    MetricResult,
    draw_seed,
    evaluate,
    format_report_table,
    mean_pairwise_distance,
)
from spade_core.eval.metrics import to_unit_range

NUM_CLASSES = 4


def make_samples(count=6, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        {"label": torch.randint(0, NUM_CLASSES, (size, size), generator=gen),
         "image": torch.rand(3, size, size, generator=gen) * 2 - 1,
         "path": f"sample_{i}.png"}
        for i in range(count)
    ]


class LabelPainter:
    """A stand-in generator: paints each class as a grey level in channel 0, seed-dependent noise elsewhere."""

    def __init__(self, fail_at_call=None):
        self.seeds = []
        self.fail_at_call = fail_at_call

    def __call__(self, labels, instances, seed):
        if self.fail_at_call is not None and len(self.seeds) == self.fail_at_call:
            raise KeyboardInterrupt
        self.seeds.append(seed)
        gen = torch.Generator().manual_seed(seed)
        out = torch.rand(labels.shape[0], 3, *labels.shape[-2:], generator=gen) * 2 - 1
        out[:, 0] = labels.float() / (NUM_CLASSES - 1) * 2 - 1
        return out


def read_labels(images):
    """A stand-in segmenter that inverts LabelPainter exactly (images in [0, 1])."""
    return torch.round(images[:, 0] * (NUM_CLASSES - 1)).long()


class CountingFeatures(nn.Module):
    """A cheap feature extractor (4x4 average pool -> 48-d) that counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(1))
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += images.shape[0]
        return nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) * self.weight


def test_evaluate_reports_every_metric_with_random_inception(tmp_path):
    torch.manual_seed(0)
    inception = FIDInceptionV3(resize_input=False)  # random weights, 80x80 inputs: plumbing only
    calls = []
    original_forward = inception.forward
    inception.forward = lambda images: calls.append(images.shape[0]) or original_forward(images)
    samples = make_samples(count=6, size=80)
    painter = LabelPainter()

    report = evaluate(painter, samples, inception=inception, segmenter=read_labels, num_classes=NUM_CLASSES,
                      diversity_seeds=2, batch_size=3, cache_dir=tmp_path, progress=False, seed=5)

    json.dumps(report)
    assert report["num_samples"] == 6 and report["num_batches"] == 2
    assert set(report["metrics"]) == {"fid", "kid", "kid_std", "miou", "pixel_accuracy", "diversity"}
    assert report["skipped"] == {}
    assert report["metrics"]["miou"] == 1.0 and report["metrics"]["pixel_accuracy"] == 1.0
    assert report["metrics"]["fid"] >= 0 and report["metrics"]["diversity"] > 0
    assert report["details"]["feature_dim"] == 2048
    assert report["details"]["num_real_features"] == report["details"]["num_generated_features"] == 6
    assert report["details"]["diversity_metric"] == "l1"
    assert "lpips" in report["details"]["diversity_note"]
    assert report["cache"]["real_features"] == "computed"
    # Main draws use seed + batch index, the extra diversity draws a far-away offset.
    assert painter.seeds == [5, draw_seed(5, 0, 1), 6, draw_seed(5, 1, 1)]
    assert sum(calls) == 12  # 6 real + 6 generated
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in tmp_path.glob("real_features_*.npz")]

    calls.clear()
    again = evaluate(LabelPainter(), samples, inception=inception, batch_size=6, cache_dir=tmp_path,
                     progress=False, seed=5)  # the real cache is per sample, so any batch size reuses it
    assert sum(calls) == 6  # generated only: the real statistics came from the cache
    assert again["cache"]["real_features"] == "loaded"
    assert again["cache"]["real_features_from_cache"] == 6
    assert again["metrics"]["fid"] >= 0  # other seeds per batch at batch_size=6, so another value

    table = format_report_table(report)
    assert "FID" in table and "mIoU" in table and "100.00 %" in table and "diversity (l1)" in table


def test_interrupted_evaluation_resumes_from_cache_dir(tmp_path):
    samples = make_samples(count=6)
    kwargs = {"segmenter": read_labels, "num_classes": NUM_CLASSES, "diversity_seeds": 3, "batch_size": 2,
              "progress": False}
    reference = evaluate(LabelPainter(), samples, inception=CountingFeatures(), **kwargs)

    features = CountingFeatures()
    crashing = LabelPainter(fail_at_call=4)  # 3 draws per batch: dies at the start of batch 1's second draw
    with pytest.raises(KeyboardInterrupt):
        evaluate(crashing, samples, inception=features, cache_dir=tmp_path, **kwargs)
    assert len(list(tmp_path.glob("progress_*.npz"))) == 1

    features.images_seen = 0
    resumed_painter = LabelPainter()
    report = evaluate(resumed_painter, samples, inception=features, cache_dir=tmp_path, **kwargs)
    assert report["cache"]["resumed_batches"] == 1
    assert resumed_painter.seeds[0] == draw_seed(0, 1)  # batch 0 was not generated again
    assert len(resumed_painter.seeds) == 2 * 3
    assert features.images_seen == 2 + 4  # real: batches 0-1 cached, batch 2 new; generated: batches 1 and 2
    assert report["cache"]["real_features_from_cache"] == 4
    assert report["details"]["num_generated_features"] == report["details"]["num_segmented"] == 6
    for name, value in reference["metrics"].items():
        assert report["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert not list(tmp_path.glob("progress_*.npz"))


def test_real_cache_is_reused_only_as_far_as_the_data_agrees(tmp_path):
    samples = make_samples(count=6)
    evaluate(LabelPainter(), samples, inception=CountingFeatures(), batch_size=2, cache_dir=tmp_path,
             progress=False)
    changed = make_samples(count=6)
    changed[5]["image"] = -changed[5]["image"]
    features = CountingFeatures()
    report = evaluate(LabelPainter(), changed, inception=features, batch_size=2, cache_dir=tmp_path,
                      progress=False)
    assert report["cache"]["real_features"] == "partly loaded"
    assert report["cache"]["real_features_from_cache"] == 4
    assert features.images_seen == 2 + 6


def test_constant_segmenter_with_cityscapes_label_map_gives_known_miou():
    labels = torch.full((8, 8), 7)  # road
    labels[:, 4:] = 26  # car
    labels[0] = 0  # unlabeled: ignored after the mapping
    samples = [{"label": labels, "image": torch.zeros(3, 8, 8)} for _ in range(3)]

    def always_road(images):
        logits = torch.zeros(images.shape[0], 19, *images.shape[-2:])
        logits[:, 0] = 1
        return logits

    report = evaluate(LabelPainter(), samples, segmenter=always_road, num_classes=19,
                      label_map=CITYSCAPES_35_TO_19, batch_size=2, progress=False)
    assert report["metrics"]["miou"] == pytest.approx(0.25)
    assert report["metrics"]["pixel_accuracy"] == pytest.approx(0.5)
    assert report["details"]["ignore_index"] == 255
    assert report["details"]["num_segmented"] == 3
    assert set(report["skipped"]) == {"fid", "kid", "diversity"}


def test_skipped_metrics_say_why_and_bad_inputs_raise():
    samples = make_samples(count=2)
    report = evaluate(LabelPainter(), iter(samples), progress=False)
    assert report["metrics"] == {}
    assert "inception" in report["skipped"]["fid"] and "segmenter" in report["skipped"]["miou"]
    assert "diversity_seeds" in report["skipped"]["diversity"]
    assert "skipped fid" in format_report_table(report)

    with pytest.raises(ValueError, match="num_classes"):
        evaluate(LabelPainter(), samples, segmenter=read_labels, progress=False)
    with pytest.raises(ValueError, match="diversity_seeds"):
        evaluate(LabelPainter(), samples, diversity_seeds=1, progress=False)
    with pytest.raises(ValueError, match="generate_fn returned"):
        evaluate(lambda labels, inst, seed: torch.zeros(1, 3, 2, 2), samples, progress=False)
    with pytest.raises(ValueError, match="'label'"):
        evaluate(LabelPainter(), [{"image": torch.zeros(3, 4, 4)}], progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate(LabelPainter(), [], progress=False)


def test_instances_are_batched_and_passed_through():
    seen = []

    def generate(labels, instances, seed):
        seen.append(None if instances is None else tuple(instances.shape))
        return torch.zeros(labels.shape[0], 3, *labels.shape[-2:])

    samples = [dict(s, instance=s["label"] * 10) for s in make_samples(count=3)]
    evaluate(generate, samples, batch_size=2, progress=False)
    assert seen == [(2, 16, 16), (1, 16, 16)]


# --- a metric of one's own ---------------------------------------------------------------------------------


class RedShare(Metric):
    """A test metric: the share of generated pixels whose red channel exceeds `threshold` (one class, no runner edits)."""

    name = "red_share"
    keys = ("red_share",)

    def __init__(self, threshold=0.5):
        self.threshold = threshold
        self.hits = self.pixels = 0
        self.measured_batches = []

    def settings(self):
        return {"threshold": self.threshold}

    def measure(self, batch):
        self.measured_batches.append(batch.index)
        red = batch.fake01[:, 0]
        return int((red > self.threshold).sum()), red.numel()

    def accumulate(self, contribution):
        hits, pixels = contribution
        self.hits += hits
        self.pixels += pixels

    def state_dict(self):
        return {"hits": np.array(self.hits), "pixels": np.array(self.pixels)}

    def load_state_dict(self, state):
        self.hits, self.pixels = int(state["hits"]), int(state["pixels"])

    def result(self):
        return MetricResult(values={"red_share": self.hits / self.pixels}, details={"red_threshold": self.threshold})


def red_share_by_hand(samples, batch_size, seed=0, threshold=0.5):
    painter, hits, pixels = LabelPainter(), 0, 0
    for b in range(0, len(samples), batch_size):
        labels = torch.stack([s["label"] for s in samples[b:b + batch_size]])
        red = to_unit_range(painter(labels, None, draw_seed(seed, b // batch_size)))[:, 0]
        hits, pixels = hits + int((red > threshold).sum()), pixels + red.numel()
    return hits / pixels


def test_a_new_metric_is_one_class_plugged_into_the_runner():
    samples = make_samples(count=5)
    metric = RedShare()
    report = evaluate(LabelPainter(), samples, segmenter=read_labels, num_classes=NUM_CLASSES, batch_size=2,
                      progress=False, metrics=[metric])
    expected = red_share_by_hand(samples, batch_size=2)
    assert 0 < expected < 1
    assert report["metrics"]["red_share"] == pytest.approx(expected, abs=1e-12)
    assert report["metrics"]["miou"] == 1.0  # the standard metrics run alongside
    assert report["details"]["red_threshold"] == 0.5
    assert metric.measured_batches == [0, 1, 2]
    assert re.search(rf"^red_share +{expected:.4f}$", format_report_table(report), re.MULTILINE)  # a plain row, no formatter edits

    with pytest.raises(ValueError, match="unique name"):
        evaluate(LabelPainter(), samples, progress=False, metrics=[RedShare(), RedShare(0.2)])
    with pytest.raises(ValueError, match="spade_core.eval.Metric"):
        evaluate(LabelPainter(), samples, progress=False, metrics=[object()])


def test_resume_restores_every_metrics_state(tmp_path):
    samples = make_samples(count=6)
    kwargs = {"segmenter": read_labels, "num_classes": NUM_CLASSES, "diversity_seeds": 2, "batch_size": 2,
              "progress": False}
    with pytest.raises(KeyboardInterrupt):  # 2 draws per batch: dies at batch 2's first draw
        evaluate(LabelPainter(fail_at_call=4), samples, cache_dir=tmp_path, metrics=[RedShare()], **kwargs)
    (progress,) = tmp_path.glob("progress_*.npz")
    with np.load(progress) as saved:
        assert int(saved["batches_done"]) == 2
        stored = {key: saved[key] for key in saved.files if key.endswith((".hits", ".pixels", ".num_images"))}
    assert sorted(v.item() for k, v in stored.items() if k.endswith(".pixels")) == [2 * 2 * 16 * 16]
    assert sorted(v.item() for k, v in stored.items() if k.endswith(".num_images")) == [4]

    # Another threshold is another metric setting: its progress is not resumed.
    other = RedShare(0.25)
    evaluate(LabelPainter(), samples, cache_dir=tmp_path, metrics=[other], **kwargs)
    assert other.measured_batches == [0, 1, 2]
    assert list(tmp_path.glob("progress_*.npz")) == [progress]

    resumed = RedShare()
    report = evaluate(LabelPainter(), samples, cache_dir=tmp_path, metrics=[resumed], **kwargs)
    assert report["cache"]["resumed_batches"] == 2
    assert resumed.measured_batches == [2]  # batches 0 and 1 came from the saved state
    assert report["metrics"]["red_share"] == pytest.approx(red_share_by_hand(samples, 2), abs=1e-12)
    assert report["metrics"]["miou"] == 1.0 and report["details"]["num_segmented"] == 6
    assert not list(tmp_path.glob("progress_*.npz"))


# --- diversity ---------------------------------------------------------------------------------------------

def test_l1_diversity_by_hand():
    draws = [torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)]
    result = mean_pairwise_distance(draws, metric="l1")
    # pairs on the [0, 1] scale: |0 - 0.5| = 0.5, |0 - 1| = 1, |0.5 - 1| = 0.5
    assert result["value"] == pytest.approx(2 / 3)
    assert result["metric"] == "l1" and result["num_pairs"] == 3
    assert mean_pairwise_distance([draws[0], draws[0]], metric="l1")["value"] == 0.0


def test_lpips_falls_back_without_weights_and_is_used_when_given():
    draws = torch.stack([torch.full((2, 3, 4, 4), -1.0), torch.full((2, 3, 4, 4), 1.0)])
    fallback = mean_pairwise_distance(draws)
    assert fallback["metric"] == "l1" and fallback["requested_metric"] == "lpips" and "note" in fallback
    assert fallback["value"] == pytest.approx(1.0)
    fake_lpips = lambda a, b: (a - b).abs().mean((1, 2, 3), keepdim=True)
    used = mean_pairwise_distance(draws, lpips_fn=fake_lpips)
    assert used["metric"] == "lpips" and used["value"] == pytest.approx(2.0)


def test_feature_diversity_and_errors():
    draws = [torch.full((1, 3, 4, 4), -1.0), torch.full((1, 3, 4, 4), 1.0)]
    result = mean_pairwise_distance(draws, metric="feature", feature_fn=lambda x: x.mean((2, 3)))
    assert result["metric"] == "feature"
    assert result["value"] == pytest.approx(3 ** 0.5)  # features (0,0,0) vs (1,1,1)
    with pytest.raises(ValueError, match="feature_fn"):
        mean_pairwise_distance(draws, metric="feature")
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_distance(draws[:1], metric="l1")
    with pytest.raises(ValueError, match="unknown diversity metric"):
        mean_pairwise_distance(draws, metric="ssim")
