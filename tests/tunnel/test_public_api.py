"""The public surface of corral.tunnel: what the interop tests use, and a server or agent would build on."""

from __future__ import annotations

import importlib

import pytest

import corral.tunnel
from tests._public_api import NO_PROBLEMS, all_problems

CONTRACT = {
    "corral.tunnel.message": ["MessageType", "Message", "encode", "decode"],
    "corral.tunnel.session": ["Session", "Connection", "SessionSettings"],
    "corral.tunnel.manager": ["SessionManager"],
    "corral.tunnel.memory": ["memory_pair"],
    "corral.tunnel.websocket": ["tunnel_handler", "connect", "TunnelClient"],
    "corral.tunnel.dialer": ["open_connection", "TunnelConnector"],
    "corral.tunnel.testing": ["check_tunnel_semantics"],
}


@pytest.mark.parametrize("module", sorted(CONTRACT))
def test_every_contract_name_is_importable_from_its_module(module):
    loaded = importlib.import_module(module)
    assert [name for name in CONTRACT[module] if not hasattr(loaded, name)] == []


def test_the_package_exports_exactly_what_its_all_lists():
    assert all_problems(corral.tunnel) == NO_PROBLEMS


def test_the_error_classes_are_exported():
    assert {
        "TunnelError",
        "ProtocolError",
        "SessionNotFoundError",
        "TunnelClosedError",
        "HandshakeError",
    } <= set(corral.tunnel.__all__)


def test_message_types_keep_remotedialers_numbers():
    from corral.tunnel.message import MessageType

    assert {t.name: t.value for t in MessageType} == {
        "DATA": 1,
        "CONNECT": 2,
        "ERROR": 3,
        "ADD_CLIENT": 4,
        "REMOVE_CLIENT": 5,
        "PAUSE": 6,
        "RESUME": 7,
        "SYNC_CONNECTIONS": 8,
    }


def test_default_settings_are_remotedialers_constants():
    from corral.tunnel.session import SessionSettings

    settings = SessionSettings()
    assert (
        settings.ping_interval_seconds,
        settings.read_deadline_seconds,
        settings.sync_interval_seconds,
    ) == (5, 60, 60)
    assert (settings.max_buffer_bytes, settings.resume_below_bytes) == (2 * 1024 * 1024, 256 * 1024)
    assert settings.connect_timeout_seconds == 60


def test_inconsistent_settings_are_a_config_error_naming_the_field():
    from corral.errors import ConfigError
    from corral.tunnel.session import SessionSettings

    with pytest.raises(ConfigError, match="resume_below_bytes: must be <= max_buffer_bytes"):
        SessionSettings(max_buffer_bytes=1000, resume_below_bytes=2000)
