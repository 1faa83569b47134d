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

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _Item) -> None:
        """Append ``item``, or raise :class:`Overloaded` at once if its frames do not fit."""
        if self.frames + item.frames > self.max_frames:
            raise Overloaded(f"{self.frames} frames are queued (limit {self.max_frames})")
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
        return item

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
    ) -> None:
        if max_batch_frames < 1 or max_queue_frames < max_batch_frames:
            raise ValueError("need 1 <= max_batch_frames <= max_queue_frames")
        self._encode = encode
        self.max_batch_frames = max_batch_frames
        self.max_delay_s = max_delay_ms / 1e3
        self.max_queue_frames = max_queue_frames
        self._on_batch = on_batch
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

    async def embed(self, pixels: torch.Tensor, timeout_s: float = 30.0) -> torch.Tensor:
        """Embeddings ``[N, D]`` of ``pixels [N, ...]``; :class:`Overloaded` at once if the queue is full."""
        if int(pixels.shape[0]) == 0:
            raise ValueError("no frames to embed")
        loop = asyncio.get_running_loop()
        item = _Item(pixels, loop.create_future(), time.monotonic() + timeout_s)
        self._queue.put(item)  # Overloaded at once when it does not fit
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout_s)
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
            try:
                emb = await loop.run_in_executor(self._executor, self._encode, pixels)
            except Exception as exc:  # noqa: BLE001 - the error goes to every waiting request
                log.exception("encoder failed on a batch of %d frames", pixels.shape[0])
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._record(len(live), int(pixels.shape[0]))
            for item, rows in zip(live, emb.split([i.frames for i in live]), strict=True):
                if not item.future.done():
                    item.future.set_result(rows)

    def _record(self, requests: int, frames: int) -> None:
        self.stats.batches += 1
        self.stats.frames += frames
        self.stats.requests += requests
        self.stats.sizes.append(frames)
        del self.stats.sizes[:-1000]
        if self._on_batch is not None:
            self._on_batch(requests, frames)
