"""The dynamic batcher, driven by events (an encoder that blocks until the test releases it),
not by sleeps and wall-clock bounds: the same outcome on a loaded machine."""

import asyncio
import threading
import time

import pytest
import torch

from text4vis.engine.errors import DeadlineExceeded, Overloaded
from text4vis.engine.flow.batcher import DynamicBatcher, FrameQueue, _Item, collect_batch


def _item(n: int, loop: asyncio.AbstractEventLoop) -> _Item:
    return _Item(torch.zeros(n, 2), loop.create_future(), time.monotonic() + 10)


def test_collect_batch_respects_max_frames_and_order() -> None:
    async def run() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        queue = FrameQueue(64)
        for n in (3, 4, 2, 5):
            queue.put(_item(n, loop))
        first = await collect_batch(queue, max_frames=8, max_delay_s=0)
        second = await collect_batch(queue, max_frames=8, max_delay_s=0)
        assert queue.frames == 0 and not queue
        return [[i.frames for i in first], [i.frames for i in second]]

    assert asyncio.run(run()) == [[3, 4], [2, 5]]


def test_collect_batch_takes_what_arrives_within_the_delay_and_no_more_than_fits() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        queue = FrameQueue(64)
        queue.put(_item(2, loop))
        alone = await collect_batch(queue, max_frames=8, max_delay_s=0)  # no delay: what is there
        assert [i.frames for i in alone] == [2]
        queue.put(_item(2, loop))
        task = asyncio.create_task(collect_batch(queue, max_frames=8, max_delay_s=3600))
        await asyncio.sleep(0)  # the task took the first item and waits for more
        assert not task.done() and not queue
        queue.put(_item(4, loop))
        queue.put(_item(2, loop))  # fills the batch to 8: it returns without waiting out the delay
        batch = await task
        assert [i.frames for i in batch] == [2, 4, 2]

    asyncio.run(run())


def test_the_queue_is_bounded_in_frames() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        queue = FrameQueue(10)
        queue.put(_item(6, loop))
        with pytest.raises(Overloaded, match="6 frames are queued"):
            queue.put(_item(5, loop))
        queue.put(_item(4, loop))
        assert queue.frames == 10 and len(queue) == 2

    asyncio.run(run())


class BlockingEncoder:
    """Encodes once ``release`` is set; records each call's size and thread."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30)
        return x.sum(dim=1, keepdim=True) * 2  # a per-row function: results must land on their row


async def _busy(batcher: DynamicBatcher, enc: BlockingEncoder) -> asyncio.Task[torch.Tensor]:
    """A first request, now inside the (blocked) encoder."""
    first = asyncio.create_task(batcher.encode(torch.zeros(8, 3)))
    await asyncio.to_thread(enc.entered.wait, 30)
    return first


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    enc = BlockingEncoder()

    async def run() -> list[torch.Tensor]:
        batcher = DynamicBatcher(enc, max_batch_frames=32, max_delay_ms=0, max_queue_frames=256)
        await batcher.start()
        first = await _busy(batcher, enc)
        inputs = [torch.full((8, 3), float(i)) for i in range(9)]
        tasks = [asyncio.create_task(batcher.encode(x)) for x in inputs]
        await asyncio.sleep(0)
        assert batcher.queued_frames == 72  # all nine wait while the encoder is busy
        enc.release.set()
        out = await asyncio.gather(*tasks)
        await first
        await batcher.stop()
        return out

    out = asyncio.run(run())
    assert enc.calls == [8, 32, 32, 8]  # 9 requests of 8 frames in 3 calls, never over 32
    for i, rows in enumerate(out):
        torch.testing.assert_close(rows, torch.full((8, 1), 6.0 * i))
    assert all(name.startswith("encode") for name in enc.threads)  # never on the event loop


def test_a_full_queue_makes_admitted_work_wait_within_its_deadline() -> None:
    """Admission decided these requests run: a full frame queue makes the next one wait for room
    (memory stays bounded), in order, until its deadline; one larger than the queue is refused."""
    enc = BlockingEncoder()

    async def run() -> None:
        batcher = DynamicBatcher(enc, max_batch_frames=8, max_delay_ms=0, max_queue_frames=16)
        await batcher.start()
        first = await _busy(batcher, enc)
        queued = [asyncio.create_task(batcher.encode(torch.zeros(8, 3))) for _ in range(2)]
        await asyncio.sleep(0)
        assert batcher.queued_frames == 16
        with pytest.raises(DeadlineExceeded, match="no room for the frames"):
            await batcher.encode(torch.zeros(8, 3), timeout_s=0.2)  # no room while the encoder is busy
        waiting = asyncio.create_task(batcher.encode(torch.ones(8, 3), timeout_s=10))
        await asyncio.sleep(0.05)
        assert not waiting.done() and batcher.queued_frames == 16
        with pytest.raises(Overloaded, match="more than the queue holds"):
            await batcher.encode(torch.zeros(17, 3))
        enc.release.set()
        await asyncio.gather(first, *queued)
        torch.testing.assert_close(await waiting, torch.full((8, 1), 6.0))  # it got its turn
        assert batcher.queued_frames == 0
        await batcher.stop()

    asyncio.run(run())


def test_deadline() -> None:
    enc = BlockingEncoder()

    async def run() -> None:
        batcher = DynamicBatcher(enc, max_batch_frames=4, max_delay_ms=0, max_queue_frames=64)
        await batcher.start()
        first = await _busy(batcher, enc)
        with pytest.raises(DeadlineExceeded):
            await batcher.encode(torch.zeros(4, 3), timeout_s=0.01)  # the encoder stays busy past it
        enc.release.set()
        await first
        await batcher.stop()
        assert enc.calls == [8]  # the expired request was never encoded

    asyncio.run(run())


def test_encoder_error_reaches_every_request() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    async def run() -> list[BaseException | torch.Tensor]:
        batcher = DynamicBatcher(broken, max_batch_frames=64, max_delay_ms=10)
        await batcher.start()
        out = await asyncio.gather(*(batcher.encode(torch.zeros(2, 3)) for _ in range(3)), return_exceptions=True)
        await batcher.stop()
        return out

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))
