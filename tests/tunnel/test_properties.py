"""Properties of the codec and of sessions under arbitrary input (hypothesis)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import ProtocolError
from corral.tunnel import message as msg
from corral.tunnel.message import Message, MessageType, decode, encode
from corral.tunnel.testing import feed_frames

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
LIMITS = {
    MessageType.CONNECT: 266,
    MessageType.ERROR: 100,
    MessageType.ADD_CLIENT: 100,
    MessageType.REMOVE_CLIENT: 100,
}


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(MessageType))
    if mtype is MessageType.CONNECT:
        proto = draw(st.sampled_from(["tcp", "unix", "npipe", "c-1::tcp"]))
        payload = f"{proto}/".encode() + draw(st.binary(max_size=266 - len(proto) - 1))
    else:
        payload = draw(st.binary(max_size=LIMITS.get(mtype, 2000)))
    deadline = draw(INT64) if mtype in (MessageType.DATA, MessageType.CONNECT) else 15000
    return Message(draw(INT64), draw(INT64), mtype, payload, deadline)


@given(messages())
def test_every_message_survives_an_encode_decode_round_trip(message):
    assert decode(encode(message)) == message


@given(st.binary(max_size=600))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(data):
    try:
        message = decode(data)
    except ProtocolError as exc:
        reason = str(exc)
    else:
        reason = None
        assert isinstance(message.type, MessageType)
        assert len(message.payload) <= len(data)
    assert reason is None or reason.strip(), "a ProtocolError always says why"


@given(messages(), st.data())
def test_every_truncated_header_is_a_protocol_error_naming_a_field(message, data):
    wire = encode(message)
    header_size = len(wire) - len(message.payload)
    cut = data.draw(st.integers(min_value=0, max_value=header_size - 1))
    with pytest.raises(
        ProtocolError, match=r"truncated varint in (message id|connection id|message type|deadline)"
    ):
        decode(wire[:cut])


@st.composite
def _well_formed(draw: st.DrawFn, conn_ids: st.SearchStrategy[int]) -> bytes:
    mtype = draw(st.sampled_from(MessageType))
    if mtype is MessageType.SYNC_CONNECTIONS:
        payload = msg.sync_connections(draw(st.lists(conn_ids, max_size=6))).payload
    elif mtype in (MessageType.CONNECT, MessageType.ERROR):
        payload = draw(
            st.sampled_from([b"EOF", b"mem/echo", b"mem/hold", b"mem/refuse", b"mem/deny", b"x/y"])
        )
    else:
        payload = draw(st.binary(max_size=5000))
    return encode(Message(draw(st.integers(0, 1 << 40)), draw(conn_ids), mtype, payload))


def _frame(conn_ids: st.SearchStrategy[int]) -> st.SearchStrategy[bytes | str]:
    """Mostly well-formed frames (so sessions live long enough to be exercised), some junk."""
    well_formed = _well_formed(conn_ids)
    return st.one_of(
        well_formed, well_formed, well_formed, well_formed, st.binary(max_size=40), st.text(max_size=10)
    )


@settings(max_examples=60)
@given(st.sampled_from(["server", "client"]), st.lists(_frame(st.integers(-2, 40)), max_size=40))
def test_arbitrary_frame_sequences_never_crash_a_session(role, frames):
    reason = asyncio.run(feed_frames(frames, role=role))
    assert isinstance(reason, str)


@settings(max_examples=10)
@given(st.integers(min_value=100, max_value=400))
def test_a_flood_of_connects_keeps_a_client_session_under_its_connection_cap(count):
    frames = [encode(msg.connect(conn_id, "mem", "hold")) for conn_id in range(2, 2 + count)]
    reason = asyncio.run(feed_frames(frames, role="client"))
    assert reason == "input fed", "a flood of Connects is refused one by one, the session survives"


@given(st.one_of(messages().map(encode), st.binary(max_size=60)))
def test_the_data_fast_path_agrees_with_the_decoder(data):
    split = msg.split_data(data)
    if split is None:  # not plainly Data: the session hands it to decode, tested above
        return
    conn_id, payload = split
    decoded = decode(data)
    assert decoded.type is MessageType.DATA
    assert (decoded.conn_id, decoded.payload) == (conn_id, bytes(payload))


@given(
    st.integers(0, (1 << 62) - 1),
    st.integers(-(1 << 40), 1 << 40),
    st.integers(0, (1 << 62) - 1),
    st.binary(max_size=300),
)
def test_the_data_fast_path_takes_every_data_frame_with_short_varints(message_id, conn_id, deadline, payload):
    # ids and deadlines of at most 9 varint bytes, connection ids of every size: none goes to decode
    data = encode(Message(message_id, conn_id, MessageType.DATA, payload, deadline))
    split = msg.split_data(data)
    assert split is not None
    assert (split[0], bytes(split[1])) == (conn_id, payload)
    assert msg.split_data(bytearray(data)) == split
    assert msg.split_data(memoryview(b"xx" + data)[2:]) == split
