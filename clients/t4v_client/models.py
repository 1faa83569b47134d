"""Typed results (they mirror the server's OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    probability: float
    score: float


class VocabRef(BaseModel):
    name: str
    version: int


class ClassifyResult(BaseModel):
    vocab: VocabRef | None
    predictions: list[Prediction]
    model: str
    frame_indices: list[int]
    timing_ms: dict[str, float]
    thumbnails: list[str] | None = None
    abstained: bool | None = None  # with abstain / min_score: "none of these"
    abstain_reason: str | None = None
    background: list[Prediction] | None = None  # with abstain: the nearest background labels
    archive_id: str | None = None  # with index=True: the archive row's id
    archive_stored: bool | None = None  # with index=True: False while the archive cannot be written (kept, retried)
    archive_error: str | None = None  # why it cannot


class Segment(BaseModel):
    """One window of a timeline and its predictions."""

    start_s: float
    end_s: float
    frame_indices: list[int]
    times_s: list[float]  # when the sampled frames are shown
    predictions: list[Prediction]


class Event(BaseModel):
    """Consecutive windows that agree on their top label."""

    label: str
    start_s: float
    end_s: float
    probability: float  # mean over its windows
    windows: int


class _TimelineInfo(BaseModel):
    vocab: VocabRef | None
    model: str
    duration_s: float
    window_s: float
    stride_s: float
    frames: int


class Timeline(_TimelineInfo):
    segments: list[Segment]
    events: list[Event]
    timing_ms: dict[str, float]
    archive_id: str | None = None  # with index=True: the video whose windows were stored


class TimelineStart(_TimelineInfo):
    """First item of a streamed timeline: what is coming."""

    windows: int


class TimelineEnd(BaseModel):
    """Last item of a streamed timeline."""

    events: list[Event]
    timing_ms: dict[str, float]
    archive_id: str | None = None


class LintWarning(BaseModel):
    kind: str  # similar | near_duplicate | examples
    labels: list[str]
    cosine: float


class Similarity(BaseModel):
    labels: list[str]
    order: list[int]  # clustered: similar labels adjacent
    matrix: list[list[float]]


class AbstainDefault(BaseModel):
    """A vocabulary's default for "none of these" (requests naming it abstain unless they say not to)."""

    margin: float = 0.0
    min_score: float | None = None
    background: str | None = None  # a registered vocabulary; None: the server's built-in background


class FewShotSettings(BaseModel):
    """How a vocabulary uses its examples; a parameter left out is fitted by leave-one-out."""

    method: str = "auto"  # tip-adapter | prototype | auto
    alpha: float | None = None  # tip-adapter's cache weight
    beta: float | None = None  # tip-adapter's sharpness
    blend: float | None = None  # prototype: the weight of the examples' mean


class FewShotFit(BaseModel):
    zero_shot: float  # leave-one-out accuracy over the examples of the text classifier alone
    few_shot: float  # the same with the examples
    queries: int


class FewShot(BaseModel):
    method: str
    alpha: float
    beta: float
    blend: float
    asked: FewShotSettings
    examples: dict[str, int]  # per label
    ids: dict[str, list[str]]  # the archive rows, per label
    made_under: str
    fit: FewShotFit | None = None


class Vocabulary(BaseModel):
    name: str
    version: int
    labels: list[str]
    templates: list[str]
    clean_labels: bool = False
    text_model: str
    etag: str
    abstain: AbstainDefault | None = None
    warnings: list[LintWarning] = []  # label pairs the classifier will likely confuse (informative)
    few_shot: FewShot | None = None  # its examples and how they are used


class VocabularySummary(BaseModel):
    name: str
    version: int
    num_labels: int
    text_model: str
    etag: str
    encoded_for_this_model: bool = True  # False: the server encodes it again for its model on first use


class Health(BaseModel):
    live: bool
    ready: bool
    detail: str | None = None


class ArchiveRow(BaseModel):
    """A stored video (or one window of it) in the server's archive."""

    id: str
    content_id: str  # the file's SHA-256
    name: str
    names: list[str] = []  # every name (path, upload name) the same content was seen under
    kind: str  # video | window
    start_s: float
    end_s: float
    duration_s: float | None = None
    metadata: dict[str, object] = {}
    created_at: str
    thumbnail: str | None = None  # a JPEG data URL, when asked
    embedding: list[float] | None = None  # the stored embedding, when asked


class ArchiveIndexed(BaseModel):
    video: ArchiveRow
    windows: int
    new: bool  # False: the same file was stored before
    rows_added: int = 0
    metadata_updated: bool = False
    name_added: bool = False


class ArchivePage(BaseModel):
    rows: list[ArchiveRow]
    total: int
    offset: int


class SearchHit(ArchiveRow):
    score: float  # cosine of the text and the row


class RelabelledRow(BaseModel):
    """One stored row under a vocabulary (``relabel_archive``): what /classify answers the same file."""

    id: str
    content_id: str
    name: str
    names: list[str] = []
    kind: str
    start_s: float
    end_s: float
    predictions: list[Prediction]
    abstained: bool | None = None
    abstain_reason: str | None = None
