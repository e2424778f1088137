"""The command line: --help is instant, commands print JSON, bad input is one line and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import doc

from kupdate.cli.main import run


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def kb_path(tiny_kb):
    path = str(tiny_kb.path)
    tiny_kb.close()
    return path


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nfrom kupdate.cli.main import run\n"
        "try:\n    run(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'peft', 'sentence_transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "ingest" in out and "ask" in out


def test_ingest_ask_search_status_json(capsys, kb_path, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "old.md", "2023-03-14", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "new.md", "2025-02-10", "Veltrane Robotics is led by CEO Ilse Marsh.")
    code, out, _ = cli(capsys, "ingest", str(docs), "--kb", kb_path, "--json")
    assert code == 0 and json.loads(out)["added"] == 2

    code, out, _ = cli(capsys, "ingest", str(docs), "--kb", kb_path, "--json")
    assert json.loads(out)["added"] == 0 and json.loads(out)["duplicates"] == 2

    code, out, _ = cli(capsys, "ask", "Who is the CEO of Veltrane Robotics?", "--kb", kb_path, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["gate"]["open"] is True
    assert answer["memories"][0]["text"].endswith("Ilse Marsh.") and not answer["memories"][0]["outdated"]
    assert [m["outdated"] for m in answer["memories"][1:]] == [True]  # the older version, read and outdated
    assert {r["id"] for r in answer["readings"]} == {m["id"] for m in answer["memories"]}

    code, out, _ = cli(capsys, "ask", "Who is the CEO of Veltrane Robotics?", "--kb", kb_path, "--no-memory", "--json")
    assert json.loads(out)["gate"]["open"] is False and json.loads(out)["memories"] == []

    code, out, _ = cli(capsys, "search", "Veltrane CEO", "--kb", kb_path, "--json")
    # search ranks both versions; which one is current is settled per question, by ask
    assert len(json.loads(out)) == 2 and not any(m["outdated"] for m in json.loads(out))

    code, out, _ = cli(capsys, "status", "--kb", kb_path, "--json")
    status = json.loads(out)
    assert status["knowledge"] == 2 and status["exemplars"] == 6 and status["domains"] == {"orgs": 2}


def test_kb_from_environment(capsys, kb_path, monkeypatch):
    monkeypatch.setenv("KUPDATE_KB", kb_path)
    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["kb"] == kb_path


def test_usage_error_exits_2(capsys):
    code, _, err = cli(capsys, "ask")
    assert code == 2 and "Missing argument" in err


def test_milvus_backend_end_to_end(capsys, tmp_path, tiny_llm_dir, exemplars_file):
    kb = str(tmp_path / "mkb")
    code, out, err = cli(capsys, "init", "--kb", kb, "--model", str(tiny_llm_dir), "--embedder", "hashing",
                         "--exemplars", str(exemplars_file), "--backend", "milvus",
                         "--milvus-uri", str(tmp_path / "milvus.db"), "--json")
    assert code == 0, err
    assert 'backend = "milvus"' in (tmp_path / "mkb" / "kupdate.toml").read_text()
    doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics is led by CEO Ilse Marsh.")
    code, out, err = cli(capsys, "ingest", str(tmp_path / "docs"), "--kb", kb, "--json")
    assert code == 0 and json.loads(out)["added"] == 1, err
    code, out, err = cli(capsys, "ask", "Who is the CEO of Veltrane Robotics?", "--kb", kb, "--json")
    answer = json.loads(out)
    assert answer["gate"]["open"] and answer["memories"][0]["text"].endswith("Ilse Marsh.")
