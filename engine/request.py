"""One classify request, from the edge to the engine: what to classify against (a registered
vocabulary or ad-hoc labels), which frames and views (:class:`ClipSpec`), how many predictions,
and the "none of these" policy (:class:`AbstainPolicy`). The HTTP routes, ``t4v classify`` and
the archive build the same object; :meth:`ClassifyRequest.resolved` checks it once, against the
server's :class:`RequestLimits`, and fills in the server's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError
from text4vis.models.sampling import MAX_FRAMES_PER_CLIP
from text4vis.models.sampling import sample_indices as sample_indices  # re-exported: the method's arithmetic

if TYPE_CHECKING:  # the classifier module imports torch; this one stays light (settings, CLI)
    from text4vis.engine.vocab.classifier import AbstainDefaults

MAX_CLIPS = 16


def parse_views(views: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(clips=4, crops=3)``. Crops are 1 (center) or 3 (left, right and center
    along the width, at mid-height, whatever the orientation)."""
    try:
        clips_text, crops_text = views.lower().split("x")
        clips, crops = int(clips_text), int(crops_text)
    except ValueError:
        raise InputError(f"views must look like CLIPSxCROPS, e.g. 1x1 or 4x3; got {views!r}") from None
    if not 1 <= clips <= MAX_CLIPS or crops not in (1, 3):
        raise InputError(f"views {views!r}: clips must be 1..{MAX_CLIPS} and crops 1 or 3")
    return clips, crops


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for, and what it gets when it asks nothing (the server's settings;
    the CLI's own defaults offline)."""

    default_frames: int = 8
    max_frames: int = 32
    max_views: str = "4x3"
    default_sampling: Sampling = Sampling.EXACT

    def __post_init__(self) -> None:
        if not 1 <= self.default_frames <= self.max_frames <= MAX_FRAMES_PER_CLIP:
            raise InputError(f"need 1 <= default_frames <= max_frames <= {MAX_FRAMES_PER_CLIP}")
        parse_views(self.max_views)


@dataclass(frozen=True)
class ClipSpec:
    """Frames and views as asked; ``None``: the limits' default."""

    frames: int | None = None
    views: str = "1x1"
    sampling: Sampling | None = None


@dataclass(frozen=True)
class ResolvedClip:
    """A :class:`ClipSpec` checked against the limits, every value known."""

    frames: int
    clips: int
    crops: int
    sampling: Sampling

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass(frozen=True)
class AbstainPolicy:
    """ "None of these" as asked: ``abstain`` None follows the vocabulary's default (off without
    one), False turns it off, True scores the background; unset values come from the default."""

    abstain: bool | None = None
    margin: float | None = None
    min_score: float | None = None
    background: str | None = None

    def resolved(self, default: AbstainDefaults | None) -> ResolvedAbstain:
        """The request's values, else the vocabulary's default, else off."""
        if self.abstain is False:  # off for this request, whatever the vocabulary's default (its min_score stays)
            if self.background:
                raise InputError("background names a vocabulary to abstain against; it needs abstain unset or true")
            return ResolvedAbstain(False, 0.0, self.min_score, None)
        on = self.abstain if self.abstain is not None else bool(self.background) or default is not None
        margin = self.margin if self.margin is not None else (default.margin if default else 0.0)
        min_score = self.min_score if self.min_score is not None else (default.min_score if default else None)
        background = self.background or (default.background if default else None)
        return ResolvedAbstain(on, margin, min_score, background)


@dataclass(frozen=True)
class ResolvedAbstain:
    score_background: bool
    margin: float
    min_score: float | None
    background: str | None  # a registered vocabulary; None: the built-in one

    @property
    def decides(self) -> bool:
        """Whether the answer says abstained or not (a background scored, or a minimum cosine)."""
        return self.score_background or self.min_score is not None


@dataclass(frozen=True)
class ClassifyRequest:
    """Exactly one of ``vocab`` (a registered name) and ``labels`` (ad-hoc class names)."""

    vocab: str | None = None
    labels: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None  # ad-hoc labels only (a vocabulary has its own)
    clean_labels: bool = False
    clip: ClipSpec = field(default_factory=ClipSpec)
    top_k: int = 5
    abstain: AbstainPolicy = field(default_factory=AbstainPolicy)

    def resolved(self, limits: RequestLimits) -> ResolvedClip:
        """Check the request against ``limits`` (:class:`InputError` naming what is wrong) and
        return its frames and views with the defaults filled in."""
        if (self.vocab is None) == (self.labels is None):
            raise InputError("give exactly one of vocab or labels")
        if self.templates is not None and self.vocab is not None:
            raise InputError("templates go with ad-hoc labels; a vocabulary has its own")
        if self.top_k < 0:
            raise InputError("top_k must be 0 (all labels) or positive")
        frames = self.clip.frames if self.clip.frames is not None else limits.default_frames
        if frames < 1:
            raise InputError("frames must be at least 1")
        if frames > limits.max_frames:
            raise InputError(f"frames must be at most {limits.max_frames} on this server (its max_frames)")
        clips, crops = parse_views(self.clip.views)
        max_clips, max_crops = parse_views(limits.max_views)
        if clips > max_clips or crops > max_crops:
            raise InputError(f"views must be at most {limits.max_views}")
        sampling = Sampling(self.clip.sampling or limits.default_sampling)
        if sampling is Sampling.FAST and clips != 1:
            raise InputError("sampling=fast takes one clip per video (views 1x1 or 1x3)")
        return ResolvedClip(frames, clips, crops, sampling)
