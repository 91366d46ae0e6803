"""corral's exceptions: one tree under CorralError, every name ends in Error and none is a trace event's."""

from __future__ import annotations

import importlib
import pkgutil

import corral
from corral.errors import CorralError
from corral.model import event_types


def all_errors() -> list[type[BaseException]]:
    """Every subclass of CorralError defined anywhere in the corral package (all modules imported)."""
    for module in pkgutil.walk_packages(corral.__path__, prefix="corral."):
        importlib.import_module(module.name)
    found: list[type[BaseException]] = []
    pending: list[type[BaseException]] = [CorralError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_the_tunnel_and_message_errors_are_found() -> None:
    names = {cls.__name__ for cls in all_errors()}
    assert {"TunnelClosedError", "SessionNotFoundError", "UnknownMessageTypeError", "HandshakeError"} <= names


def test_every_error_name_ends_in_error() -> None:
    assert [cls.__qualname__ for cls in all_errors() if not cls.__name__.endswith("Error")] == []


def test_no_error_shares_a_name_with_a_trace_event() -> None:
    events = set(event_types())
    assert events, "the trace vocabulary is registered on import of corral.model"
    assert [cls.__name__ for cls in all_errors() if cls.__name__ in events] == []
