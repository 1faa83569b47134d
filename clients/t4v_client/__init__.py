"""Client for text4vis-serve: ``Client`` / ``AsyncClient``, typed results and errors."""

from t4v_client.client import AsyncClient, Client
from t4v_client.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    T4VError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
)
from t4v_client.models import (
    AbstainDefault,
    ClassifyResult,
    Event,
    Health,
    Prediction,
    Segment,
    Timeline,
    TimelineEnd,
    TimelineStart,
    Vocabulary,
    VocabularySummary,
)

__all__ = [
    "AbstainDefault",
    "AsyncClient",
    "Client",
    "ClassifyResult",
    "Event",
    "Health",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "PreconditionFailed",
    "Segment",
    "ServerError",
    "T4VError",
    "Timeline",
    "TimelineEnd",
    "TimelineStart",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMedia",
    "Vocabulary",
    "VocabularySummary",
]
