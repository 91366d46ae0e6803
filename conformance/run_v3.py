"""The v3 API of a ``corral up`` run, called from its topology document.

Modules that bring a whole topology up talk to its server the same way: over HTTPS with the run's CA,
a bearer token (the admin's by default), JSON in and out.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

__all__ = ["call"]


def call(doc: dict[str, Any], method: str, path: str, body: Any = None, *, token: str) -> dict[str, Any]:
    """``method path`` on the run's server with ``token``; the answer's JSON (``{}`` when it is empty)."""
    request = urllib.request.Request(
        doc["server"]["url"] + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=doc["server"]["ca_file"])
    with urllib.request.urlopen(request, context=context, timeout=60) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else {}
