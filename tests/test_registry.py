"""The adapter registry: versions in order, incomplete attempts ignored, a serving pointer with
history that rollback walks back, and one consolidation per KB at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kupdate.adapters import AdapterRegistry
from kupdate.errors import KupdateError


def report(recall: float) -> dict:
    return {"metrics": {"before": {"fresh_recall": 0.1}, "after": {"fresh_recall": recall, "locality": 1.0}},
            "decision": {"promoted": recall > 0.5, "reason": f"recall {recall}"}, "data": {"statements": 3}}


def make(reg: AdapterRegistry, domain: str, *, promote: bool, recall: float = 0.9) -> str:
    version, folder = reg.allocate(domain)
    (folder / "adapter_config.json").write_text("{}")
    reg.finish(domain, version, report(recall), promote=promote)
    return version


@pytest.fixture
def reg(tmp_path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "kb" / "adapters")


def test_versions_in_order_and_never_reused(reg):
    assert reg.domains() == [] and reg.versions("cf") == [] and reg.serving("cf") is None
    assert make(reg, "cf", promote=True) == "v0001"
    assert make(reg, "cf", promote=False, recall=0.2) == "v0002"
    killed, folder = reg.allocate("cf")  # a killed attempt: files but no report
    (folder / "adapter_model.safetensors").write_bytes(b"partial")
    assert killed == "v0003"
    assert make(reg, "cf", promote=True) == "v0004"
    assert [(v.version, v.status) for v in reg.versions("cf")] == [
        ("v0001", "promoted"), ("v0002", "rejected"), ("v0004", "promoted")]
    assert make(reg, "other", promote=False) == "v0001"  # numbering is per domain
    assert reg.domains() == ["cf", "other"]


def test_incomplete_versions_are_ignored(reg):
    reg.allocate("fresh")  # only an unfinished attempt: not a domain with adapters yet
    assert reg.domains() == [] and reg.versions("fresh") == [] and reg.last_attempt_at("fresh") is None
    with pytest.raises(KupdateError, match="no complete adapter version v0001"):
        reg.get("fresh", "v0001")
    with pytest.raises(KupdateError, match="already finished"):
        v = make(reg, "fresh", promote=True)
        reg.finish("fresh", v, {}, promote=True)
    with pytest.raises(KupdateError, match="never allocated"):
        reg.finish("fresh", "v0009", {}, promote=True)


def test_finish_writes_report_and_moves_pointer_keeping_history(reg):
    make(reg, "cf", promote=True)
    make(reg, "cf", promote=False, recall=0.2)
    v3 = reg.allocate("cf")[0]
    done = reg.finish("cf", v3, report(0.95), promote=True)
    assert done.serving and done.status == "promoted" and done.version == "v0003"
    saved = json.loads((reg.root / "cf" / "v0003" / "report.json").read_text())
    assert saved["domain"] == "cf" and saved["version"] == "v0003" and saved["status"] == "promoted"
    assert saved["metrics"]["after"]["fresh_recall"] == 0.95 and saved["finished_at"]
    pointer = json.loads((reg.root / "cf" / "serving.json").read_text())
    assert pointer["version"] == "v0003" and pointer["history"] == ["v0001"] and pointer["since"]
    assert reg.serving("cf").version == "v0003"
    assert [v.serving for v in reg.versions("cf")] == [False, False, True]
    assert reg.serving_all().keys() == {"cf"}
    assert reg.last_attempt_at("cf") == saved["finished_at"]
    assert reg.get("cf", "3").version == reg.get("cf", "v3").version == "v0003"  # lenient spelling


def test_rollback_walks_history_back_to_no_adapter(reg):
    for _ in range(3):
        make(reg, "cf", promote=True)
    assert reg.rollback("cf").version == "v0002"
    assert reg.serving("cf").version == "v0002"
    assert reg.rollback("cf").version == "v0001"
    assert reg.rollback("cf") is None  # nothing served before v0001: the memory alone answers
    assert reg.serving("cf") is None and reg.serving_all() == {}
    assert [v.status for v in reg.versions("cf")] == ["promoted"] * 3  # reports are never rewritten
    with pytest.raises(KupdateError, match="serves no adapter; nothing to roll back"):
        reg.rollback("cf")
    # Naming a version serves it again; a plain rollback then undoes that.
    assert reg.rollback("cf", "v0003").serving
    assert reg.rollback("cf", "v0001").version == "v0001"
    assert reg.rollback("cf").version == "v0003"


def test_rollback_to_rejected_version_is_refused(reg):
    make(reg, "cf", promote=True)
    make(reg, "cf", promote=False, recall=0.2)
    with pytest.raises(KupdateError, match=r"cf v0002 was rejected \(recall 0.2\); only a promoted version"):
        reg.rollback("cf", "v0002")
    with pytest.raises(KupdateError, match="no complete adapter version v0007"):
        reg.rollback("cf", "v0007")
    with pytest.raises(KupdateError, match="domain 'nope' has no adapter versions"):
        reg.rollback("nope")
    assert reg.serving("cf").version == "v0001"


def test_failing_check_leaves_pointer_as_it_was(reg):
    make(reg, "cf", promote=True)
    make(reg, "cf", promote=True)
    before = (reg.root / "cf" / "serving.json").read_text()
    seen = []

    def overlapping(candidate):
        seen.append(candidate.version)
        raise KupdateError(f"{candidate.version}'s mask overlaps domain 'orgs'")

    with pytest.raises(KupdateError, match="v0001's mask overlaps"):
        reg.rollback("cf", check=overlapping)
    with pytest.raises(KupdateError, match="v0001's mask overlaps"):
        reg.rollback("cf", "v0001", check=overlapping)
    assert seen == ["v0001", "v0001"]
    assert (reg.root / "cf" / "serving.json").read_text() == before
    assert reg.serving("cf").version == "v0002"
    assert reg.rollback("cf", check=lambda c: None).version == "v0001"


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "..", "x y", "ümlaut", "a" * 101, "-\n"])
def test_invalid_domain_names_are_refused(reg, bad):
    with pytest.raises(KupdateError, match=r"invalid domain name .*letters, digits, '-', '_' or '.'"):
        reg.allocate(bad)
    assert not reg.root.exists() or not any(reg.root.iterdir())


def test_valid_domain_names(reg):
    for name in ("cf", "news-2025", "a_b.c", "0"):
        assert make(reg, name, promote=True) == "v0001"
    assert reg.domains() == ["0", "a_b.c", "cf", "news-2025"]


def test_pointer_writes_are_atomic_json(reg):
    for i in range(5):
        make(reg, "cf", promote=i % 2 == 0)
    reg.rollback("cf")
    folder = reg.root / "cf"
    assert json.loads((folder / "serving.json").read_text())["version"] == "v0003"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["serving.json"]  # no temp files left
    for v in reg.versions("cf"):
        assert sorted(p.name for p in v.path.iterdir()) == ["adapter_config.json", "report.json"]


HOLD = """
import sys, time
from kupdate.adapters import AdapterRegistry
with AdapterRegistry(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_refuses_a_second_process_naming_the_holder(reg):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(reg.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(KupdateError, match=rf"another consolidation is running on .*kb \(pid {holder.pid}\)"):
            with reg.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: no stale lock file to clean up.
    with reg.lock(), reg.lock():  # and the lock is reentrant within a process
        assert (reg.root / ".consolidate.lock").read_text().strip() == str(os.getpid())


def test_a_streamed_write_that_fails_half_way_leaves_the_old_file_whole(tmp_path):
    """Large state (a training set, the build cache) is streamed to disk by a writer function; a
    writer dying part-way must leave the previous file as it was and no temporary file behind."""
    from kupdate.adapters.registry import write_atomic

    path = tmp_path / "state.pt"
    write_atomic(path, lambda f: f.write(b"old state"))
    assert path.read_bytes() == b"old state"

    def dies(f):
        f.write(b"half of the new st")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, dies)
    assert path.read_bytes() == b"old state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    write_atomic(path, b"new state")
    assert path.read_bytes() == b"new state"
