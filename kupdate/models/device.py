"""Where models run: device and dtype choice, plus quiet loading.

torch is imported inside the functions so `import kupdate.models` stays cheap (the CLI's
`--help` and the memory-store-only paths never pay for torch).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kupdate.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

_AUTO = {"", "auto"}


def pick_device(requested: str | None = None) -> str:
    """Return the torch device string to run on.

    None / "auto" -> "cuda" when a CUDA GPU is visible, else "cpu". An explicit request
    ("cpu", "cuda", "cuda:1", "mps") is honoured, but a GPU request on a machine without one
    raises ConfigError rather than silently running 50x slower on the CPU.
    """
    import torch

    req = (requested or "").strip().lower()
    if req in _AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r} requested but no CUDA GPU is visible to torch; "
                'use device = "cpu" or "auto"'
            )
        return req
    if req == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f'device {requested!r} requested but MPS is not available; use "cpu" or "auto"')
        return "mps"
    raise ConfigError(f'unknown device {requested!r}; use "auto", "cpu", "cuda", "cuda:N" or "mps"')


def pick_dtype(device: str) -> torch.dtype:
    """bfloat16 on CUDA (half the memory, same range as float32), float32 everywhere else.

    CPU bf16 matmuls are slow on most machines and fp16 on CPU is worse, so the CPU stays at
    float32. Pre-Ampere GPUs have no fast bf16; they get float16 instead.
    """
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' tqdm bars ("Loading weights", "Writing model shards") for a block.

    Library code must not write to the terminal; a 0.3 s cached load flashing a progress bar on
    every CLI call is noise. The previous setting is restored so a caller who enabled bars
    (e.g. a notebook) keeps them afterwards.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
