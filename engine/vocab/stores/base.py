"""The contract every vocabulary store implements (SQLite, Redis): storage only; validation and
encoding live in the registry. Both run the same test suite (``tests/integration/test_registry.py``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import numpy as np

from text4vis.engine.vocab.record import LintWarning, VocabRecord, VocabSummary

TOUCH_EVERY_S = 3600.0  # a read marks an embedding used at most this often (reads stay reads)


class VocabStore(ABC):
    """Storage only: validation and encoding live in the registry.

    The text-embedding cache (prompt -> embedding, per text model) is bounded: past
    ``max_prompts`` the least recently used are dropped (they are a cache: a vocabulary keeps its
    whole matrix, and a dropped prompt is encoded again if a later PUT needs it)."""

    def health(self) -> str | None:
        """What fails now, for ``/health/ready`` (None: nothing known to fail). May block briefly."""
        return None

    @abstractmethod
    def get(self, name: str) -> VocabRecord | None: ...

    @abstractmethod
    def head(self, name: str) -> tuple[int, str] | None:
        """``(version, etag)`` without the matrix: the cheap check made on every read."""

    @abstractmethod
    def put(self, record: VocabRecord, if_match: str | None = None) -> tuple[VocabRecord, bool]:
        """Store ``record`` as the next version; ``(stored, changed)``. ``record.version`` is ignored.

        Same etag as stored: nothing changes, the stored record comes back with ``changed=False``.
        """

    @abstractmethod
    def put_lint(self, name: str, etag: str, warnings: list[LintWarning]) -> None:
        """Keep a version's lint with it (nothing if ``name`` is no longer at ``etag``)."""

    @abstractmethod
    def delete(self, name: str) -> bool: ...

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def summaries(self) -> list[VocabSummary]:
        """Every vocabulary, sorted by name, in one query that reads no matrix."""

    @abstractmethod
    def get_embeddings(self, text_model: str, prompts: Iterable[str]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def put_embeddings(self, text_model: str, embeddings: dict[str, np.ndarray]) -> None: ...

    def subscribe(self, on_change: Callable[[str], None]) -> None:  # noqa: B027 - optional
        """Call ``on_change(name)`` when another replica changes a vocabulary (where supported)."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


def vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32).copy()
