"""A timeline's results: one :class:`Segment` per window (``models/windows.py`` plans them,
``flow/embedder.py`` embeds them, ``engine/facade.py`` scores them), and :func:`merge_events`,
which joins consecutive windows that agree on their top label."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from text4vis.engine.vocab.classifier import Prediction


@dataclass
class Segment:
    start_s: float
    end_s: float
    frame_indices: list[int]  # the window's T sampled frames (display indices in the whole video)
    times_s: list[float]  # when those frames are shown
    predictions: list[Prediction]
    embedding: torch.Tensor  # the window's video embedding [D] (normalized; not sent over HTTP)
    first_frame: torch.Tensor | None = None  # uint8 [3, S, S]: the window's first sampled frame (thumbnails)


@dataclass(frozen=True)
class Event:
    label: str
    start_s: float
    end_s: float
    probability: float  # mean over the event's windows of the label's probability
    windows: int


def merge_events(segments: Iterable[Segment]) -> list[Event]:
    """Consecutive windows whose top label agrees become one event, from the first window's
    start to the last one's end."""
    events: list[Event] = []
    for segment in segments:
        if not segment.predictions:
            continue
        top = segment.predictions[0]
        last = events[-1] if events else None
        if last is not None and last.label == top.label:
            n = last.windows + 1
            events[-1] = Event(
                last.label,
                last.start_s,
                max(last.end_s, segment.end_s),
                (last.probability * last.windows + top.probability) / n,
                n,
            )
        else:
            events.append(Event(top.label, segment.start_s, segment.end_s, top.probability, 1))
    return events
