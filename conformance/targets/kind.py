"""The ``kind`` target: downstream clusters made by kind, with corral's server and agents.

It needs a running container engine (docker or podman) and a ``corral up`` that puts downstream
clusters on kind; where either is missing the target is unavailable and its tests are deselected
with the reason, which pytest's summary prints.
"""

from __future__ import annotations

import importlib
import inspect

from conformance.targets.reference import has_module
from corral.controlplane.kind import find_engine
from corral.errors import ControlPlaneError

UP_MODULE = "corral.run.up"


def unavailable_reason() -> str:
    """Why the kind target cannot run on this machine ("" when it can)."""
    try:
        find_engine()
    except ControlPlaneError as e:
        return f"the kind target needs a container engine: {e}"
    if not has_module(UP_MODULE):
        return "the kind target needs `corral up` (corral.run.up), which this build does not have"
    up = importlib.import_module(UP_MODULE).up
    if "provider" not in inspect.signature(up).parameters:
        return "this build's `corral up` cannot put downstream clusters on kind (it has no provider choice)"
    return ""
