"""Confusion matrix, mIoU and pixel accuracy on hand-computed cases; the Cityscapes id mapping; the
shipped landscape segmenter and segmenter loading."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from spade_core.data.synthetic import render_landscape
from spade_core.eval import (
    CITYSCAPES_19_CLASSES,
    CITYSCAPES_35_TO_19,
    LANDSCAPE_SEGMENTER_DIR,
    PAPER_PROTOCOL,
    LandscapeSegmenter,
    SegmentationConsistency,
    apply_label_map,
    confusion_matrix,
    default_segmenter,
    load_landscape_segmenter,
    load_segmenter,
    mean_iou,
    save_landscape_segmenter,
)

TARGET = torch.tensor([[0, 0, 1], [1, 2, 2]])
PRED = torch.tensor([[0, 1, 1], [1, 2, 0]])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, TARGET, num_classes=3)
    # rows = target, columns = prediction
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert conf.dtype == torch.int64


def test_mean_iou_by_hand():
    scores = mean_iou(confusion_matrix(PRED, TARGET, num_classes=3))
    # IoU0 = 1 / (2 + 2 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 1 / (2 + 1 - 1)
    assert scores["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert scores["miou"] == pytest.approx(0.5)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_ignore_index_pixels_are_not_counted():
    target = torch.cat([TARGET, torch.full((1, 3), 255)])
    pred = torch.cat([PRED, torch.tensor([[0, 1, 2]])])
    conf = confusion_matrix(pred, target, num_classes=3, ignore_index=255)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="ignore_index"):
        confusion_matrix(pred, target, num_classes=3)


def test_classes_absent_everywhere_are_left_out_but_false_positives_count():
    scores = mean_iou(confusion_matrix(PRED, TARGET, num_classes=5))
    assert scores["per_class_iou"][3:] == [None, None]
    assert scores["miou"] == pytest.approx(0.5)
    pred = PRED.clone()
    pred[0, 0] = 3  # class 3 predicted but never in the target: IoU 0, included in the mean
    scores = mean_iou(confusion_matrix(pred, TARGET, num_classes=5))
    assert scores["per_class_iou"][3] == 0.0
    assert scores["miou"] == pytest.approx((0 + 2 / 3 + 1 / 2 + 0) / 4)


def test_confusion_matrix_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED[:1], TARGET, num_classes=3)
    with pytest.raises(ValueError, match="segmenter's number of classes"):
        confusion_matrix(PRED + 5, TARGET, num_classes=3)
    assert mean_iou(torch.zeros(3, 3, dtype=torch.long))["miou"] is None


def test_cityscapes_mapping_matches_the_official_train_ids():
    assert len(CITYSCAPES_35_TO_19) == 35
    assert sorted(v for v in CITYSCAPES_35_TO_19.values() if v != 255) == list(range(19))
    assert len(CITYSCAPES_19_CLASSES) == 19
    spot_checks = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 9: 255, 11: 2, 17: 5, 18: 255, 23: 10, 24: 11,
                   26: 13, 29: 255, 30: 255, 31: 16, 33: 18, 34: 255}
    for source, train_id in spot_checks.items():
        assert CITYSCAPES_35_TO_19[source] == train_id, source
    labels = torch.tensor([[7, 8, 26], [0, 33, 40]])
    assert apply_label_map(labels, CITYSCAPES_35_TO_19).tolist() == [[0, 1, 13], [255, 18, 255]]
    with pytest.raises(ValueError, match="negative"):
        apply_label_map(torch.tensor([[-1]]), CITYSCAPES_35_TO_19)


def test_segmentation_consistency_with_cityscapes_labels_and_a_constant_segmenter():
    # Left half road (id 7), right half car (id 26), bottom row unlabeled (id 0 -> ignored).
    labels = torch.full((2, 4, 4), 7)
    labels[:, :, 2:] = 26
    labels[:, 3, :] = 0

    def always_road(images):  # logits at half resolution, upsampled by the metric
        logits = torch.zeros(images.shape[0], 19, 2, 2)
        logits[:, 0] = 1.0
        return logits

    metric = SegmentationConsistency(always_road, num_classes=19, label_map=CITYSCAPES_35_TO_19)
    assert metric.ignore_index == 255
    metric.update(torch.rand(2, 3, 4, 4), labels)
    metric.update(torch.rand(2, 3, 4, 4), labels)
    scores = metric.compute()
    assert metric.num_images == 4
    assert int(metric.conf.sum()) == 4 * 12
    assert scores["per_class_iou"][0] == pytest.approx(0.5)  # road: 6 hits / 12 predicted
    assert scores["per_class_iou"][13] == 0.0
    assert scores["miou"] == pytest.approx(0.25)
    assert scores["pixel_accuracy"] == pytest.approx(0.5)


def test_segmentation_consistency_accepts_modules_and_label_outputs():
    class Argmaxer(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, images):
            return torch.stack([images[:, 0], 1 - images[:, 0]], 1) * self.scale

    images = torch.zeros(1, 3, 2, 2)
    images[0, 0, 0] = 1.0  # top row -> class 0, bottom row -> class 1
    labels = torch.tensor([[[0, 0], [1, 1]]])
    metric = SegmentationConsistency(Argmaxer(), num_classes=2)
    metric.update(images, labels)
    assert metric.compute()["miou"] == 1.0

    metric = SegmentationConsistency(lambda x: torch.zeros(x.shape[0], 1, 1, dtype=torch.long), num_classes=2)
    metric.update(images, labels)  # (N, 1, 1) labels resized nearest to (N, 2, 2)
    assert metric.compute()["pixel_accuracy"] == 0.5
    with pytest.raises(ValueError, match="channels"):
        SegmentationConsistency(Argmaxer(), num_classes=3).update(images, labels)


def test_paper_protocol_documents_each_dataset():
    assert PAPER_PROTOCOL["ade20k"]["segmenter"] == "UperNet101"
    assert PAPER_PROTOCOL["coco"]["segmenter"] == "DeepLabV2"
    assert PAPER_PROTOCOL["cityscapes"]["segmenter"] == "DRN-D-105"
    assert PAPER_PROTOCOL["cityscapes"]["num_classes"] == 19
    for entry in PAPER_PROTOCOL.values():
        assert {"image_size_hw", "num_classes", "paper_results"} <= set(entry)


# --- segmenters ---------------------------------------------------------------------------------------------


def test_landscape_segmenter_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(0)
    net = LandscapeSegmenter(num_classes=5, width=4)
    for module in net.modules():  # non-trivial running statistics, so a lost buffer would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    net.eval()
    save_landscape_segmenter(net, tmp_path / "seg", {"label_set": "landscape", "note": "test"})
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert config["architecture"] == "LandscapeSegmenter" and config["num_classes"] == 5 and config["width"] == 4
    assert config["note"] == "test"
    loaded = load_landscape_segmenter(tmp_path / "seg")
    assert not loaded.training and loaded.num_classes == 5
    images = torch.rand(2, 3, 12, 20)
    with torch.no_grad():
        assert torch.equal(loaded(images), net(images))
        assert loaded(images).shape == (2, 5, 12, 20)


def test_landscape_segmenter_folder_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--export-segmenter"):
        load_landscape_segmenter(tmp_path / "missing")
    folder = tmp_path / "seg"
    save_landscape_segmenter(LandscapeSegmenter(3, width=4), folder, {})
    config = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_landscape_segmenter(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, architecture="UNet")))
    with pytest.raises(ValueError, match="does not describe a LandscapeSegmenter"):
        load_landscape_segmenter(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, width=0)))
    with pytest.raises(ValueError, match="'width' must be a positive integer"):
        load_landscape_segmenter(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, width=8)))
    with pytest.raises(ValueError, match="does not match its config.json"):
        load_landscape_segmenter(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_landscape_segmenter(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no segmenter weights"):
        load_landscape_segmenter(folder)


def test_shipped_landscape_segmenter_segments_real_renders():
    files = {p.name: p.stat().st_size for p in LANDSCAPE_SEGMENTER_DIR.iterdir()}
    assert {"config.json", "model.safetensors"} <= set(files)
    assert sum(files.values()) < 4 * 2**20  # package data stays small
    config = json.loads((LANDSCAPE_SEGMENTER_DIR / "config.json").read_text())
    assert config["label_set"] == "landscape" and config["num_classes"] == 10
    assert 0 < config["real_renders"]["miou_percent"] <= 100

    net = default_segmenter("landscape")
    assert isinstance(net, LandscapeSegmenter) and not net.training
    assert default_segmenter("coco") is None and default_segmenter("cityscapes") is None

    # Held-out layouts (training used seeds 2,000,000 and up): far above the 10 % of guessing.
    samples = [render_landscape(seed, 128) for seed in range(3_000_000, 3_000_004)]
    labels = torch.from_numpy(np.stack([s.labels for s in samples])).long()
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pred = net(images).argmax(1)
    scores = mean_iou(confusion_matrix(pred, labels, 10))
    assert scores["pixel_accuracy"] > 0.8 and scores["miou"] > 0.4, scores


def test_load_segmenter_builds_factories_and_names_its_inputs(tmp_path):
    assert load_segmenter(None, None) is None
    module = tmp_path / "my_seg.py"
    module.write_text("import torch\n\ndef build(weights=None):\n    return torch.nn.Conv2d(3, 4, 1)\n")
    net = load_segmenter(f"{module}:build", None)
    assert isinstance(net, nn.Conv2d) and not net.training
    with pytest.raises(ValueError, match="^spec 'nocolon' is not MODULE:FACTORY"):
        load_segmenter("nocolon", None)
    with pytest.raises(ValueError, match="^--segmenter 'nocolon' is not MODULE:FACTORY"):
        load_segmenter("nocolon", None, spec_name="--segmenter")
    with pytest.raises(FileNotFoundError, match="^weights .*missing.pt not found"):
        load_segmenter(f"{module}:build", tmp_path / "missing.pt")
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a torch.export"):
        load_segmenter(None, tmp_path / "junk.pt2")
