"""Per-domain adapters on disk: the versioned registry, and the policy that says when a domain is due.

Stdlib only: listing adapters or deciding whether consolidation is due loads no model.
"""

from kupdate.adapters.policy import due
from kupdate.adapters.registry import AdapterRegistry, AdapterVersion, registry_for

__all__ = ["AdapterRegistry", "AdapterVersion", "due", "registry_for"]
