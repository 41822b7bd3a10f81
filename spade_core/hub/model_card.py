"""Model cards for pipeline folders: README.md with Hub front matter, label set, metrics and usage.

A card is rendered from what the folder itself holds (``model_index.json`` with the label set,
``generator/config.json``, the weight headers), so it never disagrees with the weights. Refreshing
a card keeps what only a person can know: the licence, datasets, metrics, the source section, notes
written under the metrics table, and any section of its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..labels import LabelSet
from ..models.generator import UPSAMPLING_LAYERS, native_size
from ..registry import DATASETS
from .folder import (
    CONFIG_NAME,
    DISCRIMINATOR,
    ENCODER,
    GENERATOR,
    MODEL_CARD,
    MODEL_INDEX,
    WEIGHTS_NAME,
    lists_component,
    read_json,
    read_model_index,
)

NVLABS_LICENSE = "cc-by-nc-sa-4.0"
LIBRARY_NAME = "spade"
BASE_TAGS = ("semantic-image-synthesis", "image-to-image", "gan", "spade", "gaugan", "pytorch")
# Built-in label set -> (Hub dataset id, readable name).
METRIC_NAMES = {"fid": "FID (lower is better)", "miou": "mIoU (higher is better)", "accu": "pixel accuracy"}
_SECTION = re.compile(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", re.DOTALL | re.MULTILINE)
# Sections a card render writes itself (a "Label set `name`" title starts with the first entry).
_GENERATED_SECTIONS = ("Label set", "Source", "Model", "Metrics", "How to use", "License", "Citation")
_NO_METRICS = "Not measured yet."
_CITATION = """@inproceedings{park2019SPADE,
  title={Semantic Image Synthesis with Spatially-Adaptive Normalization},
  author={Park, Taesung and Liu, Ming-Yu and Wang, Ting-Chun and Zhu, Jun-Yan},
  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition},
  year={2019}
}"""

__all__ = [
    "NVLABS_LICENSE",
    "read_model_card_metadata",
    "render_model_card",
    "write_model_card",
]


def _weight_count(weights: Path) -> int | None:
    """Number of stored values in a safetensors file, read from its header only."""
    if not weights.is_file():
        return None
    try:
        from safetensors import SafetensorError, safe_open

        with safe_open(str(weights), "pt") as f:
            total = 0
            for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                n = 1
                for side in f.get_slice(key).get_shape():
                    n *= side
                total += n
            return total
    except (SafetensorError, OSError):  # a broken file is reported by the loader, not by the card
        return None


def _hub_dataset(label_set_name: str) -> tuple[str | None, str]:
    """(Hub dataset id, display name) of the registered dataset with this label set; (None, the name) otherwise."""
    for entry in DATASETS.values():
        if entry.label_set == label_set_name and entry.hub_dataset_id:
            return entry.hub_dataset_id, entry.display_name
    return None, label_set_name


def read_model_card_metadata(folder: str | Path) -> dict[str, Any]:
    """What a refresh keeps from ``folder/README.md``: license, datasets, tags, metrics, source text."""
    path = Path(folder) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = ModelCard.load(path)
    except (ValueError, OSError, yaml.YAMLError):  # an unreadable card is simply replaced
        return {}
    data = card.data
    kept: dict[str, Any] = {}
    if data.license:
        kept["license"] = data.license
    if data.datasets:
        kept["datasets"] = [data.datasets] if isinstance(data.datasets, str) else list(data.datasets)
    if data.tags:
        kept["tags"] = [t for t in data.tags if t not in BASE_TAGS]
    if data.eval_results:
        kept["metrics"] = {r.metric_type: r.metric_value for r in data.eval_results}
    extra = []
    for title, body in _SECTION.findall(card.text):
        title = title.strip()
        if title == "Source" and body.strip():
            kept["source"] = body.strip()
        elif title == "Metrics":
            note = "\n".join(line for line in body.splitlines() if not line.startswith("|") and line != _NO_METRICS)
            if note.strip():
                kept["metrics_note"] = note.strip()
        elif not title.startswith(_GENERATED_SECTIONS):
            extra.append(f"## {title}\n\n{body.strip()}")
    if extra:
        kept["extra_sections"] = extra
    return kept


def _label_section(label_set: LabelSet) -> list[str]:
    lines = [f"## Label set `{label_set.name}`", ""]
    if label_set.description:
        lines += [label_set.description, ""]
    first = label_set.raw_id_offset
    mapping = f"raw ids {first}..{first + label_set.label_nc - 1} are classes 0..{label_set.label_nc - 1}"
    if label_set.dontcare_raw_ids:
        mapping += f"; raw {', '.join(map(str, label_set.dontcare_raw_ids))} is don't-care"
    lines += [
        f"- {label_set.label_nc} classes"
        + (f", plus a don't-care class (index {label_set.label_nc}, drawn black)" if label_set.contain_dontcare_label else ""),
        f"- single-channel label maps (PIL mode L/I) hold dataset ids: {mapping}",
        "- colour maps (RGB) use the palette below; palette images (mode P) hold class indices",
        f"- instance maps: {'used (optional input; without one the edges come from the label map)' if label_set.use_instance else 'not used'}",
        "",
        "<details><summary>Classes and colours</summary>",
        "",
        "| index | class | colour |",
        "| ---: | --- | --- |",
    ]
    lines += [f"| {i} | {name} | `#{r:02X}{g:02X}{b:02X}` |" for i, name, (r, g, b) in label_set.legend()]
    return lines + ["", "</details>", ""]


def render_model_card(
    label_set: LabelSet | dict[str, Any],
    generator_config: dict[str, Any],
    *,
    has_encoder: bool = False,
    has_discriminator: bool = False,
    license: str = "other",
    source: str | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    repo_id: str | None = None,
    num_weights: int | None = None,
    tags: list[str] | None = None,
    metrics_note: str | None = None,
    extra_sections: list[str] | None = None,
) -> str:
    """The README.md text (YAML front matter + Markdown) of one pipeline folder; ``metrics_note``
    goes under the metrics, ``extra_sections`` (Markdown, each from its "## " title) before the licence."""
    if isinstance(label_set, dict):
        label_set = LabelSet.from_dict(label_set)
    cfg = generator_config
    dataset_id, dataset_name = _hub_dataset(label_set.name)
    if datasets is None:
        datasets = [dataset_id] if dataset_id else []
    name = repo_id.split("/")[-1] if repo_id else f"spade-{label_set.name}"
    eval_results = [
        EvalResult(
            task_type="image-to-image",
            dataset_type=datasets[0] if datasets else label_set.name,
            dataset_name=dataset_name,
            metric_type=key,
            metric_value=value,
        )
        for key, value in (metrics or {}).items()
    ]
    data = ModelCardData(
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag="image-to-image",
        tags=list(BASE_TAGS) + [t for t in (tags or []) if t not in BASE_TAGS],
        datasets=datasets or None,
        metrics=list(metrics) if metrics else None,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    height, width = native_size(
        int(cfg.get("crop_size", 256)), float(cfg.get("aspect_ratio", 1.0)), cfg.get("num_upsampling_layers", "normal")
    )
    vae = bool(cfg.get("use_vae", False))
    multiple = 2 ** UPSAMPLING_LAYERS[cfg.get("num_upsampling_layers", "normal")]
    size_note = "fixed: the style code maps to this layout" if vae else f"any multiple of {multiple} works"
    repo = repo_id or "path/to/this/folder"
    if source is None:
        source = "Converted from an NVlabs/SPADE checkpoint." if license == NVLABS_LICENSE else "Not recorded."
    lines = [
        f"# {name}",
        "",
        "SPADE (Park et al., CVPR 2019; GauGAN) semantic image synthesis: it turns a segmentation map "
        f"of the {label_set.label_nc} classes below into a {width}x{height} image"
        + (", optionally in the style of a reference photo." if has_encoder else "."),
        "",
        "## Source",
        "",
        source,
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| native size (W x H) | {width} x {height} ({size_note}) |",
        f"| input channels | {label_set.semantic_nc} (classes, don't-care, instance edges) |",
        f"| generator width (ngf) | {cfg.get('ngf')} |",
        f"| upsampling | {cfg.get('num_upsampling_layers', 'normal')} |",
        f"| normalization | {'spectral ' if cfg.get('spectral_norm', True) else ''}SPADE over {cfg.get('param_free_norm', 'syncbatch')} norm |",
        f"| style encoder (VAE) | {'yes' if has_encoder else ('VAE generator, random styles only' if vae else 'no')} |",
        f"| discriminator included | {'yes (for fine-tuning)' if has_discriminator else 'no'} |",
    ]
    if num_weights:
        lines.append(f"| generator weights | {num_weights / 1e6:.2f} M values |")
    lines.append("")
    lines += _label_section(label_set)
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | ---: |"]
        lines += [f"| {METRIC_NAMES.get(k, k)} | {v} |" for k, v in metrics.items()]
    else:
        lines.append(_NO_METRICS)
    if metrics_note:
        lines += ["", metrics_note]
    style_py = '\nstyled = pipe("segmap.png", style_image="photo.jpg", seed=0).images[0]' if has_encoder else ""
    style_cli = " --style photo.jpg" if has_encoder else ""
    lines += [
        "",
        "## How to use",
        "",
        "```bash",
        "pip install spade",
        f"spade synthesize segmap.png --model {repo} --seed 0{style_cli} --out image.png",
        "```",
        "",
        "```python",
        "from spade_core import SPADEPipeline",
        "",
        f'pipe = SPADEPipeline.from_pretrained("{repo}")',
        f'image = pipe("segmap.png", seed=0).images[0]{style_py}',
        "image.save(\"image.png\")",
        "```",
        "",
    ]
    for section in extra_sections or []:
        lines += [section.strip(), ""]
    lines += [
        "## License",
        "",
    ]
    if license == NVLABS_LICENSE:
        lines.append(
            "The weights come from NVlabs/SPADE, released under CC BY-NC-SA 4.0 (non-commercial, share-alike); "
            "this conversion keeps that licence."
        )
    else:
        lines.append(f"`{license}`.")
    lines += ["", "## Citation", "", "```bibtex", _CITATION, "```", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def write_model_card(
    folder: str | Path,
    *,
    license: str | None = None,
    source: str | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    repo_id: str | None = None,
    tags: list[str] | None = None,
) -> Path:
    """Write or refresh ``folder/README.md``; arguments left None keep the existing card's values."""
    folder = Path(folder)
    index = read_model_index(folder)
    if not isinstance(index.get("label_set"), dict):
        raise ValueError(f"{folder / MODEL_INDEX} holds no label set: re-save the pipeline with SPADEPipeline.save_pretrained")
    generator_config = read_json(folder / GENERATOR / CONFIG_NAME, "write the pipeline folder with save_pretrained first")
    kept = read_model_card_metadata(folder)
    text = render_model_card(
        index["label_set"],
        generator_config,
        has_encoder=lists_component(index, ENCODER),
        has_discriminator=(folder / DISCRIMINATOR / CONFIG_NAME).is_file(),
        license=license or kept.get("license") or "other",
        source=source or kept.get("source"),
        datasets=datasets if datasets is not None else kept.get("datasets"),
        metrics=metrics if metrics is not None else kept.get("metrics"),
        repo_id=repo_id,
        num_weights=_weight_count(folder / GENERATOR / WEIGHTS_NAME),
        tags=tags if tags is not None else kept.get("tags"),
        metrics_note=kept.get("metrics_note"),
        extra_sections=kept.get("extra_sections"),
    )
    path = folder / MODEL_CARD
    path.write_text(text, encoding="utf-8")
    return path
