"""JSON responses as the CLI's `--json` prints them (numpy scalars and dates included)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=_default)


class KJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")
