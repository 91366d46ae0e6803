"""The frame codec against remotedialer's wire format (vectors from docs/rancher.md#wire-format)."""

from __future__ import annotations

import pytest

from corral.errors import ProtocolError, TunnelError
from corral.tunnel import message as msg
from corral.tunnel.message import Message, MessageType, UnknownMessageTypeError, decode, encode


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, "00"),
        (1, "02"),
        (-1, "01"),
        (2, "04"),
        (1000, "d00f"),
        (15000, "b0ea01"),
        (-(1 << 63), "ff" * 9 + "01"),
    ],
)
def test_varints_are_go_zigzag_varints(value, wire):
    assert msg.encode_varint(value).hex() == wire
    assert msg.decode_varint(bytes.fromhex(wire), 0, "x") == (value, len(bytes.fromhex(wire)))


def test_the_reference_connect_frame_is_encoded_byte_for_byte():
    frame = Message(1000, 2, MessageType.CONNECT, b"tcp/10.43.0.1:443")
    assert encode(frame) == bytes.fromhex("d00f0404b0ea01") + b"tcp/10.43.0.1:443"


def test_the_reference_connect_frame_decodes_to_its_target():
    decoded = decode(bytes.fromhex("d00f0404b0ea01") + b"tcp/10.43.0.1:443")
    assert decoded == Message(1000, 2, MessageType.CONNECT, b"tcp/10.43.0.1:443", 15000)
    assert decoded.connect_target() == ("tcp", "10.43.0.1:443")


def test_data_frames_carry_the_legacy_deadline_and_control_frames_do_not():
    assert encode(Message(1, 2, MessageType.DATA, b"hi")) == bytes.fromhex("020402b0ea01") + b"hi"
    assert encode(Message(1, 2, MessageType.PAUSE)) == bytes.fromhex("02040c")
    assert encode(Message(1, 2, MessageType.ERROR, b"EOF")) == bytes.fromhex("020406") + b"EOF"


def test_a_deadline_other_than_15000_is_read_and_kept():
    assert decode(bytes.fromhex("020402") + msg.encode_varint(7) + b"x").deadline_ms == 7


def test_unix_socket_addresses_keep_their_slashes():
    decoded = decode(encode(msg.connect(2, "unix", "/var/run/docker.sock")))
    assert decoded.connect_target() == ("unix", "/var/run/docker.sock")


@pytest.mark.parametrize(
    ("mtype", "limit"),
    [
        (MessageType.CONNECT, 266),
        (MessageType.ERROR, 100),
        (MessageType.ADD_CLIENT, 100),
        (MessageType.REMOVE_CLIENT, 100),
    ],
)
def test_payloads_are_cut_where_remotedialer_stops_reading(mtype, limit):
    payload = b"tcp/" + b"a" * 1000
    assert len(decode(encode(Message(5, 3, mtype, payload))).payload) == limit


def test_data_payloads_are_not_cut():
    assert len(decode(encode(Message(5, 3, MessageType.DATA, b"z" * 100_000))).payload) == 100_000


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "truncated varint in message id at byte 0"),
        ("02", "truncated varint in connection id at byte 1"),
        ("0204", "truncated varint in message type at byte 2"),
        ("020402", "truncated varint in deadline at byte 3"),
        ("0204" + "80", "truncated varint in message type at byte 2"),
        ("ff" * 9 + "02", "varint in message id at byte 0 overflows 64 bits"),
        ("ff" * 10 + "01", "varint in message id at byte 0 is longer than 10 bytes"),
        ("020404b0ea01" + b"no-slash".hex(), "has no '/' between proto and address"),
    ],
)
def test_malformed_frames_raise_a_precise_protocol_error(wire, reason):
    with pytest.raises(ProtocolError, match=reason.replace("(", r"\(")) as info:
        decode(bytes.fromhex(wire))
    assert isinstance(info.value, TunnelError)


def test_unknown_types_raise_with_the_offending_value():
    with pytest.raises(UnknownMessageTypeError, match="unknown message type 9 on connection 2") as info:
        decode(bytes.fromhex("020412"))
    assert info.value.type_value == 9


def test_values_outside_int64_cannot_be_encoded():
    with pytest.raises(ProtocolError, match="outside the int64 range"):
        encode(Message(1 << 63, 2, MessageType.PAUSE))


def test_sync_connections_is_little_endian_uint64_ids():
    frame = msg.sync_connections([3, 2])
    assert frame.payload == bytes.fromhex("0200000000000000" + "0300000000000000")
    assert msg.decode_connection_ids(frame.payload) == [2, 3]


def test_a_sync_payload_of_odd_length_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="7 bytes is not a multiple of 8"):
        msg.decode_connection_ids(b"\x00" * 7)
