"""Still images and animations (GIF, WebP, TIFF), read by Pillow, upright as a viewer shows them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from text4vis.models.errors import MediaError, MediaLimitExceeded
from text4vis.models.limits import MediaLimits
from text4vis.models.media.base import IMAGE_FORMATS, FrameFn, MediaInfo, MediaReader, OneSize, short

_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


class PillowReader(MediaReader):
    def __init__(self, path: Path, image: Image.Image) -> None:
        self._path = path
        self._image = image
        frames = int(getattr(image, "n_frames", 1))
        turned = _orientation(image) in (5, 6, 7, 8)  # a phone's portrait photo
        self.info = MediaInfo(
            kind="animation" if frames > 1 else "image",
            num_frames=frames,
            width=image.height if turned else image.width,
            height=image.width if turned else image.height,
            fps=_gif_fps(image) if frames > 1 else None,
            decoder="pillow",
        )

    @classmethod
    def try_open(cls, path: Path, limits: MediaLimits) -> PillowReader | None:
        """A reader if ``path`` is an image, None if it is not; MediaError for a broken image,
        MediaLimitExceeded (before decoding it) for one past the limits."""
        looks_like_image = _sniff_image(path)
        try:
            with warnings.catch_warnings():  # past Pillow's warning size: our own limit decides below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
        except Image.DecompressionBombError:
            raise MediaLimitExceeded(
                f"{path.name}: the image has more than {limits.max_pixels} pixels (T4V_MAX_PIXELS)"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            if looks_like_image:
                raise MediaError(f"{path.name}: the image is truncated or corrupt ({short(exc)})") from None
            return None
        if image.format not in IMAGE_FORMATS:
            image.close()
            return None
        try:
            frames = int(getattr(image, "n_frames", 1))
            limits.check(path.name, "animation" if frames > 1 else "image", image.width, image.height, frames)
        except BaseException:
            image.close()
            raise
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            image.close()
            raise MediaError(f"{path.name}: the {image.format} image is truncated or corrupt ({short(exc)})") from None
        return cls(path, image)

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        decoded: dict[int, np.ndarray] = {}
        sizes = OneSize(self._path.name)
        try:
            for i in sorted(set(indices)):
                self._image.seek(i)
                frame = np.asarray(_upright(self._image).convert("RGB"))
                sizes.check(frame.shape[:2])
                decoded[i] = frame if each is None else each(frame)
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise MediaError(f"{self._path.name}: frame decoding failed ({short(exc)})") from None
        return np.stack([decoded[i] for i in indices])

    def close(self) -> None:
        self._image.close()


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation, 1 (as stored) where the EXIF block is missing or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data"
            return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - garbage EXIF raises SyntaxError, struct.error, ...
        return 1


def _upright(image: Image.Image) -> Image.Image:
    """The frame as a viewer shows it (EXIF orientation applied; garbage EXIF ignored)."""
    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001
        return image


def _sniff_image(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(16)
    return head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _gif_fps(image: Image.Image) -> float | None:
    duration = image.info.get("duration")
    return 1000.0 / duration if duration else None
