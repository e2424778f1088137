"""Choosing the compute engine and joining a Ray cluster.

`local` needs nothing beyond kupdate and imports no Ray. `ray` needs the `kupdate[ray]` extra and a
cluster: the one at `[compute] address` / `$RAY_ADDRESS`, else the one started on this machine
(`ray start --head`), else a fresh local instance that ends with the process. A Ray instance the
caller has already started (a notebook, the tests) is used as it is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kupdate.config import ENGINES, ComputeConfig
from kupdate.errors import ConfigError, EngineUnavailable

RAY_EXTRA = "pip install 'kupdate[ray]'"


def choose_engine(cfg: ComputeConfig, engine: str | None = None) -> str:
    """The engine to run on: `engine` (a command's --engine) when given, else `[compute] engine`.
    Choosing 'ray' checks that Ray is installed (it does not join the cluster yet)."""
    chosen = engine if engine is not None else cfg.engine
    if chosen not in ENGINES:
        raise ConfigError(f"--engine must be 'local' or 'ray', got {chosen!r}")
    if chosen == "ray":
        import_ray()  # a missing extra fails now, before any work, whatever there is to do
    return chosen


def import_ray() -> Any:
    """The `ray` module, or one clear error naming the extra that provides it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is a separate part of the extra)
    except ImportError as exc:
        raise EngineUnavailable(
            f"engine 'ray' needs Ray, which is not installed ({exc.name or exc}); run `{RAY_EXTRA}`, "
            "or use --engine local"
        ) from None
    return ray


def ray_address(cfg: ComputeConfig) -> str | None:
    """What to hand `ray.init`: $RAY_ADDRESS wins over the config; 'auto' means None (join the
    cluster this machine knows of, else start a local one), unlike Ray's own 'auto' which fails."""
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    return None if address == "auto" else address


def connect(cfg: ComputeConfig) -> Any:
    """Join (or start) the Ray cluster once per process; returns the `ray` module."""
    ray = import_ray()
    if not ray.is_initialized():
        address = ray_address(cfg)
        try:
            # Workers' stdout is not forwarded: `--json` output on stdout must stay parseable.
            ray.init(address=address, log_to_driver=False, include_dashboard=False,
                     configure_logging=True, logging_level="warning")
        except ConnectionError as exc:
            raise EngineUnavailable(f"cannot join the Ray cluster at {address!r} ({exc}); check "
                                    "[compute] address or $RAY_ADDRESS") from None
    _raylet_messages_to_stderr(ray)
    # Ray Data logs every dataset it runs (and that its progress bars are off); kupdate prints its
    # own summary, and a failure comes back as an exception.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the driver writes in the order of the files
    ctx.enable_progress_bars = False
    return ray


def _raylet_messages_to_stderr(ray: Any) -> None:
    """The driver prints the raylet's messages ("a worker died ...", also when Ray Data retires its
    own actors) on stdout, whatever `log_to_driver` says (ray 2.60, `listen_error_messages`).
    kupdate's stdout is data (`--json`), so they go to stderr like every other warning."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def cluster_gpus(ray: Any) -> int:
    """GPUs the cluster has (0 on a CPU-only cluster)."""
    return int(ray.cluster_resources().get("GPU", 0))


def worker_count(ray: Any, cfg: ComputeConfig) -> int:
    """Ray ingest workers: `[compute] workers`, else one per GPU, else 2."""
    return cfg.workers or cluster_gpus(ray) or 2
