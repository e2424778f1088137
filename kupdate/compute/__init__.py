"""Where the heavy jobs run: this process (`local`, the default) or a Ray cluster (`ray`).

`engine` picks the engine and joins the cluster; `ray_ingest` loads, chunks and embeds files on Ray
Data workers while the driver alone writes the store; `ray_consolidate` trains the due domains at
the same time, one Ray actor each, while the driver allots masks, evaluates and promotes. Nothing
here imports Ray until the `ray` engine is used.
"""

from kupdate.compute.engine import choose_engine, connect, import_ray

__all__ = ["choose_engine", "connect", "import_ray"]
