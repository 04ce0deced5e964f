"""The merge of a multi-choice stream: every item of every choice as it comes, and every choice closed
however the merge ends (exhausted, a choice failed, the client left), a step in a worker thread included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator

import anyio.to_thread
import pytest

from service.api.openai import merge


async def _source(name: str, count: int, closed: list[str], pause: float = 0.0) -> AsyncGenerator[str, None]:
    try:
        for i in range(count):
            await asyncio.sleep(pause)
            yield f"{name}{i}"
        if name == "boom":
            raise RuntimeError("a source failed")
    finally:
        closed.append(name)


def test_merge_gives_every_item_in_source_order_and_closes_every_source() -> None:
    closed: list[str] = []

    async def run() -> list[tuple[int, str]]:
        sources = [_source("a", 3, closed), _source("b", 1, closed), _source("c", 2, closed, 0.001)]
        return [item async for item in merge(sources)]

    items = asyncio.run(run())
    assert sorted(items) == [(0, "a0"), (0, "a1"), (0, "a2"), (1, "b0"), (2, "c0"), (2, "c1")]
    assert [text for index, text in items if index == 0] == ["a0", "a1", "a2"]
    assert sorted(closed) == ["a", "b", "c"]


def test_a_failed_source_or_a_closed_merge_stops_the_others() -> None:
    closed: list[str] = []

    async def fail() -> None:
        async for _ in merge([_source("boom", 1, closed), _source("slow", 1000, closed, 0.01)]):
            pass

    with pytest.raises(RuntimeError, match="a source failed"):
        asyncio.run(fail())
    assert sorted(closed) == ["boom", "slow"]

    async def leave() -> None:
        merged = merge([_source("x", 1000, closed, 0.001), _source("y", 1000, closed, 0.001)])
        await anext(merged)
        await merged.aclose()

    asyncio.run(leave())
    assert sorted(closed) == ["boom", "slow", "x", "y"]


def test_closing_the_merge_lets_a_step_in_a_worker_thread_end_first() -> None:
    """Cancelling a step that a worker thread runs would leave its generator executing, so closing it
    (a recompute loop's cancel) would fail and skip the stream's cleanup."""
    closed: list[str] = []

    def ticks() -> Generator[str, None, None]:
        while True:
            time.sleep(0.05)
            yield "tick"

    async def threaded() -> AsyncGenerator[str, None]:
        steps = ticks()
        try:
            while True:
                yield await anyio.to_thread.run_sync(next, steps)
        finally:
            steps.close()  # ValueError("generator already executing") if a step was cut off
            closed.append("threaded")

    async def run() -> None:
        merged = merge([_source("a", 3, closed, 0.001), threaded()])
        await anext(merged)
        await merged.aclose()

    asyncio.run(run())
    assert sorted(closed) == ["a", "threaded"]
