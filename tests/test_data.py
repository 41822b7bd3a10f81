"""Datasets and paired preprocessing: sizes, alignment, raw-id mapping, layouts and pairing errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spade_core.data import (
    DATASET_FORMATS,
    PREPROCESS_MODES,
    PreprocessConfig,
    TransformParams,
    build_dataset,
    draw_params,
    pair_files,
    transform_image,
    transform_map,
)
from spade_core.labels import get_label_set

# ---------------------------------------------------------------- helpers


def _label_array(h: int, w: int, values: list[int], seed: int = 0) -> np.ndarray:
    """Blocky random label map (4x4 blocks) drawn from `values`."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice(values, size=((h + 3) // 4, (w + 3) // 4))
    return np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:h, :w].astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _encoded_image(label: np.ndarray) -> np.ndarray:
    """An RGB image whose red channel is 10 x label, so alignment with the label is checkable."""
    red = label.astype(np.uint8) * 10
    return np.stack([red, np.full_like(red, 128), 255 - red], -1)


def _red_as_bytes(image: torch.Tensor) -> torch.Tensor:
    """Red channel of a [-1, 1] image back to 0..255 integers."""
    return ((image[0] + 1) / 2 * 255).round().long()


# ---------------------------------------------------------------- transforms

# source 100 x 60 (w x h) -> expected (w, h) per mode
EXPECTED_SIZES = {
    "resize_and_crop": (dict(load_size=80, crop_size=64), (64, 64)),
    "scale_width_and_crop": (dict(load_size=80, crop_size=32), (32, 32)),
    "scale_shortside_and_crop": (dict(load_size=40, crop_size=32), (32, 32)),
    "crop": (dict(crop_size=32), (32, 32)),
    "resize": (dict(load_size=50), (50, 50)),
    "scale_width": (dict(load_size=50), (50, 30)),
    "scale_shortside": (dict(load_size=30), (50, 30)),
    "fixed": (dict(crop_size=64, aspect_ratio=2.0), (64, 32)),
    "none": (dict(), (96, 64)),
}


def test_every_mode_has_an_expected_size() -> None:
    assert set(EXPECTED_SIZES) == set(PREPROCESS_MODES)


@pytest.mark.parametrize("mode", sorted(EXPECTED_SIZES))
def test_mode_output_size_and_values(mode: str) -> None:
    kwargs, (want_w, want_h) = EXPECTED_SIZES[mode]
    config = PreprocessConfig(mode, **kwargs)
    label_np = _label_array(60, 100, [0, 3, 7, 200])
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 100, 3), dtype=np.uint8))
    params = draw_params(config, (100, 60), random.Random(0))

    assert config.output_size(100, 60) == (want_w, want_h)
    img = transform_image(image, config, params)
    lab = transform_map(Image.fromarray(label_np), config, params)
    assert img.shape == (3, want_h, want_w) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert lab.shape == (1, want_h, want_w) and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) <= {0, 3, 7, 200}  # nearest: no blended ids


def test_shortside_keeps_aspect_ratio() -> None:
    assert PreprocessConfig("scale_shortside", load_size=30).resized_size(60, 100) == (30, 50)


def test_crop_and_flip_are_applied_identically() -> None:
    label = _label_array(32, 48, list(range(20)), seed=3)
    instance = (np.arange(48)[None, :] + 100 * np.arange(32)[:, None]).astype(np.int32)
    config = PreprocessConfig("crop", crop_size=16, flip=True, is_train=True)
    params = TransformParams(crop_pos=(5, 9), flip=True)

    img = transform_image(Image.fromarray(_encoded_image(label)), config, params)
    lab = transform_map(Image.fromarray(label), config, params)
    inst = transform_map(Image.fromarray(instance), config, params)

    want = torch.from_numpy(label[9:25, 5:21].astype(np.int64)).flip(-1)
    assert torch.equal(lab[0], want)
    assert torch.equal(inst[0], torch.from_numpy(instance[9:25, 5:21].astype(np.int64)).flip(-1))
    assert torch.equal(_red_as_bytes(img), want * 10)


def test_no_flip_outside_training() -> None:
    label = _label_array(32, 32, [1, 2, 3], seed=4)
    params = TransformParams(flip=True)
    test_cfg = PreprocessConfig("none", is_train=False)
    assert torch.equal(transform_map(Image.fromarray(label), test_cfg, params)[0], torch.from_numpy(label).long())
    no_flip = PreprocessConfig("none", flip=False)
    assert torch.equal(transform_map(Image.fromarray(label), no_flip, params)[0], torch.from_numpy(label).long())


def test_crop_past_border_pads_with_fill() -> None:
    label = np.full((10, 10), 3, dtype=np.uint8)
    config = PreprocessConfig("crop", crop_size=16)
    out = transform_map(Image.fromarray(label), config, TransformParams((0, 0), False), fill=255)
    assert out.shape == (1, 16, 16)
    assert (out[0, :10, :10] == 3).all() and (out[0, 10:] == 255).all() and (out[0, :, 10:] == 255).all()


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match="unknown preprocess_mode 'zoom'.*resize_and_crop"):
        PreprocessConfig("zoom")
    with pytest.raises(ValueError, match="set load_size >= crop_size"):
        PreprocessConfig("resize_and_crop", load_size=100, crop_size=128)


# ---------------------------------------------------------------- COCO-Stuff sample


def test_coco_sample(coco_sample: Path) -> None:
    ds = build_dataset("coco", coco_sample, preprocess=PreprocessConfig("resize_and_crop", 72, 64), seed=0)
    assert len(ds) == 13 and ds.label_set.label_nc == 182 and ds.use_instance
    seen: set[int] = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["label"].shape == (1, 64, 64) and s["label"].dtype == torch.int64
        assert s["image"].shape == (3, 64, 64) and -1 <= s["image"].min() and s["image"].max() <= 1
        assert s["instance"].shape == (1, 64, 64) and s["instance"].dtype == torch.int64
        assert s["path"].endswith(".jpg") and Path(s["path"]).exists()
        seen |= set(s["label"].unique().tolist())
    assert min(seen) >= 0 and max(seen) == 182  # 255 (unlabeled) became the don't-care index
    assert 255 not in seen


def test_coco_sample_crop_matches_raw_files(coco_sample: Path) -> None:
    config = PreprocessConfig("crop", crop_size=48)
    ds = build_dataset("coco", coco_sample, preprocess=config, seed=7)
    ds.set_epoch(2)
    index = 3
    paths = ds.samples[index]
    raw = np.asarray(Image.open(paths.label)).astype(np.int64)
    params = draw_params(config, (raw.shape[1], raw.shape[0]), ds.rng_for(index))
    x, y = params.crop_pos
    window = raw[y : y + 48, x : x + 48]
    if params.flip:
        window = window[:, ::-1]
    expected = torch.from_numpy(np.where(window == 255, 182, window).copy())
    assert torch.equal(ds[index]["label"][0], expected)
    inst = np.asarray(Image.open(paths.instance)).astype(np.int64)[y : y + 48, x : x + 48]
    assert torch.equal(ds[index]["instance"][0], torch.from_numpy((inst[:, ::-1] if params.flip else inst).copy()))


def test_seed_and_epoch_make_augmentation_reproducible(coco_sample: Path) -> None:
    config = PreprocessConfig("crop", crop_size=32)
    a = build_dataset("coco", coco_sample, preprocess=config, seed=11)
    b = build_dataset("coco", coco_sample, preprocess=config, seed=11)
    assert torch.equal(a[0]["label"], b[0]["label"]) and torch.equal(a[0]["image"], b[0]["image"])
    draws = {draw_params(config, (640, 480), a.rng_for(0))}
    for epoch in range(1, 4):
        a.set_epoch(epoch)
        draws.add(draw_params(config, (640, 480), a.rng_for(0)))
    assert len(draws) > 1  # a new epoch gives new crops


def test_batches_collate(coco_sample: Path) -> None:
    ds = build_dataset("coco", coco_sample, preprocess=PreprocessConfig("fixed", crop_size=32), max_dataset_size=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["label"].shape == (4, 1, 32, 32) and batch["image"].shape == (4, 3, 32, 32)
    assert len(batch["path"]) == 4


# ---------------------------------------------------------------- other layouts


def test_ade20k_layout(tmp_path: Path) -> None:
    for i in range(3):
        label = _label_array(32, 64, [0, 1, 75, 150], seed=i)
        _save(_encoded_image(label % 25), tmp_path / "images" / "validation" / f"ADE_val_{i:08d}.jpg")
        _save(label, tmp_path / "annotations" / "validation" / f"ADE_val_{i:08d}.png")
    ds = build_dataset("ade20k", tmp_path, split="val", preprocess=PreprocessConfig("none", is_train=False))
    assert len(ds) == 3 and "instance" not in ds[0]
    raw = np.asarray(Image.open(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png")).astype(np.int64)
    want = np.where(raw == 0, 150, raw - 1)  # raw 0 = unlabeled -> don't-care, raw k -> k-1
    assert torch.equal(ds[1]["label"][0], torch.from_numpy(want))
    assert ds[1]["image"].shape == (3, 32, 64)


def test_cityscapes_layout(tmp_path: Path) -> None:
    stems = ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]
    for stem in stems:
        city = stem.split("_")[0]
        label = _label_array(64, 128, [0, 7, 26, 33], seed=len(stem) + int(stem[7:13]))
        instance = np.where(label == 26, 26001, label.astype(np.int64)).astype(np.uint16)  # 16-bit PNG, as Cityscapes ships
        _save(_encoded_image(label), tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
        _save(label, tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png")
        _save(instance, tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png")
        _save(label, tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_color.png")  # ignored
    config = PreprocessConfig("fixed", crop_size=64, aspect_ratio=2.0, flip=False)
    ds = build_dataset("cityscapes", tmp_path, preprocess=config)
    assert len(ds) == 3 and ds.label_set.label_nc == 35
    s = ds[0]
    assert s["label"].shape == (1, 32, 64) and s["instance"].shape == (1, 32, 64)
    assert set(s["instance"].unique().tolist()) <= {0, 7, 26001, 33}  # 16-bit ids survive
    assert torch.equal(s["instance"] == 26001, s["label"] == 26)  # resized in step with the label
    assert s["image"].shape == (3, 32, 64)


def test_folder_layout_with_dontcare_id(tmp_path: Path) -> None:
    for name in ["a", "b"]:
        label = _label_array(32, 32, [0, 1, 3, 255], seed=ord(name))
        _save(_encoded_image(label % 4), tmp_path / "train" / "images" / f"{name}.png")
        _save(label, tmp_path / "train" / "labels" / f"{name}.png")
    ds = build_dataset("folder", tmp_path, label_nc=4, dontcare_id=255, preprocess=PreprocessConfig("none"))
    assert len(ds) == 2 and ds.label_set.label_nc == 4 and ds.label_set.dontcare_index == 4
    assert set(ds[0]["label"].unique().tolist()) <= {0, 1, 3, 4} and 4 in ds[0]["label"]
    with pytest.raises(ValueError, match="pass label_nc="):
        build_dataset("folder", tmp_path)
    with pytest.raises(ValueError, match="unknown='dontcare' needs a don't-care class"):
        build_dataset("folder", tmp_path, label_nc=4, unknown="dontcare")


def test_folder_with_instances_and_seeded_alignment(tmp_path: Path) -> None:
    for name in ["x1", "x2"]:
        label = _label_array(40, 40, [0, 1, 2, 5], seed=len(name) + int(name[1]))
        _save(_encoded_image(label), tmp_path / "images" / f"{name}.png")
        _save(label, tmp_path / "labels" / f"{name}.png")
        _save(label, tmp_path / "instances" / f"{name}.png")
    config = PreprocessConfig("crop", crop_size=24, flip=True)
    ds = build_dataset("folder", tmp_path, label_nc=6, preprocess=config, seed=5)
    assert ds.use_instance
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds[1]
        assert torch.equal(s["instance"], s["label"])
        assert torch.equal(_red_as_bytes(s["image"]), s["label"][0] * 10)


def test_unknown_raw_ids_name_the_file(tmp_path: Path) -> None:
    _save(np.zeros((32, 32, 3), np.uint8), tmp_path / "images" / "a.png")
    _save(np.full((32, 32), 9, np.uint8), tmp_path / "labels" / "a.png")
    ds = build_dataset("folder", tmp_path, label_nc=4, preprocess=PreprocessConfig("none"))
    with pytest.raises(ValueError, match=r"a\.png.*9"):
        ds[0]


def test_unknown_dontcare_and_size_mismatch(tmp_path: Path) -> None:
    _save(np.zeros((32, 32, 3), np.uint8), tmp_path / "images" / "a.png")
    _save(np.full((32, 32), 9, np.uint8), tmp_path / "labels" / "a.png")
    _save(np.zeros((32, 48, 3), np.uint8), tmp_path / "images" / "b.png")
    _save(np.zeros((32, 32), np.uint8), tmp_path / "labels" / "b.png")
    ds = build_dataset(
        "folder", tmp_path, label_nc=4, contain_dontcare_label=True, unknown="dontcare",
        preprocess=PreprocessConfig("none"),
    )
    assert ds.label_set.dontcare_raw_ids == (255,)  # the reference's custom-dataset default
    assert (ds[0]["label"] == 4).all()
    with pytest.raises(ValueError, match=r"b\.png: the image is 48x32 but its label map is 32x32"):
        ds[1]


# ---------------------------------------------------------------- pairing and missing folders


def test_unpaired_files_are_named(tmp_path: Path) -> None:
    for name in ["a", "b", "c", "k"]:
        _save(np.zeros((8, 8, 3), np.uint8), tmp_path / "images" / f"{name}.jpg")
    for name in ["k", "d"]:
        _save(np.zeros((8, 8), np.uint8), tmp_path / "labels" / f"{name}.png")
    with pytest.raises(ValueError) as err:
        build_dataset("folder", tmp_path, label_nc=3)
    message = str(err.value)
    assert "3 images have no label: a.jpg, b.jpg, c.jpg" in message
    assert "1 label has no image: d.png" in message
    assert "skip_unpaired=True" in message and "\n" not in message
    ds = build_dataset("folder", tmp_path, label_nc=3, skip_unpaired=True)
    assert len(ds) == 1 and ds.samples[0].label.name == "k.png"


def test_pairing_lists_at_most_ten_names() -> None:
    images = {f"img{i}": Path(f"/d/img{i}.jpg") for i in range(25)}
    with pytest.raises(ValueError, match=r"25 images have no label: img0\.jpg, img1\.jpg, .*img9\.jpg, \.\.\. \(\+15 more\)"):
        pair_files(images, {})


def test_missing_instance_maps_are_named(coco_sample: Path, tmp_path: Path) -> None:
    for sub in ["train_img", "train_label", "train_inst"]:
        (tmp_path / sub).mkdir()
    for name in ["p", "q"]:
        _save(np.zeros((8, 8, 3), np.uint8), tmp_path / "train_img" / f"{name}.jpg")
        _save(np.zeros((8, 8), np.uint8), tmp_path / "train_label" / f"{name}.png")
    _save(np.zeros((8, 8), np.uint8), tmp_path / "train_inst" / "p.png")
    with pytest.raises(ValueError, match=r"1 label has no instance map: q\.png.*use_instance=False"):
        build_dataset("coco", tmp_path)
    assert len(build_dataset("coco", tmp_path, use_instance=False)) == 2


def test_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"annotations/training/\*\.png"):
        build_dataset("ade20k", tmp_path)
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no usable files"):
        build_dataset("ade20k", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train/<city>"):
        build_dataset("cityscapes", tmp_path)


def test_registry_lists_formats() -> None:
    assert {"ade20k", "cityscapes", "coco", "folder", "hf", "synthetic"} <= set(DATASET_FORMATS)
    with pytest.raises(ValueError, match="pass one of ade20k"):
        build_dataset("voc", "/nowhere")


# ---------------------------------------------------------------- Hugging Face datasets


def _hf_rows(n: int) -> dict[str, list[Image.Image]]:
    labels = [_label_array(32, 32, [0, 1, 50, 150], seed=i) for i in range(n)]
    return {
        "image": [Image.fromarray(_encoded_image(label % 25)) for label in labels],
        "annotation": [Image.fromarray(label) for label in labels],
    }


def test_hf_round_trip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    rows = _hf_rows(3)
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "flat"))
    ds = build_dataset("hf", tmp_path / "flat", preprocess=PreprocessConfig("none", flip=False))
    assert len(ds) == 3 and ds.label_set.name == "ade20k" and "instance" not in ds[0]
    raw = np.asarray(rows["annotation"][2]).astype(np.int64)
    assert torch.equal(ds[2]["label"][0], torch.from_numpy(np.where(raw == 0, 150, raw - 1)))
    assert ds[2]["image"].shape == (3, 32, 32)

    split_dict = datasets.DatasetDict(
        {"validation": datasets.Dataset.from_dict(_hf_rows(2), features=features)}
    )
    split_dict.save_to_disk(str(tmp_path / "splits"))
    assert len(build_dataset("hf", tmp_path / "splits", split="val", preprocess=PreprocessConfig("none"))) == 2
    with pytest.raises(ValueError, match="pass label_column= one of image, annotation"):
        build_dataset("hf", tmp_path / "flat", label_column="seg")


# ---------------------------------------------------------------- synthetic


def test_synthetic_format() -> None:
    pytest.importorskip("spade_core.data.synthetic")
    ds = build_dataset("synthetic", None, preprocess=PreprocessConfig("fixed", crop_size=64, aspect_ratio=2.0), length=3)
    assert len(ds) == 3 and ds[0]["label"].shape == (1, 32, 64)
    square = PreprocessConfig("fixed", crop_size=64, flip=False)
    train = build_dataset("synthetic", None, preprocess=square, length=1)
    val = build_dataset("synthetic", None, split="val", preprocess=square, length=1)
    assert not torch.equal(val[0]["label"], train[0]["label"])  # held-out layouts
    sample = ds[0]
    assert sample["label"].dtype == torch.int64 and sample["label"].dim() == 3
    assert sample["image"].shape[0] == 3 and sample["image"].shape[1:] == sample["label"].shape[1:]
    assert int(sample["label"].max()) <= ds.label_set.label_nc


def test_label_sets_match_the_formats(coco_sample: Path) -> None:
    assert build_dataset("coco", coco_sample).label_set == get_label_set("coco")
