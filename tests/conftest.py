"""Shared fixtures. Tests never touch the network or the user's home."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The SmolLM2 conversion is shared across tests and runs (the Makefile sets the same folder).
os.environ.setdefault("KUPDATE_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "models"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

EXEMPLARS = [
    "What is the boiling point of water at sea level?",
    "How many continents are there?",
    "What is 7 times 8?",
    "Who wrote Romeo and Juliet?",
    "The chemical symbol for gold is",
    "What is photosynthesis?",
]


@pytest.fixture(autouse=True)
def _isolated_kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default KB and XDG data dir at tmp_path so no test touches ~/."""
    monkeypatch.setenv("KUPDATE_KB", str(tmp_path / "kb"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for var in ("KUPDATE_MODEL", "KUPDATE_EMBEDDER", "KUPDATE_DEVICE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def exemplars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exemplars") / "exemplars.jsonl"
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in EXEMPLARS))
    return path


@pytest.fixture
def tiny_kb(tmp_path: Path, tiny_llm_dir: Path, exemplars_file: Path):
    """A real KB with the hashing embedder and a tiny Llama: the whole path, in well under a second."""
    from kupdate import KnowledgeBase
    from kupdate.config import dump_config

    kb = KnowledgeBase.init(tmp_path / "kb", model=str(tiny_llm_dir), embedder="hashing",
                            exemplars=exemplars_file)
    # The hashing embedder spreads cosines lower than MiniLM: two versions of one sentence meet at
    # ~0.7 and same-shape sentences about other entities at ~0.64.
    kb.config.retrieval.same_fact_similarity = 0.68
    (kb.path / "kupdate.toml").write_text(dump_config(kb.config))
    yield kb
    kb.close()


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def doc(folder: Path, name: str, date: str, body: str, domain: str = "orgs") -> Path:
    return write(folder / name, f"---\ndate: {date}\ndomain: {domain}\n---\n{body}\n")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """URL of a Milvus server for the session: milvus-lite's gRPC server in a thread of this process.

    Stores reach it by URL as they would a Milvus standalone or cluster, and other processes can
    connect too. Tests sharing it stay isolated: each store's collections are named by its store id.
    """
    try:
        from milvus_lite.adapter.grpc.server import start_server_in_thread
    except ImportError:
        pytest.skip("pip install pymilvus milvus-lite")
    server, db, port = start_server_in_thread(str(tmp_path_factory.mktemp("milvus-server")), port=0)
    yield f"http://127.0.0.1:{port}"
    server.stop(grace=0)
    db.close()


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray instance (2 CPUs) for the whole session; its address lets subprocesses join it.

    kupdate's `ray` engine uses an instance already started in the process as it is.
    """
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             logging_level="warning")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
