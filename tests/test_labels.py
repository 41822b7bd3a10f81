"""LabelSet: built-in data, raw-id mapping, colours, serialisation and the registry."""

import json

import numpy as np
import pytest
import torch

from spade_core import labels as labels_mod
from spade_core.labels import (
    LabelSet,
    available_label_sets,
    get_label_set,
    register_label_set,
)

BUILTINS = {"ade20k": 150, "coco": 182, "cityscapes": 35}


def _voc_bit_color(k: int) -> tuple[int, int, int]:
    """Independent statement of the PASCAL-VOC bit-interleaving colour map."""
    rgb = [0, 0, 0]
    for shift in range(7, 0, -1):
        for c in range(3):
            rgb[c] |= ((k >> c) & 1) << shift
        k >>= 3
    return tuple(rgb)


@pytest.mark.parametrize("name,count", sorted(BUILTINS.items()))
def test_builtin_counts(name, count):
    ls = get_label_set(name)
    assert ls.name == name
    assert ls.label_nc == count == len(ls.class_names) == len(ls.palette)
    assert len(set(ls.class_names)) == count
    assert all(n == n.strip() and n for n in ls.class_names)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ls.palette)
    assert ls.semantic_nc == count + ls.contain_dontcare_label + ls.use_instance


def test_builtin_flags():
    ade, coco, city = (get_label_set(n) for n in ("ade20k", "coco", "cityscapes"))
    assert (ade.contain_dontcare_label, ade.use_instance, ade.dontcare_raw_ids, ade.raw_id_offset) == (
        True, False, (0,), 1)
    assert (coco.contain_dontcare_label, coco.use_instance, coco.dontcare_raw_ids, coco.raw_id_offset) == (
        True, True, (255,), 0)
    assert (city.contain_dontcare_label, city.use_instance, city.dontcare_raw_ids) == (False, True, ())
    assert (ade.semantic_nc, coco.semantic_nc, city.semantic_nc) == (151, 184, 36)
    assert (ade.dontcare_index, coco.dontcare_index, city.dontcare_index) == (150, 182, None)


def test_ade20k_names_and_palette():
    ade = get_label_set("ade20k")
    assert ade.class_names[:4] == ("wall", "building", "sky", "floor")
    assert ade.class_names[7] == "bed"
    assert ade.class_names[-1] == "flag" and ade.class_names[12] == "person"
    assert ade.palette[:4] == ((120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50))
    assert ade.class_names[2] == "sky" and ade.palette[2] == (6, 230, 230)
    assert ade.palette[-1] == (92, 0, 255)


def test_coco_names_and_palette():
    coco = get_label_set("coco")
    assert coco.class_names[0] == "person" and coco.class_names[90] == "hair brush"
    unused = ["street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk",
              "door", "blender", "hair brush"]
    assert all(u in coco.class_names[:91] for u in unused)
    assert coco.class_names[91] == "banner" and coco.class_names[181] == "wood"
    assert coco.class_names[156] == "sky-other" and coco.palette[156] == (95, 219, 255)
    overrides = {"sea": (54, 62, 167), "sky-other": (95, 219, 255), "tree": (140, 104, 47),
                 "clouds": (170, 170, 170), "grass": (29, 195, 49)}
    for i, (name, color) in enumerate(zip(coco.class_names, coco.palette)):
        assert color == overrides.get(name, _voc_bit_color(i + 1)), (i, name)
    assert coco.palette[0] == (128, 0, 0) and coco.palette[2] == (128, 128, 0)


def test_cityscapes_names_and_palette():
    city = get_label_set("cityscapes")
    assert city.class_names[7] == "road" and city.palette[7] == (128, 64, 128)
    assert city.class_names[:5] == ("unlabeled", "ego vehicle", "rectification border", "out of roi", "static")
    assert city.palette[:5] == ((0, 0, 0),) * 5
    assert city.palette[5] == (111, 74, 0) and city.palette[6] == (81, 0, 81)
    assert city.class_names[26] == "car" and city.palette[26] == (0, 0, 142)
    assert city.class_names[34] == "license plate"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_dict_round_trip(name):
    ls = get_label_set(name)
    d = ls.to_dict()
    back = LabelSet.from_dict(json.loads(json.dumps(d)))
    assert back == ls and back.to_dict() == d
    assert isinstance(back.palette[0], tuple) and isinstance(back.class_names, tuple)


def test_from_dict_rejects_bad_dicts():
    d = get_label_set("cityscapes").to_dict()
    with pytest.raises(ValueError, match="missing keys.*palette"):
        LabelSet.from_dict({k: v for k, v in d.items() if k != "palette"})
    with pytest.raises(ValueError, match="unknown keys.*colour"):
        LabelSet.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="one RGB colour per class"):
        LabelSet.from_dict({**d, "palette": d["palette"][:-1]})


def test_raw_to_labels_ade20k():
    ade = get_label_set("ade20k")
    out = ade.raw_to_labels(np.array([[0, 1, 3, 150]], dtype=np.uint8))
    assert out.dtype == torch.int64 and out.tolist() == [[150, 0, 2, 149]]
    assert ade.raw_to_labels(torch.tensor([0, 1])).tolist() == [150, 0]
    with pytest.raises(ValueError, match=r"found raw label\(s\) 151, 200 .*'ade20k'.*unknown='dontcare'"):
        ade.raw_to_labels(np.array([151, 5, 200]))
    assert ade.raw_to_labels(np.array([151, 5]), unknown="dontcare").tolist() == [150, 4]


def test_raw_to_labels_coco_and_cityscapes():
    coco, city = get_label_set("coco"), get_label_set("cityscapes")
    assert coco.raw_to_labels(np.array([255, 0, 181], dtype=np.uint8)).tolist() == [182, 0, 181]
    with pytest.raises(ValueError, match="182"):
        coco.raw_to_labels(np.array([182]))
    assert city.raw_to_labels(np.arange(35)).tolist() == list(range(35))
    with pytest.raises(ValueError, match="no don't-care"):
        city.raw_to_labels(np.array([35]))
    with pytest.raises(ValueError, match="needs a don't-care class"):
        city.raw_to_labels(np.array([3]), unknown="dontcare")
    with pytest.raises(ValueError, match="integers"):
        coco.raw_to_labels(np.zeros(3, dtype=np.float32))


def test_validate_labels():
    coco = get_label_set("coco")
    with pytest.raises(ValueError, match=r"found label 255 but the label set 'coco' has 182 classes "
                                         r"\(0\.\.181, 182 = don't-care\).*mode='raw'"):
        coco.validate_labels(torch.tensor([255, 3]))
    assert coco.validate_labels(torch.tensor([255, 3]), unknown="dontcare").tolist() == [182, 3]


def test_colorize():
    ade = get_label_set("ade20k")
    rgb = ade.colorize(torch.tensor([[[2, 150]], [[0, 1]]]))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 1, 2, 3)
    assert rgb[0, 0].tolist() == [[6, 230, 230], [0, 0, 0]]
    with pytest.raises(ValueError, match="151"):
        ade.colorize(np.array([[151]]))
    with pytest.raises(ValueError, match="35"):
        get_label_set("cityscapes").colorize(np.array([[35]]))


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_colors_round_trip(name):
    ls = get_label_set(name)
    top = ls.label_nc + int(ls.contain_dontcare_label)
    labels = torch.arange(top).view(1, 1, top).repeat(2, 3, 1)
    back = ls.colors_to_labels(ls.colorize(labels))
    assert back.shape == labels.shape and back.dtype == torch.int64
    assert np.array_equal(ls.colorize(back), ls.colorize(labels))


def test_colors_to_labels_exact_duplicates_and_black():
    ade, city = get_label_set("ade20k"), get_label_set("cityscapes")
    rgb = np.array([[[6, 230, 230], [140, 140, 140], [0, 0, 0]]], dtype=np.uint8)
    assert ade.colors_to_labels(rgb).tolist() == [[2, 6, 150]]  # road and skyscraper share a colour
    assert city.colors_to_labels(rgb[:, 2:]).tolist() == [[0]]  # black is 'unlabeled' there


def test_colors_to_labels_unknown_colour_message_and_nearest():
    ade = get_label_set("ade20k")
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[:] = (6, 230, 230)
    rgb[0, :2] = (7, 231, 229)
    with pytest.raises(ValueError) as err:
        ade.colors_to_labels(rgb)
    msg = str(err.value)
    assert "#07E7E5" in msg and "(7, 231, 229)" in msg and "2 pixel" in msg and "'sky'" in msg
    assert "nearest=True" in msg
    assert ade.colors_to_labels(rgb, nearest=True).tolist() == [[2, 2, 2], [2, 2, 2]]
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ade.colors_to_labels(np.zeros((4, 4), dtype=np.uint8))


def test_legend():
    legend = get_label_set("cityscapes").legend()
    assert len(legend) == 35 and legend[7] == (7, "road", (128, 64, 128))


def test_registry(monkeypatch):
    monkeypatch.setattr(labels_mod, "_REGISTRY", dict(labels_mod._REGISTRY))
    assert {"ade20k", "coco", "cityscapes"} <= set(available_label_sets())
    assert get_label_set("ADE20K") is get_label_set("ade20k")
    with pytest.raises(ValueError, match="unknown label set 'foo'.*ade20k, cityscapes, coco"):
        get_label_set("foo")
    mine = LabelSet("tiny", ("sky", "ground"), ((0, 0, 255), (0, 255, 0)), True, False)
    register_label_set(mine)
    register_label_set(LabelSet.from_dict(mine.to_dict()))
    assert get_label_set("tiny") is mine and "tiny" in available_label_sets()
    assert get_label_set(mine) is mine
    other = LabelSet("tiny", ("a",), ((1, 2, 3),), False, False)
    with pytest.raises(ValueError, match="overwrite=True"):
        register_label_set(other)
    register_label_set(other, overwrite=True)
    assert get_label_set("tiny") is other


def test_one_numbered_label_set_for_models_and_custom_data():
    from types import SimpleNamespace

    from spade_core.data import custom_label_set
    from spade_core.labels import (
        generic_label_set,
        matching_label_set,
        numbered_color,
        numbered_label_set,
    )

    # The colours saved in users' model_index.json files: index+1's bits spread over R, G, B (class 0 not black).
    assert [numbered_color(i) for i in range(4)] == [(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert numbered_color(7) == (64, 0, 0)
    assert len({numbered_color(i) for i in range(255)}) == 255
    model = generic_label_set(5, True, False)
    data = custom_label_set(5, contain_dontcare_label=True)
    assert model.palette == data.palette == numbered_label_set(5).palette
    assert model.class_names == data.class_names == ("class_0", "class_1", "class_2", "class_3", "class_4")
    assert model.dontcare_raw_ids == data.dontcare_raw_ids == (255,)
    assert data.name == "custom" and model.name == "numbered-5"
    assert custom_label_set(3, dontcare_id=0).dontcare_raw_ids == (0,)
    assert generic_label_set(300, True, False).dontcare_raw_ids == ()  # 255 is a class there
    assert data.raw_to_labels(np.array([[0, 4, 255]])).tolist() == [[0, 4, 5]]
    with pytest.raises(ValueError, match="label_nc must be at least 1, got 0: pass the number of classes"):
        custom_label_set(0)
    # A model's label set: the paper dataset with its class count (from spade_core.registry), else numbered.
    cfg = SimpleNamespace(config=SimpleNamespace(label_nc=150, contain_dontcare_label=True, use_instance=True))
    ade = matching_label_set(cfg)
    assert ade.name == "ade20k" and ade.use_instance and ade.contain_dontcare_label
    cfg.config.label_nc = 10  # the landscape set is not a paper dataset: numbered unless named
    assert matching_label_set(cfg).name == "numbered-10"
    cfg.config.contain_dontcare_label = False
    assert matching_label_set(cfg, "landscape").name == "landscape"
