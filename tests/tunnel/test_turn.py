"""Numbered turns of the event loop, shared by the writers that join one turn's writes."""

from __future__ import annotations

import asyncio

from corral.tunnel.loop import run
from corral.tunnel.turn import Turn, turn_of


async def test_a_marked_turn_keeps_its_number_until_the_next_turn() -> None:
    turn = turn_of(asyncio.get_running_loop())
    first = turn.mark()
    assert turn.mark() == first == turn.number
    await asyncio.sleep(0)
    assert turn.number == first + 1, "one end per turn, however many marks"
    await asyncio.sleep(0)
    assert turn.number == first + 1, "a turn nobody marked does not count"
    assert turn.mark() == first + 1


async def test_every_writer_of_a_loop_shares_its_turn() -> None:
    loop = asyncio.get_running_loop()
    assert turn_of(loop) is turn_of(loop)


def test_each_loop_has_its_own_turn() -> None:
    async def mine() -> Turn:
        return turn_of(asyncio.get_running_loop())

    first = asyncio.run(mine())
    second = run(mine(), use_uvloop=False)
    assert first is not second
    assert first.loop is not second.loop
