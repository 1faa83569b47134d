"""PyAV's exact read by seeking: the packet scan that says when each frame is shown, and the read
that jumps to the keyframe before each wanted frame."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from text4vis.models.media.base import FrameTimes
from text4vis.models.media.container import open_container, to_rgb, video_stream


def scan_packets(path: Path) -> FrameTimes | None:
    """:class:`FrameTimes` of the video stream of ``path``; None where the packets do not say
    (a packet without a timestamp, two frames at one timestamp)."""
    with open_container(path, demux_only=True) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        if not base:
            return None
        pts: list[int] = []
        key_pts: list[int] = []
        end = None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
            last = packet.pts + max(packet.duration or 0, 0)
            end = last if end is None else max(end, last)
    order = np.array(sorted(pts), dtype=np.int64)
    if not len(order) or len(np.unique(order)) != len(order) or end is None:
        return None
    keys = sorted(int(np.searchsorted(order, k)) for k in key_pts)
    if end <= order[-1] and len(order) > 1:  # no packet durations: the last frame lasts as long as the one before
        end = int(order[-1] + (order[-1] - order[-2]))
    return FrameTimes(order, keys, Fraction(base), int(end))


def read_seeking(
    container: av.container.InputContainer,
    wanted: list[int],
    threads: int = 1,
    skip: bool = True,
    times: FrameTimes | None = None,
    convert: Callable[[av.VideoFrame], np.ndarray] = to_rgb,
) -> dict[int, np.ndarray] | None:
    """The ``wanted`` frames (sorted display indices), jumping to the last keyframe before each
    one instead of decoding everything between them; ``None`` where that cannot be done exactly.

    ``times``: the packet scan (:func:`scan_packets`), which gives each timestamp's display index
    and the keyframes for any frame rate, open GOPs and partial indexes. Without it, the container's
    index gives the keyframes (one entry per frame, in decode order: a keyframe's position in it is
    its display index for closed GOPs only) and a frame's display index is its timestamp over the
    frame duration, which holds for constant-rate video only. Between a keyframe and a
    wanted frame, the packets of frames nobody wants are decoded with ``skip_frame=NONREF``
    (``skip``): a frame no other frame references is not decoded at all, which changes no other
    frame's pixels. So every decoded frame is checked: the first after a seek must be the keyframe
    sought, the next ones must come in display order, and a frame may be missing only if it was
    not wanted; anything else (variable rate without a scan, open GOPs, a bad index) answers
    ``None`` and the caller counts frames from the start instead.
    """
    stream = video_stream(container, threads)
    timeline = _Timeline.of(stream, times, wanted[-1])
    if timeline is None or len(timeline.keys) < 2 or timeline.keys[0] != 0:
        return None
    return _SeekingRead(container, stream, timeline, set(wanted), skip, convert).read(wanted)


class _Timeline:
    """Display index <-> timestamp, and the keyframes: from the packet scan when there is one, else
    from the container's index and the frame rate (constant-rate video, closed GOPs only)."""

    def __init__(
        self, keys: list[int], index_of: Callable[[int | None], int | None], seek_pts: Callable[[int], int]
    ) -> None:
        self.keys, self.index_of, self.seek_pts = keys, index_of, seek_pts

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream, times: FrameTimes | None, last: int) -> _Timeline | None:
        if times is not None:
            return cls(times.keys, times.index_of, lambda key: int(times.pts[key]))
        rate, base = stream.average_rate, stream.time_base
        if not rate or not base:
            return None
        entries = list(stream.index_entries or [])
        if len(entries) != (stream.frames or len(entries)) or len(entries) <= last:
            return None
        ticks = 1 / float(rate * base)  # stream time units per frame
        origin = stream.start_time or 0
        return cls(
            [i for i, entry in enumerate(entries) if entry.is_keyframe],
            lambda pts: None if pts is None else round((pts - origin) / ticks),
            lambda key: round(origin + key * ticks),
        )

    def key_of(self, index: int) -> int:
        """The last keyframe at or before ``index``."""
        return self.keys[bisect.bisect_right(self.keys, index) - 1]


class _Mismatch(Exception):
    """A decoded frame is not the one the timeline expects: the read cannot be exact."""


class _SeekingRead:
    """One read: per wanted frame, go on decoding or jump to its keyframe, and check each frame."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        timeline: _Timeline,
        want: set[int],
        skip: bool,
        convert: Callable[[av.VideoFrame], np.ndarray],
    ) -> None:
        self.container, self.stream, self.timeline = container, stream, timeline
        self.want, self.skip, self.convert = want, skip, convert
        self.codec = stream.codec_context
        self.decoded: dict[int, np.ndarray] = {}
        self.frames: Iterator[av.VideoFrame] | None = None
        self.position = -1  # display index of the last frame decoded
        self.drain_at: int | None = None  # the display index after whose packet no more packets are fed

    def read(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        at_start = True  # nothing demuxed yet: reading on starts at frame 0
        try:
            for n, target in enumerate(wanted):
                if target in self.decoded:
                    continue
                key = self.timeline.key_of(target)
                # The last wanted frame before a seek: once its packet is in, the decoder is drained
                # instead of fed the packets after it, which its output order would wait for and
                # nothing here needs (a frame only references frames decoded before it).
                last_in_its_gop = n + 1 == len(wanted) or self.timeline.key_of(wanted[n + 1]) > key
                self.drain_at = target if last_in_its_gop else None
                expect, first = self._position_for(key, at_start)
                at_start = False
                self._decode_until(target, expect, first)
                if self.drain_at is not None:  # drained: reset the decoder for the next seek
                    self.codec.flush_buffers()
                    self.frames = None
                if target not in self.decoded:
                    return None  # the file ended early: the sequential read says how
        except _Mismatch:
            return None
        return self.decoded

    def _position_for(self, key: int, at_start: bool) -> tuple[int, bool]:
        """Where decoding goes on from (the display index expected next) and whether the next frame
        is the first after a seek (it must then be the keyframe sought)."""
        expect = self.position + 1
        if self.frames is None and key == 0 and at_start:
            self.frames = self._frames_from_here()
            return expect, True
        if self.frames is None or key > expect:  # a keyframe between here and the target: jump to it
            self.container.seek(self.timeline.seek_pts(key), stream=self.stream, backward=True)  # demuxers seek on pts
            self.frames = self._frames_from_here()
            return key, True
        return expect, False  # going on: skipped frames may come before the next one

    def _decode_until(self, target: int, expect: int, first: bool) -> None:
        assert self.frames is not None
        for frame in self.frames:
            index = self.timeline.index_of(frame.pts)
            if index is None or index < expect or (first and index != expect):
                raise _Mismatch
            if any(i in self.want for i in range(expect, index)):  # a wanted frame did not come out
                raise _Mismatch
            first, self.position = False, index
            if index in self.want:
                self.decoded[index] = self.convert(frame)
            if index >= target:
                return
            expect = index + 1

    def _frames_from_here(self) -> Iterator[av.VideoFrame]:
        fed: set[int] = set()
        packets = self.container.demux(self.stream)
        while self.drain_at is None or self.drain_at not in fed:
            packet = next(packets, None)
            if packet is None:
                return
            i = self.timeline.index_of(packet.pts)
            if self.skip:  # decode only what is wanted or referenced; the decoder reads this per frame
                self.codec.skip_frame = "DEFAULT" if i is None or i in self.want else "NONREF"
            if i is not None:
                fed.add(i)
            yield from packet.decode()
        yield from self.codec.decode(None)  # the frames the decoder holds back for reordering
