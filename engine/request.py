"""The requests the engine takes, from the edge (HTTP routes, the CLI) to ``engine/facade.py``.

:class:`ClassifyRequest`: what to classify against (a registered vocabulary or ad-hoc labels),
which frames and views (:class:`ClipSpec`), how many predictions, and the "none of these" policy
(:class:`AbstainPolicy`). ``/classify``, the timeline, ``/archive/labels`` and the CLI build the
same object; there the clip also names the archive's table (embeddings made with those frames
and views). :meth:`ClipSpec.resolve` checks frames and views once, against the server's
:class:`RequestLimits`, and fills in its defaults. :class:`WindowSpec` (a timeline's windows)
and :class:`IndexRequest` (storing a file in the archive) complete them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from text4vis.models.choices import Sampling
from text4vis.models.errors import InputError
from text4vis.models.sampling import MAX_FRAMES_PER_CLIP
from text4vis.models.sampling import sample_indices as sample_indices  # re-exported: the method's arithmetic

if TYPE_CHECKING:  # numpy for annotations only: this module stays light (settings, the CLI's arguments)
    import numpy as np

FEW_SHOT_METHODS = ("tip-adapter", "prototype")

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
class ResolvedClip:
    """A :class:`ClipSpec` checked against the limits, every value known."""

    frames: int
    clips: int
    crops: int
    sampling: Sampling

    @property
    def views(self) -> int:
        return self.clips * self.crops

    def windows(self) -> ResolvedClip:
        """How a timeline's windows are embedded with these frames: one view each, their frames
        spread evenly over the window (the 1x1 table of the archive holds them)."""
        return ResolvedClip(self.frames, 1, 1, Sampling.EXACT)


@dataclass(frozen=True)
class ClipSpec:
    """Frames and views as asked; ``None``: the limits' default."""

    frames: int | None = None
    views: str = "1x1"
    sampling: Sampling | None = None

    def resolve(self, limits: RequestLimits) -> ResolvedClip:
        """Check against ``limits`` (:class:`InputError` naming what is wrong) and fill in the defaults."""
        frames = self.frames if self.frames is not None else limits.default_frames
        if frames < 1:
            raise InputError("frames must be at least 1")
        if frames > limits.max_frames:
            raise InputError(f"frames must be at most {limits.max_frames} on this server (its max_frames)")
        clips, crops = parse_views(self.views)
        max_clips, max_crops = parse_views(limits.max_views)
        if clips > max_clips or crops > max_crops:
            raise InputError(f"views must be at most {limits.max_views}")
        sampling = Sampling(self.sampling or limits.default_sampling)
        if sampling is Sampling.FAST and clips != 1:
            raise InputError("sampling=fast takes one clip per video (views 1x1 or 1x3)")
        return ResolvedClip(frames, clips, crops, sampling)


@dataclass(frozen=True)
class AbstainDefaults:
    """A vocabulary's default for "none of these" (``engine/vocab/abstain.py``), stored with it: score a
    background vocabulary (``background``: a registered vocabulary's name; None: the built-in one)
    and abstain when it wins by ``margin``, or under ``min_score``. A request's own fields override."""

    margin: float = 0.0
    min_score: float | None = None
    background: str | None = None

    def to_json(self) -> str:
        return json.dumps({"margin": self.margin, "min_score": self.min_score, "background": self.background})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> AbstainDefaults | None:
        if not text:
            return None
        value = json.loads(text)
        return cls(float(value.get("margin", 0.0)), value.get("min_score"), value.get("background"))


@dataclass(frozen=True)
class FewShotAsk:
    """What a PUT asks: a method (``auto``: the better of the two by leave-one-out) and its
    parameters; unset ones are fitted by leave-one-out."""

    method: str = "auto"
    alpha: float | None = None
    beta: float | None = None
    blend: float | None = None

    def __post_init__(self) -> None:
        if self.method not in (*FEW_SHOT_METHODS, "auto"):
            raise InputError(f"few_shot method must be tip-adapter, prototype or auto; got {self.method!r}")
        for name in ("alpha", "beta", "blend"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InputError(f"few_shot {name} must be a finite number; got {value}")
        if self.blend is not None and not 0.0 <= self.blend <= 1.0:
            raise InputError(f"few_shot blend must be 0..1; got {self.blend}")
        if (self.alpha is not None and self.alpha < 0) or (self.beta is not None and self.beta < 0):
            raise InputError("few_shot alpha and beta must be 0 or more")


@dataclass(frozen=True)
class Examples:
    """Examples given with ad-hoc labels (``t4v classify --examples``): each one's label and its
    embedding (normalized float32 ``[D]``), used as ``ask`` says (``engine/vocab/few_shot.py``)."""

    labels: tuple[str, ...]
    embeddings: np.ndarray  # float32 [N, D]
    ask: FewShotAsk = field(default_factory=FewShotAsk)
    ids: tuple[str, ...] = ()  # where each came from (archive ids or paths), for messages


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
    examples: Examples | None = None  # ad-hoc labels only (a vocabulary has its own)

    def check(self, limits: RequestLimits) -> ResolvedClip:
        """Check the request against ``limits`` (:class:`InputError` naming what is wrong) and
        return its frames and views with the defaults filled in."""
        if (self.vocab is None) == (self.labels is None):
            raise InputError("give exactly one of vocab or labels")
        if self.templates is not None and self.vocab is not None:
            raise InputError("templates go with ad-hoc labels; a vocabulary has its own")
        if self.examples is not None and self.vocab is not None:
            raise InputError("examples go with ad-hoc labels; a vocabulary has its own")
        if self.top_k < 0:
            raise InputError("top_k must be 0 (all labels) or positive")
        return self.clip.resolve(limits)


@dataclass(frozen=True)
class WindowSpec:
    """A timeline's windows: ``window_s`` seconds each, one every ``stride_s``, at most ``max_windows``."""

    window_s: float
    stride_s: float
    max_windows: int = 2_000


MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 16


def parse_metadata(text: str) -> dict[str, Any]:
    """User metadata sent as JSON text: an object, checked by :func:`check_metadata` (NaN and
    Infinity, which JSON has not, are refused as they are read)."""
    if not text:
        return {}

    def no_constant(name: str) -> None:
        raise InputError(f"metadata may hold finite numbers only, not {name}")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except (json.JSONDecodeError, RecursionError):
        raise InputError('metadata must be a JSON object, e.g. {"camera": 3}') from None
    return check_metadata(value)


def check_metadata(value: object) -> dict[str, Any]:
    """``value`` when it is metadata every read can send back: a JSON object of at most
    :data:`MAX_METADATA_BYTES` bytes and :data:`MAX_METADATA_DEPTH` levels, with string keys and
    finite numbers; :class:`InputError` otherwise (an object nested 300 deep was stored and every
    page that reached it answered 500)."""
    if not isinstance(value, dict):
        raise InputError('metadata must be a JSON object, e.g. {"camera": 3}')
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_METADATA_DEPTH:
            raise InputError(f"metadata may be nested {MAX_METADATA_DEPTH} levels deep at most")
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise InputError("metadata's keys must be strings")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InputError(f"metadata may hold finite numbers only, not {item}")
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise InputError(f"metadata may hold JSON values only, not {type(item).__name__}")
    if len(json.dumps(value, allow_nan=False).encode()) > MAX_METADATA_BYTES:
        raise InputError(f"metadata must be at most {MAX_METADATA_BYTES // 1024} KiB as JSON")
    return value


@dataclass(frozen=True)
class IndexRequest:
    """Store a file in the archive: its video row (``clip``: which frames and views, hence which
    table), with ``window_s`` its windows' rows too, ``metadata`` on each. A file stored already
    is not decoded again: the windows it lacks are added, the metadata merged into its own."""

    clip: ClipSpec = field(default_factory=ClipSpec)
    window_s: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    replace_metadata: bool = False  # a stored file's metadata replaced by these, not merged with them

    def __post_init__(self) -> None:
        check_metadata(self.metadata)
