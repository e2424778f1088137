"""Jupyter kernelspecs that start a kernel with a knowledge base opened as `kb`.

A kupdate kernel is the ordinary IPython kernel plus the kupdate magics, launched as
`python -m kupdate.jupyter.kernel -f {connection_file}` with `KUPDATE_KB` in its environment.
Where a spec goes follows Jupyter's own rules: `user=True` -> the user's data dir (respects
`JUPYTER_DATA_DIR`), `prefix` -> `<prefix>/share/jupyter/kernels`, neither -> the system dir.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kupdate import paths
from kupdate.config import CONFIG_NAME
from kupdate.errors import KBNotFound, KupdateError

DEFAULT_NAME = "kupdate"
KERNEL_MODULE = "kupdate.jupyter.kernel"


@dataclass
class KernelInfo:
    """An installed kupdate kernel (`kupdate kernel list --json`)."""

    name: str
    display_name: str
    kb: str | None
    path: str
    argv: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kernel_spec(kb: Path, display_name: str | None = None) -> dict[str, Any]:
    """The kernel.json for a kernel on `kb`.

    argv names this interpreter by absolute path rather than "python": Jupyter would swap a bare
    "python" for its own interpreter, which may live in an environment without kupdate.
    """
    return {
        "argv": [sys.executable, "-m", KERNEL_MODULE, "-f", "{connection_file}"],
        "display_name": display_name or f"kupdate ({kb.name})",
        "language": "python",
        "env": {paths.ENV_KB: str(kb)},
        "metadata": {"kupdate": {"kb": str(kb)}, "debugger": False},
        "kernel_protocol_version": "5.5",
    }


def _manager() -> Any:
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager()


def install(kb: str | Path | None = None, *, name: str = DEFAULT_NAME, display_name: str | None = None,
            user: bool = False, prefix: str | Path | None = None) -> KernelInfo:
    """Register a kernel on `kb` (default: `KUPDATE_KB`, else the default KB); replaces one of that name."""
    from jupyter_client.kernelspec import _is_valid_kernel_name

    if not _is_valid_kernel_name(name):
        raise KupdateError(f"invalid kernel name {name!r}: use letters, digits, '-', '.' and '_' only")
    kb_path = paths.resolve_kb(kb).resolve()
    if not (kb_path / CONFIG_NAME).exists():
        raise KBNotFound(f"no knowledge base at {kb_path}; create one with `kupdate init --kb {kb_path}` first")
    spec = kernel_spec(kb_path, display_name)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
        try:
            dest = _manager().install_kernel_spec(tmp, name, user=user,
                                                  prefix=str(prefix) if prefix else None)
        except OSError as exc:
            raise KupdateError(f"cannot install the kernel ({exc}); use --user, or --sys-prefix to "
                               "install it into this Python environment") from None
    return KernelInfo(name, spec["display_name"], str(kb_path), dest, spec["argv"])


def _info(name: str, entry: dict[str, Any]) -> KernelInfo | None:
    spec = entry.get("spec") or {}
    argv = list(spec.get("argv") or [])
    if KERNEL_MODULE not in argv:
        return None
    kb = (spec.get("env") or {}).get(paths.ENV_KB)
    return KernelInfo(name, spec.get("display_name", name), kb, entry.get("resource_dir", ""), argv)


def list_kernels() -> list[KernelInfo]:
    """The kupdate kernels Jupyter can see, by name."""
    found = (_info(name, entry) for name, entry in sorted(_manager().get_all_specs().items()))
    return [k for k in found if k is not None]


def remove(name: str) -> KernelInfo:
    """Unregister the kupdate kernel `name`; other kernels are left to `jupyter kernelspec remove`."""
    mine = {k.name: k for k in list_kernels()}
    if name not in mine:
        known = ", ".join(mine) or "none installed"
        raise KupdateError(f"no kupdate kernel named {name!r} (kupdate kernels: {known})")
    try:
        _manager().remove_kernel_spec(name)
    except OSError as exc:
        raise KupdateError(f"cannot remove kernel {name!r} ({exc})") from None
    return mine[name]
