"""Jupyter: the kupdate kernel (install, list, run %%ask, remove), the magics, and the rich display."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import doc

from kupdate.cli.main import run

QUESTION = "Who is the CEO of Veltrane Robotics?"
FRESH = "Veltrane Robotics is led by CEO Ilse Marsh."
STALE = "Veltrane Robotics is led by CEO Tomas Greel."


@pytest.fixture
def kb(tiny_kb, tmp_path):
    """The tiny KB holding an older and a newer statement of the same fact."""
    docs = tmp_path / "docs"
    doc(docs, "old.md", "2023-03-14", STALE)
    doc(docs, "new.md", "2025-02-10", FRESH)
    tiny_kb.ingest([docs])
    return tiny_kb


@pytest.fixture
def jupyter_home(tmp_path, monkeypatch) -> Path:
    """Jupyter and IPython state (kernelspecs, connection files, history) under tmp_path, never ~/."""
    home = tmp_path / "jupyter"
    home.mkdir()
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(home / "ipython"))
    return home


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def outputs_of(kc, code: str) -> tuple[dict, list[dict]]:
    """Run `code` in the kernel; the execute reply and the iopub output messages."""
    msgs: list[dict] = []
    reply = kc.execute_interactive(code, timeout=180, output_hook=msgs.append)
    return reply["content"], [m for m in msgs if m["msg_type"] in ("execute_result", "display_data", "stream")]


# -- (a) the kernel ------------------------------------------------------------------------------
def test_kernel_install_list_run_ask_remove(kb, jupyter_home, capsys):
    from jupyter_client.manager import start_new_kernel

    kb_path = str(kb.path)
    kb.close()  # the kernel process opens the KB itself
    code, out, _ = cli(capsys, "kernel", "install", "--user", "--kb", kb_path, "--name", "kupdate-test", "--json")
    assert code == 0
    info = json.loads(out)
    assert Path(info["path"]).is_relative_to(jupyter_home)
    spec = json.loads((Path(info["path"]) / "kernel.json").read_text())
    assert spec["argv"][1:] == ["-m", "kupdate.jupyter.kernel", "-f", "{connection_file}"]
    assert spec["env"]["KUPDATE_KB"] == kb_path

    code, out, _ = cli(capsys, "kernel", "list", "--json")
    assert code == 0 and {k["name"]: k["kb"] for k in json.loads(out)}["kupdate-test"] == kb_path
    code, out, _ = cli(capsys, "kernel", "list")
    assert "kupdate-test" in out and kb_path in out

    km, kc = start_new_kernel(kernel_name="kupdate-test", startup_timeout=120)
    try:
        reply, msgs = outputs_of(kc, "print(type(kb).__name__, kb.path)")
        assert reply["status"] == "ok" and f"KnowledgeBase {kb_path}" in msgs[0]["content"]["text"]

        reply, msgs = outputs_of(kc, f"%%ask\n{QUESTION}")
        assert reply["status"] == "ok"
        [result] = [m["content"]["data"] for m in msgs if m["msg_type"] == "execute_result"]
        page, text = result["text/html"], result["text/plain"]
        assert "gate open" in page and "Ilse Marsh" in page and "2025-02-10" in page and "new.md" in page
        assert f"<s>{STALE}</s>" in page and "outdated" in page
        assert "[1] 2025-02-10 new.md: " + FRESH in text

        reply, msgs = outputs_of(kc, "%kupdate open /no/such/kb")
        err = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")
        assert reply["status"] == "error" and "Traceback" not in err
        assert err.startswith("UsageError: no knowledge base at /no/such/kb") and len(err.strip().splitlines()) == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    code, out, _ = cli(capsys, "kernel", "remove", "kupdate-test")
    assert code == 0 and not Path(info["path"]).exists()
    code, out, _ = cli(capsys, "kernel", "list", "--json")
    assert "kupdate-test" not in {k["name"] for k in json.loads(out)}
    code, _, err = cli(capsys, "kernel", "remove", "kupdate-test")
    assert code == 1 and err.startswith("Error: no kupdate kernel named 'kupdate-test'")


def test_kernel_install_refuses_a_missing_kb_and_a_bad_name(jupyter_home, tmp_path, capsys):
    code, _, err = cli(capsys, "kernel", "install", "--user", "--kb", str(tmp_path / "nothing"))
    assert code == 1 and "no knowledge base at" in err and "kupdate init" in err
    code, _, err = cli(capsys, "kernel", "install", "--user", "--name", "my kernel!")
    assert code == 1 and "invalid kernel name" in err
    assert not (jupyter_home / "data" / "kernels").exists()


# -- (b) the rich display ------------------------------------------------------------------------
def test_answer_html_lists_citations_with_dates_and_strikes_the_outdated(kb):
    answer = kb.ask(QUESTION)
    page = answer._repr_html_()
    rows = re.findall(r'<tr class="(kupdate-memory[^"]*)".*?</tr>', page, re.S)
    assert rows == ["kupdate-memory", "kupdate-memory kupdate-memory-outdated"]
    fresh_row, stale_row = re.findall(r'<tr class="kupdate-memory.*?</tr>', page, re.S)
    assert "2025-02-10" in fresh_row and "new.md" in fresh_row and FRESH in fresh_row and "<s>" not in fresh_row
    assert "2023-03-14" in stale_row and "old.md" in stale_row and f"<s>{STALE}</s>" in stale_row
    assert "outdated" in stale_row
    assert "gate open" in page and answer.answer.split()[0] in page
    text = str(answer)
    assert text.startswith(answer.answer) and "gate open" in text
    assert "[2] OUTDATED 2023-03-14 old.md: " + STALE in text


def test_display_escapes_ingested_text_and_questions(tiny_kb, tmp_path):
    # Tags are markup and go at ingest; escaped ones are text, and the page must escape them again.
    hostile = 'Veltrane Robotics is led by CEO &lt;script&gt;alert("x")&lt;/script&gt; Ilse Marsh.'
    doc(tmp_path / "docs", "a&b.md", "2025-02-10", hostile)
    tiny_kb.ingest([tmp_path / "docs"])
    answer = tiny_kb.ask(QUESTION + " <img src=x onerror=alert(1)>")
    assert answer.memories, "the memory should be cited"
    page = answer._repr_html_()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "a&amp;b.md" in page

    from kupdate.jupyter.display import SearchResults, Table

    table = Table(["question", "answer"], [[answer.question, hostile]])._repr_html_()
    assert "<script>" not in table and "<img" not in table and "&lt;img src=x" in table

    found = SearchResults(tiny_kb.search("Veltrane CEO"), query="<b>Veltrane</b>")
    page = found._repr_html_()
    assert "<script>" not in page and "<b>Veltrane" not in page and "&lt;b&gt;Veltrane" in page
    assert "2025-02-10" in page and "#" in str(found)


# -- (c) %load_ext kupdate in plain IPython --------------------------------------------------------
@pytest.fixture
def shell(jupyter_home):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=config)
    yield sh
    bound = sh.user_ns.get("kb")
    if bound is not None:
        bound.close()
    InteractiveShell.clear_instance()


def run_cell(shell, capsys, code: str) -> tuple[object, str, str]:
    result = shell.run_cell(code)
    out, err = capsys.readouterr()
    return result, out, err


def test_load_ext_magics_ask_search_status_ingest_in_ipython(kb, shell, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUPDATE_KB", str(kb.path))
    result, _, _ = run_cell(shell, capsys, "%load_ext kupdate")
    assert result.success

    result, out, _ = run_cell(shell, capsys, f"%kupdate ask {QUESTION}")
    assert result.success
    assert "gate open" in out and "[1] 2025-02-10 new.md: " + FRESH in out
    assert "[2] OUTDATED 2023-03-14 old.md: " + STALE in out
    assert type(shell.user_ns["kb"]).__name__ == "KnowledgeBase"  # opened from KUPDATE_KB

    result, out, _ = run_cell(shell, capsys, f"%%ask --no-memory\n{QUESTION}")
    assert result.success and "gate shut" in out and "new.md" not in out
    result, out2, _ = run_cell(shell, capsys, f"%kupdate ask --no-memory --no-adapter {QUESTION}")
    assert result.success and out2 == out  # no adapter serves yet: the same base-model answer

    result, out, _ = run_cell(shell, capsys, "%kupdate search -k 5 Veltrane CEO")
    assert result.success and "Tomas Greel" in out and "Ilse Marsh" in out

    result, out, _ = run_cell(shell, capsys, "%kupdate status")
    assert "records: 2 knowledge" in out

    shell.user_ns["extra"] = str(doc(tmp_path / "more", "orla.md", "2024-05-01", "Orla Institute is in Bergen."))
    result, out, _ = run_cell(shell, capsys, "%kupdate ingest {extra}")  # IPython expands {extra}
    assert result.success and "1 files, 1 documents, 1 chunks: 1 added" in out


def test_magic_errors_are_one_line(kb, shell, capsys):
    shell.user_ns["kb"] = kb  # the notebook's own `kb` wins over KUPDATE_KB
    run_cell(shell, capsys, "%load_ext kupdate")
    cases = {
        "%kupdate frobnicate": "unknown verb 'frobnicate'",
        "%kupdate ask": "no question given",
        "%kupdate ask --bogus What?": "unknown option --bogus",
        "%%ask\n   \n": "no question given",
        "%kupdate ingest /no/such/file.md": "/no/such/file.md",
        "%kupdate ask --as-of yesterday Who?": "--as-of",
        "%kupdate consolidate --domain nosuch": "no current records in domain 'nosuch'",
        "%kupdate consolidate --every 6h": "unrecognized arguments: --every",
    }
    for code, message in cases.items():
        result, out, err = run_cell(shell, capsys, code)
        assert not result.success, code
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
        assert message in err, (code, err)


def test_consolidate_magic_prints_why_nothing_was_consolidated(kb, shell, capsys):
    shell.user_ns["kb"] = kb
    run_cell(shell, capsys, "%load_ext kupdate")
    # Two versions of one fact in domain orgs, so one record to learn; the policy wants 20.
    result, out, _ = run_cell(shell, capsys, "run = %kupdate consolidate --if-due")
    assert result.success
    assert out.strip() == "orgs: not consolidated (1 new record, needs 20)"
    run = shell.user_ns["run"]
    assert run.reports == [] and run.skipped == {"orgs": "1 new record, needs 20"}
    assert not (kb.path / "adapters" / "orgs").exists()  # nothing was trained
    # As a cell's value, the run shows as one line, not its full reports.
    result, out, _ = run_cell(shell, capsys, "%kupdate consolidate --if-due")
    assert result.success and type(result.result).__name__ == "ConsolidationRun"
    assert "<ConsolidationRun: 0 trained (0 promoted, 0 rejected), 1 skipped" in out


def test_consolidate_magic_on_an_empty_kb_says_there_is_nothing(tiny_kb, shell, capsys):
    shell.user_ns["kb"] = tiny_kb
    run_cell(shell, capsys, "%load_ext kupdate")
    result, out, _ = run_cell(shell, capsys, "%kupdate consolidate")
    assert result.success and "nothing to consolidate: no domain holds knowledge records" in out


def test_consolidation_lines_say_version_status_recall_locality_and_time():
    from kupdate.consolidate.run import ConsolidationRun
    from kupdate.jupyter.display import consolidation_text

    def report(status, before, after, reason):
        return {"domain": "cf", "version": "v0003", "status": status, "seconds": {"total": 211.6},
                "metrics": {"before": {"fresh_recall": {"value": before}, "locality": {"value": 1.0}},
                            "after": {"fresh_recall": {"value": after}, "locality": {"value": 0.97}}},
                "decision": {"reason": reason}}

    run = ConsolidationRun(reports=[report("promoted", 0.1, 0.92, "recall up"),
                                    report("rejected", 0.92, 0.9, "not better than what serves")],
                           skipped={"orgs": "12 new records, needs 20"})
    assert consolidation_text(run).splitlines() == [
        "cf: v0003 promoted in 212 s: no-memory recall 0.10 -> 0.92, locality 0.97",
        "cf: v0003 rejected in 212 s: no-memory recall 0.92 -> 0.90, locality 0.97 (not better than what serves)",
        "orgs: not consolidated (12 new records, needs 20)",
    ]
