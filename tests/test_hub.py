"""Hub I/O: loading through a real HF cache offline, folder validation, model cards, publishing."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import NVLABS
from safetensors.torch import load_file, save_file

from spade_core.hub.model_card import (
    NVLABS_LICENSE,
    read_model_card_metadata,
    write_model_card,
)
from spade_core.hub.publish import push_folder, upload_plan
from spade_core.labels import LabelSet, get_label_set
from spade_core.models import SPADEGenerator
from spade_core.pipeline import SPADEPipeline, check_pipeline_folder

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LAYOUT = torch.arange(4).repeat_interleave(16)[:, None].expand(64, 64)[None]  # (1, 64, 64) bands of classes 0..3


def tiny_pipeline() -> SPADEPipeline:
    torch.manual_seed(0)
    gen = SPADEGenerator.from_preset(
        "coco", label_nc=5, no_instance=True, ngf=4, crop_size=64, spade_hidden_nc=16, param_free_norm="instance"
    )
    labels = LabelSet(
        name="tiny",
        class_names=("sky", "grass", "sea", "rock", "tree"),
        palette=((0, 0, 255), (0, 255, 0), (0, 128, 255), (128, 128, 128), (0, 100, 0)),
        contain_dontcare_label=True,
        use_instance=False,
        dontcare_raw_ids=(255,),
    )
    return SPADEPipeline(generator=gen, label_set=labels)


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def build_hf_cache(folder: Path, cache: Path, repo_id: str) -> Path:
    """Lay out ``folder`` exactly as huggingface_hub caches a download: blobs, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    folder = tmp_path_factory.mktemp("pipe")
    pipe = tiny_pipeline()
    pipe.save_pretrained(folder)
    return folder, pipe(LAYOUT, output_type="pt").images


def test_repo_id_loads_offline_from_a_real_hf_cache(saved, tmp_path, monkeypatch):
    folder, expected = saved
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    snapshot = build_hf_cache(folder, tmp_path / "hub", "someone/spade-tiny")
    assert (snapshot / "generator" / "diffusion_pytorch_model.safetensors").is_symlink()
    pipe = SPADEPipeline.from_pretrained("someone/spade-tiny", cache_dir=tmp_path / "hub")
    assert torch.equal(pipe(LAYOUT, output_type="pt").images, expected)
    assert pipe.name_or_path == "someone/spade-tiny"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    by_env = SPADEPipeline.from_pretrained("someone/spade-tiny", revision="main")
    assert torch.equal(by_env(LAYOUT, output_type="pt").images, expected)
    assert by_env.label_set.class_names == ("sky", "grass", "sea", "rock", "tree")


def test_uncached_repo_id_offline_says_how_to_fix_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nor in the Hugging Face cache") as err:
        SPADEPipeline.from_pretrained("someone/not-downloaded", cache_dir=tmp_path)
    message = str(err.value)
    assert "offline" in message and "hf download someone/not-downloaded" in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="not found"):
        SPADEPipeline.from_pretrained("./no/such/folder/here")


def test_folders_that_are_not_pipelines_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="spade convert-nvlabs"):
        SPADEPipeline.from_pretrained(NVLABS / "v1_normal_syncbatch_dontcare")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="not a SPADEPipeline"):
        SPADEPipeline.from_pretrained(tmp_path)


def _copy(folder: Path, dest: Path) -> Path:
    for path in folder.rglob("*"):
        if path.is_file():
            target = dest / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dest


def test_weights_that_do_not_match_the_config_name_the_keys(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "p")
    weights = folder / "generator" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["fc.weight"]
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"1 missing keys \(fc\.weight\)"):
        SPADEPipeline.from_pretrained(folder)
    config_path = folder / "generator" / "config.json"
    _copy(saved[0], folder)
    config = json.loads(config_path.read_text())
    config["ngf"] = 8
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not match config.json .*shape mismatches.*fc\.weight"):
        check_pipeline_folder(folder)


def test_truncated_or_corrupt_safetensors_is_reported(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "p")
    weights = folder / "generator" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        SPADEPipeline.from_pretrained(folder)
    weights.write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        SPADEPipeline.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors is missing"):
        SPADEPipeline.from_pretrained(folder)


def test_model_card_front_matter_label_set_and_usage(saved):
    readme = saved[0] / "README.md"
    meta = front_matter(readme)
    assert meta["license"] == "other" and meta["library_name"] == "spade"
    assert meta["pipeline_tag"] == "image-to-image"
    assert {"semantic-image-synthesis", "gan", "spade", "image-to-image"} <= set(meta["tags"])
    text = readme.read_text()
    assert "## Label set `tiny`" in text and "| 1 | grass | `#00FF00` |" in text
    assert 'SPADEPipeline.from_pretrained("path/to/this/folder")' in text
    assert "spade synthesize segmap.png" in text and "--style" not in text


def test_model_card_refresh_keeps_licence_metrics_and_source(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "p")
    write_model_card(folder, license="mit", metrics={"fid": 31.5}, source="Trained on my garden photos.")
    write_model_card(folder, repo_id="me/garden")
    meta = front_matter(folder / "README.md")
    assert meta["license"] == "mit" and meta["metrics"] == ["fid"]
    assert meta["model-index"][0]["results"][0]["metrics"][0] == {"type": "fid", "value": 31.5}
    text = (folder / "README.md").read_text()
    assert "Trained on my garden photos." in text and "| FID (lower is better) | 31.5 |" in text
    assert 'from_pretrained("me/garden")' in text
    assert read_model_card_metadata(folder)["license"] == "mit"


def test_model_card_refresh_keeps_hand_written_notes_and_sections(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "p")
    write_model_card(folder, metrics={"miou": 34.1})
    readme = folder / "README.md"
    text = readme.read_text()
    text = text.replace("| mIoU (higher is better) | 34.1 |\n", "| mIoU (higher is better) | 34.1 |\n\nScored on 80 held-out layouts.\n")
    text = text.replace("## License", "## Limitations\n\nTextures stay soft.\n\n## License")
    readme.write_text(text)
    write_model_card(folder, metrics={"miou": 36.0}, repo_id="me/garden")
    refreshed = readme.read_text()
    assert "| mIoU (higher is better) | 36.0 |" in refreshed and "34.1" not in refreshed
    assert refreshed.count("Scored on 80 held-out layouts.") == 1
    assert refreshed.index("Scored on 80") < refreshed.index("## How to use")
    assert refreshed.count("## Limitations\n\nTextures stay soft.") == 1
    assert refreshed.index("## Limitations") < refreshed.index("## License")
    write_model_card(folder, repo_id="me/garden")  # refreshing again changes nothing
    assert readme.read_text() == refreshed


def test_built_in_label_set_names_its_dataset(tmp_path):
    gen = SPADEGenerator.from_preset("ade20k", ngf=1, crop_size=64, spade_hidden_nc=8, param_free_norm="instance")
    pipe = SPADEPipeline(generator=gen, label_set=get_label_set("ade20k"))
    pipe.save_pretrained(tmp_path, license=NVLABS_LICENSE)
    meta = front_matter(tmp_path / "README.md")
    assert meta["license"] == "cc-by-nc-sa-4.0" and meta["datasets"] == ["ade20k"]
    assert "CC BY-NC-SA 4.0" in (tmp_path / "README.md").read_text()
    assert SPADEPipeline.from_pretrained(tmp_path)._card["license"] == NVLABS_LICENSE


def test_push_dry_run_lists_files_and_uploads_nothing(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "p")
    (folder / "notes.pth").write_bytes(b"pickle")
    plan = push_folder(folder, "me/spade-tiny", dry_run=True)
    names = [name for name, _ in plan.files]
    assert plan.dry_run and plan.url is None and "notes.pth" not in names
    assert names == [
        "README.md",
        "generator/config.json",
        "generator/diffusion_pytorch_model.safetensors",
        "model_index.json",
    ]
    assert plan.total_bytes == sum((folder / n).stat().st_size for n in names)
    with pytest.raises(ValueError, match="offline mode"):
        push_folder(folder, "me/spade-tiny")
    with pytest.raises(ValueError, match="OWNER/NAME"):
        upload_plan(folder, "no-owner")


def test_pipeline_push_to_hub_dry_run_writes_a_card_for_the_repo(saved):
    plan = SPADEPipeline.from_pretrained(saved[0]).push_to_hub("me/spade-tiny", dry_run=True)
    assert plan.dry_run and plan.repo_id == "me/spade-tiny"
    assert {"README.md", "model_index.json", "generator/config.json"} <= {name for name, _ in plan.files}


def test_hub_never_imports_the_pipeline_or_the_cli():
    hub = Path(__file__).resolve().parents[1] / "spade_core" / "hub"
    later = {"pipeline", "cli", "demo", "spade_nodes"}
    for source in hub.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert not later & set(module.split(".")), (source.name, module)
