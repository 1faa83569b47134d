"""What an uploaded file may be, checked from its header before any frame is decoded (no heavy
imports: the settings and the CLI read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from text4vis.models.errors import MediaLimitExceeded


@dataclass(frozen=True)
class MediaLimits:
    """What a file may be, checked from its header before any frame is decoded (a 100-byte PNG
    can announce 65535 x 65535 pixels). Each refusal names the server setting that raises it."""

    max_pixels: int = 7680 * 4320  # 8K UHD
    max_aspect_ratio: float = 12.0
    max_animation_frames: int = 2000  # GIF/WebP/TIFF frames are decoded one after the other
    max_duration_s: float = 6 * 3600.0

    def check(self, name: str, kind: str, width: int, height: int, frames: int = 1, fps: float | None = None) -> None:
        if width * height > self.max_pixels:
            raise MediaLimitExceeded(
                f"{name}: {width}x{height} is {width * height} pixels per frame; at most "
                f"{self.max_pixels} (T4V_MAX_PIXELS)"
            )
        if max(width, height) > self.max_aspect_ratio * max(1, min(width, height)):
            raise MediaLimitExceeded(
                f"{name}: {width}x{height} has an aspect ratio beyond "
                f"{self.max_aspect_ratio:g}:1 (T4V_MAX_ASPECT_RATIO)"
            )
        if kind == "animation" and frames > self.max_animation_frames:
            raise MediaLimitExceeded(
                f"{name}: an animation of {frames} frames; at most {self.max_animation_frames} "
                "(T4V_MAX_ANIMATION_FRAMES)"
            )
        if fps and frames / fps > self.max_duration_s:
            raise MediaLimitExceeded(
                f"{name}: {frames / fps:.0f} s long; at most {self.max_duration_s:g} s (T4V_MAX_DURATION_S)"
            )
