"""Output diversity: mean distance between images generated from one label map with different seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import torch

from spade_core.eval.segmentation import module_device

METRICS = ("lpips", "l1", "feature")


def _stack_draws(images_list: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """K draws of (3, H, W) or (N, 3, H, W) images -> one (K, N, 3, H, W) float tensor."""
    draws = list(images_list.unbind(0)) if isinstance(images_list, torch.Tensor) else list(images_list)
    if len(draws) < 2:
        raise ValueError(f"diversity needs at least 2 images per label map, got {len(draws)}: generate with 2+ seeds")
    draws = [d.unsqueeze(0) if d.dim() == 3 else d for d in draws]
    shapes = {tuple(d.shape) for d in draws}
    if len(shapes) != 1 or draws[0].dim() != 4 or draws[0].shape[1] != 3:
        raise ValueError(
            f"expected draws of equal shape (3, H, W) or (N, 3, H, W), got {sorted(shapes)}: "
            "generate every draw from the same label map at the same size"
        )
    return torch.stack([d.float() for d in draws])


@torch.no_grad()
def mean_pairwise_distance(
    images_list: Sequence[torch.Tensor] | torch.Tensor,
    metric: str = "lpips",
    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fallback: str = "l1",
) -> dict[str, Any]:
    """Mean distance over all pairs of K outputs for the same label map(s), images in [-1, 1].

    Metrics: "lpips" calls `lpips_fn(a, b)` on [-1, 1] images (LPIPS weights are not shipped, so without
    one this falls back to `fallback`); "l1" is the mean absolute pixel difference on the [0, 1] scale;
    "feature" is the L2 distance between `feature_fn` outputs of [0, 1] images (e.g. Inception pool3).
    The result names the metric actually used.
    """
    for name in (metric, fallback):
        if name not in METRICS:
            raise ValueError(f"unknown diversity metric '{name}': use one of {', '.join(METRICS)}")
    draws = _stack_draws(images_list)  # (K, N, 3, H, W)
    used, note = metric, None
    if metric == "lpips" and lpips_fn is None:
        used, note = fallback, f"no lpips_fn given (LPIPS weights are not bundled); used '{fallback}' instead"
    if used == "lpips" and lpips_fn is None:
        raise ValueError("fallback='lpips' needs lpips_fn: pass an LPIPS callable or fallback='l1'")
    if used == "feature" and feature_fn is None:
        raise ValueError("metric 'feature' needs feature_fn (images in [0, 1] -> (N, D) features): pass one or use 'l1'")

    if used in ("feature", "lpips"):
        device = module_device(feature_fn if used == "feature" else lpips_fn)
        draws = draws.to(device) if device is not None else draws
    if used == "feature":
        feats = [feature_fn(((d + 1) / 2).clamp(0, 1)).double().flatten(1).cpu() for d in draws]

    pairs = list(combinations(range(draws.shape[0]), 2))
    total = 0.0
    for i, j in pairs:
        if used == "l1":
            dist = (draws[i] - draws[j]).abs().flatten(1).mean(1) / 2
        elif used == "feature":
            dist = (feats[i] - feats[j]).norm(dim=1)
        else:
            dist = torch.as_tensor(lpips_fn(draws[i], draws[j])).reshape(draws.shape[1], -1).mean(1)
        total += float(dist.double().mean())
    result: dict[str, Any] = {
        "value": total / len(pairs),
        "metric": used,
        "requested_metric": metric,
        "num_draws": int(draws.shape[0]),
        "num_pairs": len(pairs),
    }
    if note:
        result["note"] = note
    return result
