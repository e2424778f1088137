"""Sparse parameter masks: which adapter entries a domain may change (DESIGN.md section 7).

Every domain's adapter has the same shape (same rank, same target modules), so a mask is a boolean
tensor per adapter parameter. A domain's mask holds the `density` share of each tensor's entries
that matter most for its data, never an entry another serving domain's mask holds: each domain
owns its entries, so adapters trained apart do not overwrite each other and can be active together.

Importance is measured by a short dense warm-up on the domain's data: entries that move the most
under Adam (|theta - theta0|, i.e. the ones whose gradient points the same way step after step)
matter the most. LoRA's B starts at zero, so A has no gradient until B has moved; the warm-up is
what gives A's entries a score. The parameters are then reset and trained under the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK_FILE = "mask.safetensors"


def select(importance: Mapping[str, Any], density: float, taken: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per tensor, the top `density` share of entries by importance, excluding `taken` ones."""
    import torch

    masks = {}
    for name, score in importance.items():
        score = score.detach().float().abs().flatten().clone()
        if taken and name in taken and tuple(taken[name].shape) == tuple(importance[name].shape):
            score[taken[name].flatten().to(score.device)] = -1.0
        free = int((score >= 0).sum())
        k = min(max(1, round(density * score.numel())), free)
        mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        if k > 0:
            mask[torch.topk(score, k).indices] = True
        masks[name] = mask.view(importance[name].shape)
    return masks


def union(masks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Entries held by any of `masks`."""
    out: dict[str, Any] = {}
    for m in masks:
        for name, t in m.items():
            out[name] = t.clone() if name not in out else out[name] | t
    return out


def overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Number of entries both masks hold."""
    return sum(int((a[n] & b[n]).sum()) for n in a.keys() & b.keys())


def count(mask: Mapping[str, Any]) -> tuple[int, int]:
    """(entries held, entries in all)."""
    return sum(int(t.sum()) for t in mask.values()), sum(t.numel() for t in mask.values())


def save(mask: Mapping[str, Any], folder: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(folder) / MASK_FILE
    save_file({n: t.to("cpu", dtype=__import__("torch").uint8).contiguous() for n, t in mask.items()}, str(path))
    return path


def load(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {n: t.bool() for n, t in load_file(str(Path(folder) / MASK_FILE)).items()}


def apply(params: Mapping[str, Any], mask: Mapping[str, Any]) -> list[Any]:
    """Zero the gradient of every entry outside `mask` (hooks on the parameters); returns the handles.

    With zero gradients and no weight decay, Adam leaves those entries exactly where they are.
    """
    handles = []
    for name, p in params.items():
        m = mask[name].to(device=p.device, dtype=p.dtype)
        handles.append(p.register_hook(lambda g, m=m: g * m))
    return handles
