"""How the classify flow's stages are sized (:class:`FlowOptions`: the server's settings, or the
CLI's choices offline) and the callbacks its metrics listen on. No heavy imports: the settings
and the CLI read it before any model loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from text4vis.models.limits import MediaLimits


@dataclass(frozen=True)
class FlowOptions:
    """How the stages are sized: the server's settings, or the CLI's choices offline."""

    decode_workers: int = 2  # processes; 0: two threads (no isolation: the CLI, tests)
    max_decode_queue: int = 256  # requests in progress at most (uploading or working): memory's bound
    max_queue_wait_s: float = 10.0  # admission: refuse a request predicted to wait longer to start
    decode_budget_s: float = 20.0
    media_limits: MediaLimits = field(default_factory=MediaLimits)
    max_batch_frames: int = 64
    max_delay_ms: float = 10.0
    max_queue_frames: int = 512


@dataclass(frozen=True)
class FlowHooks:
    """Callbacks the server's metrics listen on (none offline)."""

    on_batch: Callable[[int, int], None] | None = None
    on_decoded: Callable[[float], None] | None = None
    on_worker_replaced: Callable[[str], None] | None = None
