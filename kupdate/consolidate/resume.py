"""Resuming a killed consolidation where it stopped (docs/consolidation.md, "Resume after a kill").

A domain's consolidation keeps its work, as it goes, in the folder of the version it allocated:

    <kb>/adapters/<domain>/vNNNN/partial/  state.json   what this work is for (the key below)
                                           tset.pt      the training set, once built
                                           before.pt    the serving metrics, once measured
                                           train.pt     after every pass: adapter entries, mask,
                                                        optimizer, schedule, shuffling, figures

Apart from any one version, `<kb>/adapters/<domain>/build-cache.pt` keeps what the last build made of
each record (its questions, the teacher's answers and distributions; `dataset.RecordWork`), so the
next consolidation of the domain builds only records that are new or changed (`BuildCache`).

The key is a digest of everything the result depends on: the domain's records (ids, text, dates),
the consolidation and generation settings, the model, and the versions serving when it started. A
later consolidation of the domain with the same key finds the unfinished version (allocated, no
report) and continues from its last saved pass instead of starting again; with another key (new
records, other settings, another version serving) it starts a new version as before. Every file
is written to a temporary name and renamed, so a kill leaves either the previous pass's state or
the new one, never half a file. The folder goes once the version is finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kupdate.adapters.registry import REPORT_NAME, write_atomic

PARTIAL = "partial"
STATE = "state.json"


def key_of(kb: Any, domain: str, records: list[Any]) -> str:
    """The digest of what a consolidation of `domain` from `records` depends on."""
    cfg = kb.config
    what = {
        "domain": domain,
        "records": [[r.id, hashlib.sha256(r.text.encode("utf-8")).hexdigest(), r.valid_from] for r in records],
        "consolidation": asdict(cfg.consolidation),
        "generation": asdict(cfg.generation),
        "model": cfg.model,
        # What serves now: the metrics before, and the entries other domains hold (the mask), depend on it.
        "serving": {d: v for d, (v, _) in sorted(kb.adapters.serving().items())},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class Partial:
    """The saved work of one unfinished version (see the module docstring)."""

    def __init__(self, version_folder: Path, key: str) -> None:
        self.folder = Path(version_folder) / PARTIAL
        self.key = key

    @classmethod
    def claim(cls, domain_folder: Path, key: str) -> tuple[str, Path] | None:
        """(version, folder) of an unfinished version of this domain saved under `key`, if any.
        The saved work of other unfinished versions (other records or settings) is removed: it
        can never be continued. Called under the registry's lock."""

        if not domain_folder.is_dir():
            return None
        found = None
        for folder in sorted(domain_folder.iterdir(), reverse=True):
            state = folder / PARTIAL / STATE
            if not state.is_file():
                continue
            try:
                saved = json.loads(state.read_text(encoding="utf-8")).get("key")
            except (OSError, ValueError):
                saved = None  # unreadable: cannot be continued
            if found is None and saved == key and not (folder / REPORT_NAME).exists():
                found = folder.name, folder
            else:
                shutil.rmtree(folder / PARTIAL, ignore_errors=True)
        return found

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / STATE, json.dumps({"key": self.key}).encode("utf-8"))

    def save(self, name: str, obj: Any) -> None:
        """Save `obj` (tensors, dataclasses of this package) as `name`.pt, atomically."""
        import torch

        write_atomic(self.folder / f"{name}.pt", lambda f: torch.save(obj, f))

    def load(self, name: str) -> Any | None:
        """What `save(name, ...)` wrote, or None. The file is this KB's own work (written above), so
        it is unpickled in full; a damaged one is ignored and the step is done again."""
        import torch

        path = self.folder / f"{name}.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a torn or foreign file: redo the step instead of failing
            return None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)



class BuildCache:
    """Each record's build work from the domain's last consolidation (see the module docstring)."""

    NAME = "build-cache.pt"

    def __init__(self, domain_folder: Path) -> None:
        self.path = Path(domain_folder) / self.NAME

    def load(self) -> dict[str, Any]:
        """The saved work by `dataset.work_key`; empty when none, or unreadable (built again)."""
        import torch

        if not self.path.is_file():
            return {}
        try:
            found = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a torn or foreign file: build again instead of failing
            return {}
        return found if isinstance(found, dict) else {}

    def save(self, works: dict[str, Any]) -> None:
        """Keep `works` (the current records' only: a retired record's work goes), atomically."""
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda f: torch.save(works, f))
