import asyncio
import threading
import time

import pytest
import torch

from engine.batcher import DynamicBatcher, _Item, collect_batch
from engine.errors import DeadlineExceeded, Overloaded


def _item(n: int, loop: asyncio.AbstractEventLoop) -> _Item:
    return _Item(torch.zeros(n, 2), loop.create_future(), time.monotonic() + 10)


def test_collect_batch_respects_max_frames_and_order() -> None:
    async def run() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        for n in (3, 4, 2, 5):
            queue.put_nowait(_item(n, loop))
        first = await collect_batch(queue, max_frames=8, max_delay_s=0.01)
        second = await collect_batch(queue, max_frames=8, max_delay_s=0.01)
        return [[i.frames for i in first], [i.frames for i in second]]

    assert asyncio.run(run()) == [[3, 4], [2, 5]]


def test_collect_batch_waits_at_most_the_delay() -> None:
    async def run() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        queue.put_nowait(_item(1, loop))
        t0 = time.monotonic()
        batch = await collect_batch(queue, max_frames=64, max_delay_s=0.05)
        return len(batch), time.monotonic() - t0

    size, waited = asyncio.run(run())
    assert size == 1 and 0.04 <= waited < 0.5


class CountingEncoder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return x.sum(dim=1, keepdim=True) * 2  # a per-row function: results must land on their row


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    enc = CountingEncoder(delay_s=0.02)

    async def run() -> list[torch.Tensor]:
        batcher = DynamicBatcher(enc, max_batch_frames=32, max_delay_ms=20, max_queue_frames=256)
        await batcher.start()
        inputs = [torch.full((8, 3), float(i)) for i in range(10)]
        out = await asyncio.gather(*(batcher.embed(x) for x in inputs))
        await batcher.stop()
        return out

    out = asyncio.run(run())
    assert len(enc.calls) < 10 and sum(enc.calls) == 80 and max(enc.calls) <= 32
    for i, rows in enumerate(out):
        torch.testing.assert_close(rows, torch.full((8, 1), 6.0 * i))
    assert all(name.startswith("encode") for name in enc.threads)  # never on the event loop


def test_full_queue_answers_at_once() -> None:
    enc = CountingEncoder(delay_s=0.2)

    async def run() -> tuple[type[BaseException] | None, float]:
        batcher = DynamicBatcher(enc, max_batch_frames=8, max_delay_ms=1, max_queue_frames=16)
        await batcher.start()
        first = asyncio.create_task(batcher.embed(torch.zeros(8, 3)))
        await asyncio.sleep(0.05)  # first is now encoding; fill the queue
        queued = [asyncio.create_task(batcher.embed(torch.zeros(8, 3))) for _ in range(2)]
        await asyncio.sleep(0)
        t0 = time.monotonic()
        error = None
        try:
            await batcher.embed(torch.zeros(8, 3))
        except Overloaded as exc:
            error = type(exc)
        elapsed = time.monotonic() - t0
        await asyncio.gather(first, *queued)
        await batcher.stop()
        return error, elapsed

    error, elapsed = asyncio.run(run())
    assert error is Overloaded and elapsed < 0.05


def test_deadline() -> None:
    enc = CountingEncoder(delay_s=0.3)

    async def run() -> None:
        batcher = DynamicBatcher(enc, max_batch_frames=4, max_delay_ms=1, max_queue_frames=64)
        await batcher.start()
        slow = asyncio.create_task(batcher.embed(torch.zeros(4, 3)))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await batcher.embed(torch.zeros(4, 3), timeout_s=0.05)
        await slow
        await batcher.stop()

    asyncio.run(run())


def test_encoder_error_reaches_every_request() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    async def run() -> list[BaseException | torch.Tensor]:
        batcher = DynamicBatcher(broken, max_batch_frames=64, max_delay_ms=10)
        await batcher.start()
        out = await asyncio.gather(*(batcher.embed(torch.zeros(2, 3)) for _ in range(3)), return_exceptions=True)
        await batcher.stop()
        return out

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))
