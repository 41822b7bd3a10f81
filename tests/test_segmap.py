"""Segmap coercion, resizing, instance edges and the one-hot semantics (NVlabs parity)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from spade_core.labels import get_label_set
from spade_core.segmap import (
    coerce_instance_map,
    coerce_segmap,
    instance_edge_map,
    load_segmap_file,
    one_hot_semantics,
    resize_labels,
    semantics_from_segmap,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nvlabs"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.json").is_file())
COCO_SAMPLE = Path(__file__).parent / "data" / "coco_stuff_sample"


@pytest.fixture(scope="module")
def ade():
    return get_label_set("ade20k")


@pytest.fixture(scope="module")
def coco():
    return get_label_set("coco")


def test_all_fixture_cases_found():
    assert len(CASES) == 5


@pytest.mark.parametrize("case", CASES)
def test_input_semantics_match_nvlabs(case):
    opt = json.loads((FIXTURES / case / "case.json").read_text())["options"]
    inputs = load_file(str(FIXTURES / case / "inputs.safetensors"))
    expected = load_file(str(FIXTURES / case / "expected.safetensors"))["input_semantics"]
    sem = one_hot_semantics(
        inputs["label"].long()[:, 0], opt["label_nc"], opt["contain_dontcare_label"],
        use_instance=not opt["no_instance"], instance=inputs.get("instance"),
    )
    assert sem.dtype == torch.float32 and sem.shape == expected.shape
    assert torch.equal(sem.to(torch.uint8), expected)
    assert torch.equal(sem, expected.float())


def test_one_hot_by_hand():
    labels = torch.tensor([[[0, 0, 1, 1],
                            [0, 0, 1, 1],
                            [2, 2, 2, 3],
                            [2, 2, 2, 3]]])
    sem = one_hot_semantics(labels, label_nc=3, contain_dontcare_label=True, use_instance=True)
    assert sem.shape == (1, 5, 4, 4)
    assert sem[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert sem[0, 1].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert sem[0, 2].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    assert sem[0, 3].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert sem[0, 4].tolist() == [[0, 1, 1, 0],
                                  [1, 1, 1, 1],
                                  [1, 1, 1, 1],
                                  [0, 0, 1, 1]]
    plain = one_hot_semantics(labels, 4, False, dtype=torch.float16)
    assert plain.shape == (1, 4, 4, 4) and plain.dtype == torch.float16
    assert torch.equal(plain.float(), sem[:, :4])


def test_instance_edges_by_hand():
    inst = torch.tensor([[[5, 5, 5],
                          [5, 5, 5],
                          [5, 5, 9]]])
    edge = instance_edge_map(inst)
    assert edge.shape == (1, 1, 3, 3) and edge.dtype == torch.float32
    assert edge[0, 0].tolist() == [[0, 0, 0],
                                   [0, 0, 1],
                                   [0, 1, 1]]  # no diagonal: the centre pixel stays 0
    assert torch.equal(instance_edge_map(inst.unsqueeze(1)), edge)
    assert instance_edge_map(torch.full((2, 4, 4), 7)).sum() == 0  # borders are not edges


def test_instance_channel_uses_instance_map():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    inst = torch.tensor([[[1, 1, 2, 2]] * 4])
    sem = one_hot_semantics(labels, 1, False, use_instance=True, instance=inst)
    assert sem[0, 1].tolist() == [[0, 1, 1, 0]] * 4
    both = one_hot_semantics(labels.repeat(2, 1, 1), 1, False, use_instance=True, instance=inst)
    assert both.shape == (2, 2, 4, 4) and torch.equal(both[1], sem[0])


def test_one_hot_errors():
    with pytest.raises(ValueError, match=r"found label\(s\) 8 but label_nc=7.*allows 0\.\.7"):
        one_hot_semantics(torch.tensor([[[8]]]), 7, True)
    with pytest.raises(ValueError, match="integer"):
        one_hot_semantics(torch.zeros(1, 2, 2), 7, True)
    with pytest.raises(ValueError, match="use_instance=False"):
        one_hot_semantics(torch.zeros(1, 2, 2, dtype=torch.long), 3, False, instance=torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"instance map is 3x2 \(HxW\) but the label map is 2x2"):
        one_hot_semantics(torch.zeros(1, 2, 2, dtype=torch.long), 3, False, True, torch.zeros(1, 3, 2))


@pytest.mark.parametrize("src,dst", [((5, 7), (13, 3)), ((64, 64), (32, 48)), ((3, 10), (7, 30)),
                                     ((11, 13), (22, 26)), ((100, 37), (64, 64)), ((6, 6), (6, 6))])
def test_resize_matches_torch_legacy_nearest(src, dst):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 50, (2,) + src, generator=g)
    ref = F.interpolate(labels[:, None].float(), size=dst, mode="nearest")[:, 0].long()
    out = resize_labels(labels, dst)
    assert out.dtype == torch.int64 and torch.equal(out, ref)


def test_resize_keeps_large_ids_exact():
    big = torch.tensor([[[2**40 + 1, 2**40 + 3], [7, 2**31 + 5]]])
    out = resize_labels(big, (4, 4))
    assert out[0, 0, 0] == 2**40 + 1 and out[0, 3, 3] == 2**31 + 5
    with pytest.raises(ValueError, match="integer tensor"):
        resize_labels(big.float(), (4, 4))


def test_resize_is_not_nearest_exact():
    labels = torch.arange(3).view(1, 1, 3)
    assert resize_labels(labels, (1, 2)).tolist() == [[[0, 1]]]  # floor(1 * 3 / 2) = 1
    labels = torch.arange(5).view(1, 1, 5)
    assert resize_labels(labels, (1, 3)).tolist() == [[[0, 1, 3]]]  # nearest-exact gives 0, 2, 4


def test_coerce_arrays(coco):
    arr = np.array([[0, 5], [181, 182]], dtype=np.uint8)
    out = coerce_segmap(arr, coco)
    assert out.dtype == torch.int64 and out.tolist() == [[[0, 5], [181, 182]]]
    assert coerce_segmap(torch.tensor(arr).view(1, 1, 2, 2), coco).shape == (1, 2, 2)
    assert coerce_segmap(torch.zeros(3, 2, 2, dtype=torch.int32), coco).shape == (3, 2, 2)
    assert coerce_segmap(np.array([[255, 4]]), coco, mode="raw").tolist() == [[[182, 4]]]
    assert coerce_segmap(np.array([[255, 4]]), coco, unknown="dontcare").tolist() == [[[182, 4]]]
    batch = coerce_segmap([arr, torch.tensor(arr)], coco)
    assert batch.shape == (2, 2, 2) and torch.equal(batch[0], batch[1])


def test_coerce_pil_modes(ade, coco, tmp_path):
    raw = np.array([[0, 1], [2, 150]], dtype=np.uint8)
    as_l = Image.fromarray(raw, mode="L")
    assert coerce_segmap(as_l, ade).tolist() == [[[150, 0], [1, 149]]]  # L = raw ids
    assert coerce_segmap(as_l, ade, mode="index").tolist() == [[[0, 1], [2, 150]]]
    as_p = as_l.convert("P")
    as_p.putpalette(sum(ade.palette, ()))
    assert as_p.mode == "P"
    assert coerce_segmap(as_p, ade).tolist() == [[[0, 1], [2, 150]]]  # P = class indices
    assert coerce_segmap(as_p, ade, mode="raw").tolist() == [[[150, 0], [1, 149]]]
    as_i16 = Image.fromarray(np.array([[255, 3]], dtype=np.uint16))
    assert as_i16.mode.startswith("I")
    assert coerce_segmap(as_i16, coco).tolist() == [[[182, 3]]]
    rgb = Image.fromarray(ade.colorize(np.array([[2, 150], [0, 7]])))
    assert coerce_segmap(rgb, ade).tolist() == [[[2, 150], [0, 7]]]
    assert coerce_segmap(rgb.convert("RGBA"), ade).tolist() == [[[2, 150], [0, 7]]]
    assert coerce_segmap(np.asarray(rgb), ade).tolist() == [[[2, 150], [0, 7]]]
    path = tmp_path / "seg.png"
    as_l.save(path)
    assert load_segmap_file(path).mode == "L"
    assert coerce_segmap(str(path), ade).tolist() == [[[150, 0], [1, 149]]]
    assert coerce_segmap([path, as_l], ade).shape == (2, 2, 2)


def test_coerce_errors(ade, coco, tmp_path):
    with pytest.raises(ValueError, match=r"found label 255 but the label set 'coco' has 182 classes"):
        coerce_segmap(np.array([[255, 3]]), coco)
    with pytest.raises(ValueError, match="dtype float32 but labels must be integers"):
        coerce_segmap(np.zeros((4, 4), dtype=np.float32), coco)
    with pytest.raises(ValueError, match="integers"):
        coerce_segmap(torch.zeros(4, 4, dtype=torch.bool), coco)
    for shape in [(4,), (1, 1, 1, 4, 4), (0, 4)]:
        with pytest.raises(ValueError, match="accepted segmaps"):
            coerce_segmap(np.zeros(shape, dtype=np.int64), coco)
    with pytest.raises(ValueError, match=r"3 channels.*\(N,1,H,W\)"):
        coerce_segmap(torch.zeros(2, 3, 4, 4, dtype=torch.long), coco)
    bad_rgb = np.full((2, 2, 3), (7, 231, 229), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"#07E7E5 \(7, 231, 229\) in 4 pixel.*nearest class is 'sky'"):
        coerce_segmap(bad_rgb, ade)
    assert coerce_segmap(bad_rgb, ade, nearest_color=True).tolist() == [[[2, 2], [2, 2]]]
    with pytest.raises(ValueError, match="share a size"):
        coerce_segmap([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)], coco)
    with pytest.raises(ValueError, match="mode='bogus'"):
        coerce_segmap(np.zeros((2, 2), np.uint8), coco, mode="bogus")
    with pytest.raises(ValueError, match="single-channel"):
        coerce_segmap(Image.new("RGB", (2, 2)), ade, mode="raw")
    with pytest.raises(ValueError, match="not supported"):
        coerce_segmap(Image.new("F", (2, 2)), ade)
    with pytest.raises(ValueError, match="not supported"):
        coerce_segmap({"a": 1}, ade)
    with pytest.raises(FileNotFoundError, match="segmap file not found"):
        coerce_segmap(tmp_path / "missing.png", ade)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read segmap"):
        load_segmap_file(tmp_path / "junk.png")


def test_coerce_instance_map():
    inst = coerce_instance_map(np.array([[1, 2], [3, 4]], dtype=np.int32), size=(2, 2))
    assert inst.dtype == torch.int64 and inst.shape == (1, 2, 2)
    assert coerce_instance_map(torch.tensor([[[[1.0, 2.0]]]])).tolist() == [[[1, 2]]]
    rgb = Image.fromarray(np.array([[[1, 0, 0], [0, 0, 1]]], dtype=np.uint8))
    assert coerce_instance_map(rgb).tolist() == [[[65536, 1]]]
    with pytest.raises(ValueError, match=r"instance map is 2x2 \(HxW\) but the label map is 4x4"):
        coerce_instance_map(np.zeros((2, 2), np.int32), size=(4, 4))
    with pytest.raises(ValueError, match="non-integer"):
        coerce_instance_map(torch.tensor([[0.5]]))


def test_semantics_from_segmap_resizes_labels_and_instances(coco):
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=np.uint8)
    inst = np.array([[1, 2, 2, 2], [1, 2, 2, 2]], dtype=np.int32)
    sem = semantics_from_segmap(Image.fromarray(labels), coco, instance_map=inst, size=(4, 8))
    assert sem.shape == (1, 184, 4, 8)
    assert torch.equal(sem[0, :183].sum(0), torch.ones(4, 8))
    assert sem[0, 183, 0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]  # edges of the resized instance map
    no_inst = semantics_from_segmap(labels, coco)
    assert no_inst.shape == (1, 184, 2, 4) and no_inst[0, 183].tolist() == [[0, 1, 1, 0]] * 2
    with pytest.raises(ValueError, match="does not use instance maps"):
        semantics_from_segmap(labels, get_label_set("ade20k"), instance_map=inst)


def test_coco_stuff_sample_file(coco):
    label_path = min((COCO_SAMPLE / "train_label").glob("*.png"))
    inst_path = COCO_SAMPLE / "train_inst" / label_path.name
    sem = semantics_from_segmap(label_path, coco, instance_map=inst_path, size=(64, 64))
    assert sem.shape == (1, 184, 64, 64)
    assert torch.equal(sem[0, :183].sum(0), torch.ones(64, 64))
    assert 0 < sem[0, 183].sum() < 64 * 64
