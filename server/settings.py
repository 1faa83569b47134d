"""All configuration in one place: the serving options here and the model options of
``engine/options.py``, each declared once; every field is a ``T4V_*`` variable and a
``t4v serve`` option (``models/cli_options.py`` derives the options from these fields)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from text4vis.engine.flow.options import FlowOptions
from text4vis.engine.options import ModelOptions, model_options_of
from text4vis.engine.request import RequestLimits, parse_views
from text4vis.engine.vocab.validation import MAX_LABELS, MAX_TEMPLATES, STORED_PROMPTS
from text4vis.models.choices import Sampling
from text4vis.models.limits import MediaLimits
from text4vis.models.presets import LABEL_PRESETS
from text4vis.models.sampling import MAX_FRAMES_PER_CLIP
from text4vis.server.auth import read_key_file
from text4vis.server.pace import UploadPace


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 2


_LIMITS = MediaLimits()
_REQUEST = RequestLimits()  # one place for the frames and views a request may ask for
CLIENT_VARIABLES = frozenset({"T4V_URL", "T4V_API_KEY"})  # t4v-client's, not the server's


class ServingOptions(BaseModel):
    """HTTP, vocabularies, requests and batching."""

    # HTTP
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    shutdown_timeout_s: int = Field(20, ge=1, le=600, description="Graceful shutdown: seconds to finish requests.")

    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Host names this server answers to (comma-separated; *.example.com works); others get 400. "
        "'*': any.",
    )

    # API keys
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys (comma-separated) required to PUT/DELETE vocabularies; none: open. Prefer api_key_file.",
        json_schema_extra={"flag": "--api-key"},
    )
    api_key_file: Path | None = Field(None, description="File of API key SHA-256 hex digests, one per line.")
    auth_classify: bool = Field(False, description="With API keys: require one for /classify too.")
    auth_metrics: bool = Field(False, description="With API keys: require one for /metrics too.")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):  # T4V_ALLOWED_HOSTS=t4v.example.com,localhost
            value = [h.strip() for h in value.split(",") if h.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("T4V_ALLOWED_HOSTS (--allowed-hosts) is set but names no host: give one, or '*'")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):  # T4V_API_KEYS=key1,key2
            value = value.split(",") if value else []
        if isinstance(value, list):
            keys = [k.strip() for k in value if isinstance(k, str) and k.strip()]
            if value and not keys:  # T4V_API_KEYS=" , ": configured, yet it would leave the server open
                raise ValueError("T4V_API_KEYS (--api-key) is set but holds no key: give one, or unset it")
            return keys
        return value

    # vocabularies
    redis_url: str | None = Field(None, description="Share vocabularies through Redis; SQLite in data_dir if unset.")
    data_dir: Path = Field(Path("data"), description="SQLite store, upload spool and (by default) the archive.")
    archive_uri: str | None = Field(
        None, description="The archive: a LanceDB directory or URI (s3://... to share it); unset: data_dir/archive."
    )
    max_labels: int = Field(5000, ge=1, le=MAX_LABELS, description="Labels per vocabulary.")
    max_prompts: int = Field(
        65_536,
        ge=1,
        le=MAX_LABELS * MAX_TEMPLATES,
        description="Labels x templates of one vocabulary at most (PUT /vocab): what one write may ask the "
        "text encoder for.",
    )
    max_ad_hoc_prompts: int = Field(
        8192,
        ge=1,
        le=MAX_LABELS * MAX_TEMPLATES,
        description="Labels x templates of the ad-hoc labels one request may send (/classify, timelines, "
        "/archive/labels) at most; larger sets belong in a stored vocabulary.",
    )
    presets: list[str] = Field(
        default_factory=list,
        description="Built-in vocabularies to register at start-up.",
        json_schema_extra={"flag": "--preset"},
    )
    ad_hoc_cache_prompts: int = Field(
        20_000,
        ge=0,
        le=10_000_000,
        description="Prompt embeddings of ad-hoc labels kept in memory (LRU; never written to the store).",
    )
    stored_prompts: int = Field(
        STORED_PROMPTS,
        ge=1,
        le=100_000_000,
        description="Prompt embeddings of stored vocabularies kept in the store per text model (LRU): a cache "
        "that spares re-encoding; a vocabulary keeps its whole matrix.",
    )
    vocab_file: Path | None = Field(
        None, description='JSON {"name": {"labels": [...], "templates": [...]}} loaded at start-up.'
    )

    # requests and batching
    max_upload_bytes: int = Field(100 * 2**20, ge=1024, description="Largest upload; enforced while streaming.")
    upload_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="An upload must arrive within this many seconds plus 1 s per upload_min_rate bytes it "
        "sends (and within request_timeout_s, whose time it uses); slower: 408.",
    )
    upload_min_rate: int = Field(
        32 * 1024, ge=1, description="Bytes per second an upload must keep up after upload_timeout_s."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A request's line and headers must arrive within this many seconds (from connecting, or "
        "from its first byte on a kept-alive connection); slower: 408 and the connection closed.",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Open connections at most; one more is answered 503 and closed (the server raises its "
        "file-descriptor limit to fit).",
    )
    max_connections_per_client: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Open connections from one client address at most (behind a proxy every client is the "
        "proxy: raise it to max_connections there); one more: 503.",
    )
    default_frames: int = Field(
        _REQUEST.default_frames,
        ge=1,
        le=MAX_FRAMES_PER_CLIP,
        description="Frames sampled per clip when a request names none.",
    )
    max_frames: int = Field(
        _REQUEST.max_frames, ge=1, le=MAX_FRAMES_PER_CLIP, description="Largest `frames` a request may ask for."
    )
    max_views: str = Field(_REQUEST.max_views, description="Largest `views` a request may ask for (CLIPSxCROPS).")
    default_sampling: Sampling = Field(
        Sampling.EXACT,
        description="Frames when a request names none: exact (the method's) or fast (cheap, one per segment).",
    )
    max_batch_frames: int = Field(64, ge=1, le=4096, description="Frames per encoder call.")
    max_delay_ms: float = Field(10.0, ge=0, le=1000, description="Longest wait to fill a batch.")
    max_queue_frames: int = Field(
        512,
        ge=1,
        description="Frames waiting for the encoder at most (memory's bound); "
        "an admitted request whose frames do not fit waits for room within its deadline.",
    )
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Deadline of one classify request.")
    decode_workers: int = Field(
        default_factory=lambda: available_cores(),
        ge=0,
        le=256,
        description="Decode processes (default: the cores available); 0 decodes in threads.",
    )
    max_queue_wait_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Admission: a classify request is refused (503, before its upload is read, "
        "with Retry-After) when the work ahead of it is predicted to take longer "
        "than this to start on; at most request_timeout_s.",
    )
    max_decode_queue: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Classify requests in progress at most (uploading, waiting for or in a "
        "decode worker, encoding), whatever the predicted wait: the bound on "
        "memory and spool space; one more: 503 before its body is read.",
    )
    max_pixels: int = Field(
        _LIMITS.max_pixels,
        ge=1,
        description="Pixels per frame of an upload (from its header, before decoding); beyond: 413.",
    )
    max_aspect_ratio: float = Field(
        _LIMITS.max_aspect_ratio, ge=1, description="Longest side / shortest side of an upload's frames; beyond: 413."
    )
    max_animation_frames: int = Field(
        _LIMITS.max_animation_frames, ge=1, description="Frames of an animated GIF/WebP/TIFF; beyond: 413."
    )
    max_duration_s: float = Field(_LIMITS.max_duration_s, gt=0, description="Duration of a video; beyond: 413.")
    max_timeline_windows: int = Field(
        1024,
        ge=1,
        le=100_000,
        description="Windows of one timeline (POST /classify/timeline); more: 422 asking for a longer stride_s.",
    )
    timeline_timeout_s: float = Field(
        900.0,
        gt=0,
        le=24 * 3600,
        description="Deadline of one timeline, all its windows together (each group of windows is one decode job).",
    )
    archive_maintain_s: float = Field(
        60.0,
        ge=0,
        le=24 * 3600,
        description="Seconds between full rounds of archive upkeep (id and vector indices, compaction) on a "
        "thread of its own, beside a light round every 2 s (the id index caught up, small fragments merged), "
        "in Lance's threads at a lower CPU priority; 0: none (run t4v archive maintain --every S elsewhere).",
    )
    max_archive_scans: int = Field(
        2,
        ge=1,
        le=64,
        description="Re-labellings of the archive (POST /archive/labels) streaming at once; one more: 503.",
    )
    decode_budget_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="Longest a decode worker may spend on one file (a worker that overruns it "
        "is killed and replaced); beyond: 422.",
    )


class Settings(ServingOptions, ModelOptions, BaseSettings):
    """Validated at start-up; an unsafe combination fails before anything loads."""

    model_config = SettingsConfigDict(env_prefix="T4V_", extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_queue_frames < self.max_batch_frames:
            raise ValueError("max_queue_frames must be at least max_batch_frames")
        if self.max_queue_wait_s > self.request_timeout_s:
            raise ValueError("max_queue_wait_s must not exceed request_timeout_s")
        if self.decode_budget_s > self.request_timeout_s:
            raise ValueError("decode_budget_s must not exceed request_timeout_s")
        if self.upload_timeout_s > self.request_timeout_s:
            raise ValueError("upload_timeout_s must not exceed request_timeout_s")
        if self.default_frames > self.max_frames:
            raise ValueError("default_frames must not exceed max_frames")
        parse_views(self.max_views)
        if self.api_key_file is not None:
            if not self.api_key_file.is_file():
                raise ValueError(f"file not found: {self.api_key_file}")
            read_key_file(self.api_key_file)  # no active digest: refuse to start (auth fails closed)
        if (self.auth_classify or self.auth_metrics) and not (self.api_keys or self.api_key_file):
            raise ValueError(
                "--auth-classify / --auth-metrics need API keys (T4V_API_KEYS or T4V_API_KEY_FILE); "
                "without them every route would stay open"
            )
        unknown = [name for name in self.presets if name not in LABEL_PRESETS]
        if unknown:
            raise ValueError(f"unknown label preset {unknown[0]!r}; known: {', '.join(LABEL_PRESETS)}")
        if self.vocab_file is not None and not self.vocab_file.is_file():
            raise ValueError(f"file not found: {self.vocab_file}")
        if self.archive_uri is not None and self.archive_uri.lower().startswith("memory:"):
            raise ValueError(
                f"--archive-uri {self.archive_uri} keeps nothing once the server stops (every indexed video lost): "
                "give a directory or an object-store URI (s3://...), or leave it unset for data_dir/archive"
            )
        return self

    @classmethod
    def unknown_variables(cls, environ: dict[str, str] | None = None) -> list[str]:
        """``T4V_*`` variables that name no setting (a misspelling would otherwise pass silently),
        each with the closest setting's variable when one is close."""
        known = {f"T4V_{name.upper()}" for name in cls.model_fields}
        found = []
        for name in sorted(environ if environ is not None else os.environ):
            if name.startswith("T4V_") and name not in known and name not in CLIENT_VARIABLES:
                close = difflib.get_close_matches(name, known, n=1)
                found.append(f"{name} (did you mean {close[0]}?)" if close else name)
        return found

    def model_options(self) -> ModelOptions:
        return model_options_of(self)

    def media_limits(self) -> MediaLimits:
        return MediaLimits(self.max_pixels, self.max_aspect_ratio, self.max_animation_frames, self.max_duration_s)

    def request_limits(self) -> RequestLimits:
        return RequestLimits(self.default_frames, self.max_frames, self.max_views, self.default_sampling)

    def upload_pace(self) -> UploadPace:
        return UploadPace(self.upload_timeout_s, float(self.upload_min_rate), self.request_timeout_s)

    def archive_location(self) -> str:
        return self.archive_uri or str(self.data_dir / "archive")

    def flow_options(self) -> FlowOptions:
        return FlowOptions(
            decode_workers=self.decode_workers,
            max_decode_queue=self.max_decode_queue,
            max_queue_wait_s=self.max_queue_wait_s,
            decode_budget_s=self.decode_budget_s,
            media_limits=self.media_limits(),
            max_batch_frames=self.max_batch_frames,
            max_delay_ms=self.max_delay_ms,
            max_queue_frames=self.max_queue_frames,
        )
