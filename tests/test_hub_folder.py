"""spade_core.hub.folder and hub.export: the pipeline-folder layout written, read and loaded without the pipeline class."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NVLABS
from safetensors.torch import load_file, save_file

from spade_core.hub.export import convert_nvlabs_to_folder, export_run
from spade_core.hub.folder import (
    MODEL_INDEX,
    WEIGHTS_NAME,
    check_pipeline_folder,
    embedded_model_dir,
    load_components,
    read_label_set,
    read_model_index,
    write_pipeline_folder,
)
from spade_core.labels import get_label_set, matching_label_set
from spade_core.models import SPADEEncoder, SPADEGenerator
from spade_core.pipeline import SPADEPipeline

ROOT = Path(__file__).resolve().parents[1]
V1 = "v1_normal_syncbatch_dontcare"
V3 = "v3_vae_encoder_spadeinstance_64x256"
TINY = {"label_nc": 5, "no_instance": True, "ngf": 4, "crop_size": 64, "spade_hidden_nc": 16, "param_free_norm": "instance"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_hub_folder_loads_and_writes_without_the_pipeline_class(tmp_path):
    code = (
        "import sys\n"
        "from spade_core.hub.folder import embedded_model_dir, load_components, write_pipeline_folder\n"
        "import spade_core.hub.export\n"
        "g, e, labels = load_components(embedded_model_dir())\n"
        f"write_pipeline_folder({str(tmp_path / 'out')!r}, g, e, labels)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('diffusers.pipelines') or m == 'spade_core.pipeline')\n"
        "assert not bad, bad\n"
        "print('ok', labels.name)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "landscape"]
    assert (tmp_path / "out" / MODEL_INDEX).is_file()


def test_written_folder_equals_save_pretrained_and_gives_the_same_images(tmp_path):
    generator, encoder, label_set = load_components(embedded_model_dir())
    assert label_set == read_label_set(embedded_model_dir()) and encoder is not None
    write_pipeline_folder(tmp_path / "ours", generator, encoder, label_set)
    SPADEPipeline(generator=generator, encoder=encoder, label_set=label_set).save_pretrained(tmp_path / "ref", model_card=False)
    ours, ref = _tree(tmp_path / "ours"), _tree(tmp_path / "ref")
    assert ours == ref  # model_index.json, configs and weights, byte for byte
    index = json.loads(ours[MODEL_INDEX])
    assert index["_class_name"] == "SPADEPipeline" and index["generator"] == ["spade_core", "SPADEGenerator"]
    assert index["encoder"] == ["spade_core", "SPADEEncoder"] and index["label_set"] == label_set.to_dict()
    assert check_pipeline_folder(tmp_path / "ours") == index == read_model_index(tmp_path / "ours")

    original = SPADEPipeline.from_pretrained(None)
    reloaded = SPADEPipeline.from_pretrained(tmp_path / "ours")
    layout = original.example_segmap()
    a = original(layout, seed=3, num_images_per_segmap=2, output_type="pt").images
    b = reloaded(layout, seed=3, num_images_per_segmap=2, output_type="pt").images
    assert torch.equal(a, b)
    # the networks load_components returns are the pipeline's, value for value and in their outputs
    for name, module in (("generator", generator), ("encoder", encoder)):
        theirs = getattr(original, name).state_dict()
        assert all(torch.equal(theirs[k], v) for k, v in module.state_dict().items())
    semantics = original.prepare_semantics(layout)
    z = torch.randn(1, generator.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(generator(semantics, z), original.generator(semantics, z))
    # each component folder also loads with the diffusers model class directly
    assert isinstance(SPADEGenerator.from_pretrained(tmp_path / "ours", subfolder="generator"), SPADEGenerator)


def test_load_components_dtype_device_and_models_without_encoder(tmp_path):
    torch.manual_seed(0)
    generator = SPADEGenerator.from_preset("coco", **TINY)
    label_set = matching_label_set(generator)
    write_pipeline_folder(tmp_path / "p", generator, None, label_set)
    assert json.loads((tmp_path / "p" / MODEL_INDEX).read_text())["encoder"] == [None, None]
    assert not (tmp_path / "p" / "encoder").exists()
    gen, enc, labels = load_components(tmp_path / "p", dtype="bfloat16", device="cpu")
    assert enc is None and labels == label_set and not gen.training
    assert gen.dtype == torch.bfloat16 and gen.device.type == "cpu"
    assert all(torch.equal(v.to(torch.bfloat16), gen.state_dict()[k]) for k, v in generator.state_dict().items())
    pipe = SPADEPipeline.from_pretrained(tmp_path / "p")
    assert pipe.encoder is None and pipe.label_set == label_set


def test_write_and_read_refuse_what_does_not_fit(tmp_path):
    torch.manual_seed(0)
    generator = SPADEGenerator.from_preset("coco", **TINY)
    with pytest.raises(ValueError, match="does not fit the generator"):
        write_pipeline_folder(tmp_path / "a", generator, None, get_label_set("coco"))
    with pytest.raises(ValueError, match="without use_vae: drop the encoder"):
        write_pipeline_folder(tmp_path / "a", generator, SPADEEncoder(), matching_label_set(generator))
    with pytest.raises(ValueError, match="must be a SPADEGenerator"):
        write_pipeline_folder(tmp_path / "a", torch.nn.Linear(1, 1), None, matching_label_set(generator))
    assert not (tmp_path / "a").exists()  # refused before anything was written

    with pytest.raises(FileNotFoundError, match="not a pipeline folder .*spade convert-nvlabs"):
        read_model_index(NVLABS / V1)
    folder = tmp_path / "p"
    write_pipeline_folder(folder, generator, None, matching_label_set(generator))
    index = json.loads((folder / MODEL_INDEX).read_text())
    del index["label_set"]
    (folder / MODEL_INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="holds no label set"):
        read_label_set(folder)
    (folder / MODEL_INDEX).write_text("{not json")
    with pytest.raises(ValueError, match=r"is not valid JSON .*line 1\): re-save"):
        load_components(folder)


def test_load_components_refuses_nan_weights(tmp_path):
    torch.manual_seed(0)
    generator = SPADEGenerator.from_preset("coco", **TINY)
    folder = write_pipeline_folder(tmp_path / "p", generator, None, matching_label_set(generator))
    weights = folder / "generator" / WEIGHTS_NAME
    state = load_file(str(weights))
    key = min(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=re.escape(f"generator/{WEIGHTS_NAME} entry '{key}' holds 1 NaN/Inf")):
        load_components(folder)


def test_export_run_writes_a_loadable_folder_with_a_card(tmp_path):
    checkpoint = pytest.importorskip("spade_core.train.checkpoint")
    torch.manual_seed(0)
    raw, ema = SPADEGenerator.from_preset("coco", **TINY), SPADEGenerator.from_preset("coco", **TINY)
    label_set = matching_label_set(raw)
    checkpoint.save_checkpoint(tmp_path / "run", 10, {"generator": raw, "ema_generator": ema}, {}, {}, {}, label_set.to_dict())
    result = export_run(tmp_path / "run", tmp_path / "ema")
    assert result.path == tmp_path / "ema" and result.parts == ("generator",) and result.used_ema and result.step == 10
    assert result.label_set == label_set
    assert result.describe() == f"EMA generator; label set {label_set.name}, 5 classes"
    raw_result = export_run(tmp_path / "run", tmp_path / "raw", use_ema=False, license="mit")
    assert not raw_result.used_ema and raw_result.describe().startswith("generator;")
    layout = np.arange(64)[:, None].repeat(64, 1) // 16
    for folder, source in (("ema", ema), ("raw", raw)):
        gen, enc, labels = load_components(tmp_path / folder)
        assert enc is None and labels == label_set
        assert all(torch.equal(gen.state_dict()[k], v) for k, v in source.state_dict().items())
        pipe = SPADEPipeline.from_pretrained(tmp_path / folder)
        semantics = pipe.prepare_semantics(layout)
        with torch.no_grad():
            expected = source.eval()(semantics)
        assert torch.allclose(pipe(layout, output_type="pt").images, (expected / 2 + 0.5).clamp(0, 1), atol=1e-5)
    card = (tmp_path / "raw" / "README.md").read_text()
    assert "license: mit" in card and "Trained with `spade train` (run `run`, step 10, generator)." in card
    assert "step 10, EMA generator" in (tmp_path / "ema" / "README.md").read_text()

    before = _tree(tmp_path / "ema")
    with pytest.raises(FileExistsError, match="not empty: pick a new folder or pass overwrite=True"):
        export_run(tmp_path / "run", tmp_path / "ema", use_ema=False)
    assert _tree(tmp_path / "ema") == before  # a refused export changes nothing
    export_run(tmp_path / "run", tmp_path / "ema", use_ema=False, overwrite=True)
    assert _tree(tmp_path / "ema")["generator/" + WEIGHTS_NAME] == _tree(tmp_path / "raw")["generator/" + WEIGHTS_NAME]
    with pytest.raises(FileNotFoundError, match="not found"):
        export_run(tmp_path / "missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("case", [V1, V3])
def test_convert_nvlabs_to_folder_reproduces_the_reference(case, tmp_path):
    d = NVLABS / case
    inputs, expected = load_file(d / "inputs.safetensors"), load_file(d / "expected.safetensors")
    result = convert_nvlabs_to_folder(d, tmp_path / "pipe", opt_file=d / "opt.txt")
    has_d, has_e = (d / "latest_net_D.pth").is_file(), (d / "latest_net_E.pth").is_file()
    assert result.parts == ("generator",) + ("encoder",) * has_e + ("discriminator",) * has_d
    assert (tmp_path / "pipe" / "discriminator" / WEIGHTS_NAME).is_file() == has_d
    generator, encoder, label_set = load_components(tmp_path / "pipe")
    assert label_set == result.label_set and (encoder is not None) == has_e
    semantics, z = expected["input_semantics"].float(), None
    with torch.no_grad():
        if encoder is not None:
            mu, logvar = encoder(inputs["image"])
            z = inputs["eps"] * torch.exp(0.5 * logvar) + mu
        fake = generator(semantics, z)
    torch.testing.assert_close(fake, expected["fake_image"], atol=1e-4, rtol=1e-4)
    pipe = SPADEPipeline.from_pretrained(tmp_path / "pipe")
    with torch.no_grad():
        torch.testing.assert_close(pipe.generator(semantics, z), expected["fake_image"], atol=1e-4, rtol=1e-4)
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and f"checkpoint `{case}` with its `opt.txt`" in card


def test_convert_nvlabs_to_folder_label_set_by_preset_or_name(tmp_path):
    d = NVLABS / V1
    with pytest.raises(ValueError, match="label set 'ade20k' has 150 classes"):
        convert_nvlabs_to_folder(d, tmp_path / "bad", opt_file=d / "opt.txt", label_set_name="ade20k")
    assert not (tmp_path / "bad").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_nvlabs_to_folder(d, tmp_path / "busy", opt_file=d / "opt.txt")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["keep.txt"]
