"""Every bad input: one clear line (what, where, what to do), exit 1, and nothing stored is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import doc, write

from kupdate.cli.main import run

GOOD = "Veltrane Robotics is led by CEO Ilse Marsh."


@pytest.fixture
def filled_kb(tiny_kb, tmp_path):
    doc(tmp_path / "good", "good.md", "2025-01-01", GOOD)
    tiny_kb.ingest([tmp_path / "good"])
    path = str(tiny_kb.path)
    tiny_kb.close()
    return path


def fails(capsys, *args: str) -> str:
    code = run(list(args))
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def intact(capsys, kb: str) -> None:
    """The KB still opens and still answers from what it held before."""
    assert run(["search", "Veltrane CEO", "--kb", kb, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [m["text"] for m in found] == [GOOD]


CASES = {
    "missing": (None, "path not found"),
    "empty.txt": ("   \n", "empty"),
    "binary.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin1.txt": (b"ok line\ncaf\xe9 au lait\n", "invalid UTF-8"),
    "bad.jsonl": ('{"text": "fine"}\n{"text": "also fine"}\n{not json\n', "bad.jsonl:3"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_is_refused_and_kb_intact(capsys, filled_kb, tmp_path, name):
    content, expected = CASES[name]
    path = tmp_path / "in" / name
    if content is not None:
        write(path, content)
    line = fails(capsys, "ingest", str(path), "--kb", filled_kb)
    assert expected in line and name in line
    intact(capsys, filled_kb)


def test_bad_file_in_folder_stops_before_writing_anything(capsys, filled_kb, tmp_path):
    write(tmp_path / "in" / "a-good.md", "Orla Marine Institute is based in Bergen.")
    write(tmp_path / "in" / "b-bad.jsonl", "{oops\n")
    line = fails(capsys, "ingest", str(tmp_path / "in"), "--kb", filled_kb)
    assert "b-bad.jsonl:1" in line
    intact(capsys, filled_kb)  # a-good.md was not stored either: all files are checked first


def test_skip_bad_ingests_the_rest_and_reports(capsys, filled_kb, tmp_path):
    write(tmp_path / "in" / "a-good.md", "Orla Marine Institute is based in Bergen.")
    write(tmp_path / "in" / "b-bad.jsonl", "{oops\n")
    assert run(["ingest", str(tmp_path / "in"), "--kb", filled_kb, "--skip-bad", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 1
    assert report["skipped"][0]["path"].endswith("b-bad.jsonl") and "malformed" in report["skipped"][0]["reason"]


def test_unknown_config_key(capsys, filled_kb):
    toml = Path(filled_kb) / "kupdate.toml"
    toml.write_text(toml.read_text().replace("[gate]\n", "[gate]\nthreshhold = 0.5\n"))
    line = fails(capsys, "status", "--kb", filled_kb)
    assert "unknown key 'threshhold'" in line and "kupdate.toml" in line


def test_out_of_range_config_value(capsys, filled_kb):
    toml = Path(filled_kb) / "kupdate.toml"
    kept = toml.read_text()
    toml.write_text(kept.replace("[consolidation]\n", "[consolidation]\npass_slack = 0.5\n"))
    line = fails(capsys, "status", "--kb", filled_kb)
    assert "consolidation.pass_slack must be 0 or at least 1" in line and "0.5" in line
    toml.write_text(kept)
    intact(capsys, filled_kb)


def test_kb_made_with_another_embedder(capsys, filled_kb, monkeypatch):
    monkeypatch.setenv("KUPDATE_EMBEDDER", "all-minilm-l6-v2")
    line = fails(capsys, "search", "Veltrane", "--kb", filled_kb)
    assert "hashing" in line and "all-minilm-l6-v2" in line and "kupdate reindex" in line
    monkeypatch.delenv("KUPDATE_EMBEDDER")
    intact(capsys, filled_kb)


def test_model_path_that_does_not_exist(capsys, filled_kb, tmp_path):
    missing = tmp_path / "no" / "such-model"
    line = fails(capsys, "init", "--kb", str(tmp_path / "kb2"), "--model", str(missing), "--embedder", "hashing")
    assert "model path not found" in line and str(missing) in line
    assert not (tmp_path / "kb2" / "kupdate.toml").exists()  # no half-made KB left behind
    intact(capsys, filled_kb)
