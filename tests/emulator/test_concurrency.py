"""Many clients at once: hundreds of concurrent connections and a large results stream."""

from __future__ import annotations

import asyncio

import httpx

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, batch_requests


def test_300_concurrent_retrieves(http: httpx.Client, emu: EmulatorProcess) -> None:
    """300 retrieves on 300 simultaneous connections all succeed."""
    batch_id = http.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()["id"]

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(
            base_url=emu.url, headers=api_headers(emu.api_key), limits=limits, timeout=30
        ) as client:
            gate = asyncio.Event()

            async def one() -> int:
                await gate.wait()
                response = await client.get(f"/v1/messages/batches/{batch_id}")
                return response.status_code

            tasks = [asyncio.create_task(one()) for _ in range(300)]
            gate.set()
            return await asyncio.gather(*tasks)

    assert asyncio.run(run()) == [200] * 300


def test_large_results_stream(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A 20,000-request batch streams all its lines, in several chunks."""
    response = http.post("/v1/messages/batches", json={"requests": batch_requests(20_000)})
    batch_id = response.json()["id"]
    emu.advance(1)
    lines = chunks = 0
    with http.stream("GET", f"/v1/messages/batches/{batch_id}/results") as stream:
        for chunk in stream.iter_raw():
            chunks += 1
            lines += chunk.count(b"\n")
    assert lines == 20_000
    assert chunks > 10
