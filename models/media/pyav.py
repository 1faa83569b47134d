"""Videos read by PyAV (FFmpeg), on the CPU or with NVDEC: the header, the frames by seeking
(``seeking.py``) or by counting from the start, converted to upright RGB."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from text4vis.models.errors import MediaError
from text4vis.models.media.base import FrameFn, FrameTimes, MediaInfo, MediaReader, OneSize, short
from text4vis.models.media.container import closed_on_error, open_container, to_rgb, video_stream
from text4vis.models.media.seeking import read_seeking, scan_packets

log = logging.getLogger(__name__)


class PyAVReader(MediaReader):
    def __init__(
        self,
        path: Path,
        threads: int,
        num_frames: int | None = None,
        count_frames: bool = True,
        seek: bool = True,
        gpu: int | None = None,
    ) -> None:
        self._path = path
        self._threads = threads
        self._gpu = gpu  # a CUDA device index: NVDEC decodes (probing and packet scans need no decoder)
        self._seek = seek  # False: always count frames from the start (the baseline in bench/decode.py)
        # The container opened to read the header is kept for the first read: an open costs as much
        # as decoding a frame (FFmpeg decodes the first one to learn the stream's parameters).
        self._unread: av.container.InputContainer | None = None
        try:
            container = open_container(path)
            with closed_on_error(container):
                if not container.streams.video:
                    raise MediaError(f"{path.name}: no video stream")
                stream = container.streams.video[0]
                n = num_frames or stream.frames
                counted = not n and count_frames
                if counted:  # no count in the header: count the packets
                    n = sum(1 for p in container.demux(stream) if p.size)
                fps = float(stream.average_rate) if stream.average_rate else None
                width, height = stream.codec_context.width, stream.codec_context.height
                if not width or not height or (count_frames and n < 1):
                    raise MediaError(f"{path.name}: the video has no decodable frames")
            if counted or gpu is not None:  # demuxed to its end, or NVDEC reads open their own
                container.close()
            else:
                self._unread = container
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001 - av raises InvalidDataError, FileNotFoundError, ...
            raise MediaError(f"{path.name}: not a video or image that can be decoded ({short(exc)})") from None
        self.info = MediaInfo("video", int(n or 0), width, height, fps, "pyav" if gpu is None else "nvdec")

    @functools.cached_property
    def _scan(self) -> FrameTimes | None:
        try:
            return scan_packets(self._path)
        except Exception:  # noqa: BLE001 - unreadable packets: the caller samples without keyframes
            return None

    def keyframes(self) -> list[int] | None:
        """Display indices of the keyframes, from one packet scan per reader (:func:`seeking.scan_packets`):
        fast sampling, timelines and the seeking read share it."""
        return self._scan.keys if self._scan is not None else None

    def frame_times(self) -> FrameTimes | None:
        return self._scan

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        if self._gpu is not None:
            try:
                return self._decode(indices, each, short_side)
            except Exception as exc:  # noqa: BLE001 - a codec, profile or size NVDEC lacks, or a damaged file
                log.warning("NVDEC could not decode %s (%s): decoding it on the CPU", self._path.name, short(exc))
                self._gpu = None
                self.info = replace(self.info, decoder="pyav")
        try:
            return self._decode(indices, each, short_side)
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise MediaError(f"{self._path.name}: truncated or corrupt video ({short(exc)})") from None

    def _decode(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        sizes = OneSize(self._path.name)

        def convert(frame: av.VideoFrame) -> np.ndarray:
            sizes.check((frame.height, frame.width))
            pixels = to_rgb(frame, short_side)
            return pixels if each is None else each(pixels)

        decoded = None
        if self._seek:
            decoded = self._read_by_seeking(sorted(set(indices)), convert=convert)
        if decoded is None:  # no usable index or not constant-rate: count every frame from the start
            with self._container() as container:
                decoded = self._read_sequential(container, set(indices), convert)
        return np.stack([decoded[i] for i in indices])

    def _container(self) -> av.container.InputContainer:
        """The container the header was read from if nothing has read it since (reading starts at
        its first packet), else a new one; NVDEC's when it decodes."""
        if self._unread is not None and self._gpu is None:
            container, self._unread = self._unread, None
            return container
        return open_container(self._path, self._gpu)

    def close(self) -> None:
        if self._unread is not None:
            self._unread.close()
            self._unread = None

    def _read_by_seeking(
        self,
        wanted: list[int],
        skip: bool = True,
        convert: Callable[[av.VideoFrame], np.ndarray] | None = None,
    ) -> dict[int, np.ndarray] | None:
        """Keyframes from the index, else from a packet scan (open GOPs, partial indexes); None
        when neither reads exactly (the caller counts frames)."""
        for scan in (False, True):
            times = self._scan if scan else None  # None: the container's index and the frame rate
            if scan and times is None:
                return None
            try:
                with self._container() as container:
                    decoded = read_seeking(
                        container, wanted, self._threads, skip=skip, times=times, convert=convert or to_rgb
                    )
            except Exception as exc:  # noqa: BLE001 - a failed seek or a damaged file: counting says which
                log.debug("seeking in %s failed (%s)", self._path.name, short(exc))
                continue
            if decoded is not None:
                return decoded
        return None

    def _read_sequential(
        self,
        container: av.container.InputContainer,
        wanted: set[int],
        convert: Callable[[av.VideoFrame], np.ndarray] | None = None,
    ) -> dict[int, np.ndarray]:
        stream = video_stream(container, self._threads)
        decoded: dict[int, np.ndarray] = {}
        count, last = 0, max(wanted)
        for count, frame in enumerate(container.decode(stream)):  # noqa: B007
            if count in wanted:  # convert only the sampled frames
                decoded[count] = (convert or to_rgb)(frame)
            if count >= last:
                break
        if len(decoded) < len(wanted):
            raise MediaError(
                f"{self._path.name}: truncated or corrupt: decoded {count + 1} of the "
                f"{self.info.num_frames} frames its header announces"
            )
        return decoded
