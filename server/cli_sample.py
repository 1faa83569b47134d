"""``t4v sample``: a small video to send on a first try, made here (no download): a few seconds of
a coloured square moving over a gradient, H.264 in MP4, which every decoder and browser reads.
Its predictions mean nothing; it shows the request and the answer's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

WIDTH, HEIGHT, FPS = 320, 240, 25


def register(app: typer.Typer) -> None:
    app.command()(sample)


def sample(
    path: Annotated[Path, typer.Argument(help="Where to write the clip (.mp4).")] = Path("clip.mp4"),
    seconds: Annotated[float, typer.Option(min=0.5, max=60, help="Its length.")] = 4.0,
) -> None:
    """Write a small sample video (a moving square, H.264) to send to the server on a first try."""
    import av
    import numpy as np

    if path.exists():
        sys_error(f"{path} exists already: name another file")
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([x * 255 // (WIDTH - 1), y * 255 // (HEIGHT - 1), (x + y) % 256], -1).astype(np.uint8)
    side = HEIGHT // 4
    try:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            for i in range(round(seconds * FPS)):
                frame = base.copy()
                left, top = (i * 4) % (WIDTH - side), (i * 3) % (HEIGHT - side)
                frame[top : top + side, left : left + side] = (230, 60, 40)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except (OSError, av.error.FFmpegError) as exc:
        path.unlink(missing_ok=True)
        sys_error(f"cannot write {path}: {exc}")
    typer.echo(
        f"wrote {path} ({seconds:g} s, {WIDTH}x{HEIGHT}): curl -F file=@{path} -F vocab=... localhost:8000/classify"
    )


def sys_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
