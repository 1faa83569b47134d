"""Dynamic batching: frames of many requests share one backend call.

A request submits its frames and awaits its embeddings. One worker task takes the oldest
request, gathers more until ``max_batch_frames`` or ``max_delay_ms``, runs the encoder once in a
dedicated thread (the event loop never blocks), and scatters the rows back. The queue is
bounded in frames: a request that does not fit is refused at once (:class:`Overloaded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from text4vis.engine.errors import DeadlineExceeded, Overloaded

log = logging.getLogger(__name__)

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(eq=False)  # identity, not tensor comparison
class _Item:
    pixels: torch.Tensor
    future: asyncio.Future[torch.Tensor]
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def frames(self) -> int:
        return int(self.pixels.shape[0])


@dataclass
class BatchStats:
    """What the batcher did; read by metrics and by tests."""

    batches: int = 0
    frames: int = 0
    requests: int = 0
    sizes: list[int] = field(default_factory=list)  # frames per batch, most recent last (bounded)


class FrameQueue:
    """FIFO of requests, bounded and counted in frames (the one count of what waits)."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self.frames = 0
        self._items: deque[_Item] = deque()
        self._nonempty = asyncio.Event()
        self._room = asyncio.Condition()
        self._waiting = 0  # puts waiting for room: a new put queues behind them
        self._wakers: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._items)

    def _fits(self, item: _Item) -> bool:
        return self.frames + item.frames <= self.max_frames

    def put(self, item: _Item) -> None:
        """Append ``item``, or raise :class:`Overloaded` at once if its frames do not fit."""
        if item.frames > self.max_frames or not self._fits(item) or self._waiting:
            raise Overloaded(f"{self.frames} frames are queued (limit {self.max_frames})")
        self._append(item)

    async def put_waiting(self, item: _Item, timeout_s: float) -> None:
        """Append ``item`` once its frames fit, in arrival order; :class:`DeadlineExceeded` past
        ``timeout_s``, :class:`Overloaded` at once for an item larger than the whole queue."""
        if item.frames > self.max_frames:
            raise Overloaded(
                f"{item.frames} frames are more than the queue holds ({self.max_frames}, T4V_MAX_QUEUE_FRAMES)"
            )
        if self._fits(item) and not self._waiting:
            self._append(item)
            return
        self._waiting += 1
        try:
            async with self._room:
                await asyncio.wait_for(self._room.wait_for(lambda: self._fits(item)), timeout_s)
                self._append(item)
        except TimeoutError:
            raise DeadlineExceeded(f"no room for the frames within {timeout_s:.1f} s") from None
        finally:
            self._waiting -= 1

    def _append(self, item: _Item) -> None:
        self._items.append(item)
        self.frames += item.frames
        self._nonempty.set()

    def peek(self) -> _Item:
        return self._items[0]

    def pop(self) -> _Item:
        item = self._items.popleft()
        self.frames -= item.frames
        if not self._items:
            self._nonempty.clear()
        if self._waiting:
            task = asyncio.get_running_loop().create_task(self._wake())
            self._wakers.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._wakers.discard)
        return item

    async def _wake(self) -> None:
        async with self._room:
            self._room.notify_all()

    async def wait(self) -> None:
        """Until the queue holds an item."""
        await self._nonempty.wait()


async def collect_batch(queue: FrameQueue, max_frames: int, max_delay_s: float) -> list[_Item]:
    """Wait for one item, then gather more until the next would pass ``max_frames`` or
    ``max_delay_s`` has passed since the first was taken. An item that does not fit stays at the
    front of the queue: it leads the next batch."""
    while not queue:
        await queue.wait()
    first = queue.pop()
    batch, frames = [first], first.frames
    end = time.monotonic() + max_delay_s
    while frames < max_frames:
        if not queue:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(queue.wait(), remaining)
            except TimeoutError:
                break
            continue
        if frames + queue.peek().frames > max_frames:
            break
        item = queue.pop()
        batch.append(item)
        frames += item.frames
    return batch


class DynamicBatcher:
    """Gathers frames from concurrent requests and encodes them together."""

    def __init__(
        self,
        encode: EncodeFn,
        max_batch_frames: int = 64,
        max_delay_ms: float = 10.0,
        max_queue_frames: int = 1024,
        on_batch: Callable[[int, int], None] | None = None,
        on_encoded: Callable[[float, int], None] | None = None,
    ) -> None:
        """``on_batch(requests, frames)`` and ``on_encoded(seconds, frames)`` after each batch (metrics,
        and the admission's estimate of the encoder's seconds per frame)."""
        if max_batch_frames < 1 or max_queue_frames < max_batch_frames:
            raise ValueError("need 1 <= max_batch_frames <= max_queue_frames")
        self._encode = encode
        self.max_batch_frames = max_batch_frames
        self.max_delay_s = max_delay_ms / 1e3
        self.max_queue_frames = max_queue_frames
        self._on_batch = on_batch
        self._on_encoded = on_encoded
        self._queue = FrameQueue(max_queue_frames)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    @property
    def queued_frames(self) -> int:
        return self._queue.frames

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dynamic-batcher")

    async def warmup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (the encoder's warm-up) on the thread that runs every batch."""
        await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            item = self._queue.pop()
            if not item.future.done():
                item.future.set_exception(Overloaded("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def encode(self, pixels: torch.Tensor, timeout_s: float = 30.0) -> torch.Tensor:
        """Frame embeddings ``[N, D]`` of ``pixels [N, ...]``. A full queue is waited on (in order) within
        ``timeout_s``; the request was admitted, and this bound is memory's, not admission's."""
        if int(pixels.shape[0]) == 0:
            raise ValueError("no frames to encode")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        item = _Item(pixels, loop.create_future(), deadline)
        await self._queue.put_waiting(item, timeout_s)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), max(deadline - time.monotonic(), 1e-3))
        except TimeoutError:
            raise DeadlineExceeded(f"no result within {timeout_s:.1f} s") from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await collect_batch(self._queue, self.max_batch_frames, self.max_delay_s)
            now = time.monotonic()
            live = [i for i in batch if not i.future.done() and i.deadline > now]
            for item in batch:
                if item not in live and not item.future.done():
                    item.future.set_exception(DeadlineExceeded("the request expired in the queue"))
            if not live:
                continue
            pixels = torch.cat([i.pixels for i in live])
            started = time.perf_counter()
            try:
                emb = await loop.run_in_executor(self._executor, self._encode, pixels)
            except Exception as exc:  # noqa: BLE001 - the error goes to every waiting request
                log.exception("encoder failed on a batch of %d frames", pixels.shape[0])
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._record(len(live), int(pixels.shape[0]), time.perf_counter() - started)
            for item, rows in zip(live, emb.split([i.frames for i in live]), strict=True):
                if not item.future.done():
                    item.future.set_result(rows)

    def _record(self, requests: int, frames: int, seconds: float) -> None:
        self.stats.batches += 1
        self.stats.frames += frames
        self.stats.requests += requests
        self.stats.sizes.append(frames)
        del self.stats.sizes[:-1000]
        if self._on_batch is not None:
            self._on_batch(requests, frames)
        if self._on_encoded is not None:
            self._on_encoded(seconds, frames)
