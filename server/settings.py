"""All configuration in one place: environment variables prefixed ``T4V_``, or ``t4v serve`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.runtime import ModelOptions
from engine.sampling import parse_views


class Settings(BaseSettings):
    """Validated at start-up; an unsafe combination fails before anything loads."""

    model_config = SettingsConfigDict(env_prefix="T4V_", extra="forbid")

    # HTTP
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    shutdown_timeout_s: int = Field(20, ge=1, le=600, description="Graceful shutdown: seconds to finish requests.")

    # model (the options of `t4v classify`)
    model: str | None = Field(None, description="open_clip architecture (default ViT-B-16).")
    pretrained: str | None = Field(None, description="open_clip pretrained tag (default openai).")
    clip_checkpoint: Path | None = Field(None, description="Local CLIP weights (open_clip or OpenAI format).")
    text4vis_checkpoint: Path | None = Field(None, description="Checkpoint released with Text4Vis.")
    temporal: Literal["mean", "transf"] | None = Field(None, description="Temporal head (default: the checkpoint's).")
    preprocess: Literal["clip", "text4vis"] | None = Field(None, description="Preprocessing mode.")
    random_init: bool = Field(False, description="Serve RANDOM weights on purpose (benchmarks only).")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="Visual encoder precision; auto: fp16 on CUDA, fp32 on the CPU."
    )
    decoder: Literal["auto", "decord", "pyav"] = Field("auto", description="Video decoder.")
    engine_dir: Path | None = Field(None, description="Engine directory from `t4v export` (ONNX/TensorRT).")
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = Field(
        "auto", description="Encoder backend; auto: TensorRT, then ONNX Runtime for an engine, else torch."
    )
    providers: tuple[Literal["tensorrt", "cuda", "cpu"], ...] = Field(
        ("tensorrt", "cuda", "cpu"), description="ONNX Runtime execution providers, in order of preference."
    )
    threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads (0: the cores).")
    compile: bool = Field(False, description="torch.compile the torch backend (CUDA hosts).")

    # vocabularies
    redis_url: str | None = Field(None, description="Share vocabularies through Redis; SQLite in data_dir if unset.")
    data_dir: Path = Field(Path("data"), description="SQLite store and upload spool.")
    max_labels: int = Field(5000, ge=1, le=100_000, description="Labels per vocabulary.")
    presets: list[str] = Field(default_factory=list, description="Built-in vocabularies to register at start-up.")
    vocab_file: Path | None = Field(
        None, description='JSON {"name": {"labels": [...], "templates": [...]}} loaded at start-up.'
    )

    # requests and batching
    max_upload_bytes: int = Field(100 * 2**20, ge=1024, description="Largest upload; enforced while streaming.")
    default_frames: int = Field(8, ge=1, le=64, description="Frames sampled per clip when a request names none.")
    max_frames: int = Field(32, ge=1, le=64, description="Largest `frames` a request may ask for.")
    max_views: str = Field("4x3", description="Largest `views` a request may ask for (CLIPSxCROPS).")
    max_batch_frames: int = Field(64, ge=1, le=4096, description="Frames per encoder call.")
    max_delay_ms: float = Field(10.0, ge=0, le=1000, description="Longest wait to fill a batch.")
    max_queue_frames: int = Field(512, ge=1, description="Frames waiting for the encoder; beyond: 503.")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Deadline of one classify request.")
    decode_workers: int = Field(2, ge=0, le=64, description="Decode processes; 0 decodes in threads.")
    max_decode_queue: int = Field(32, ge=1, description="Uploads waiting for or in a decode worker; beyond: 503.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.max_queue_frames < self.max_batch_frames:
            raise ValueError("max_queue_frames must be at least max_batch_frames")
        if self.default_frames > self.max_frames:
            raise ValueError("default_frames must not exceed max_frames")
        parse_views(self.max_views)
        for path in (self.clip_checkpoint, self.text4vis_checkpoint, self.vocab_file):
            if path is not None and not path.is_file():
                raise ValueError(f"file not found: {path}")
        if self.engine_dir is not None and not (self.engine_dir / "manifest.json").is_file():
            raise ValueError(f"{self.engine_dir} is not an engine directory (no manifest.json)")
        return self

    def model_options(self) -> ModelOptions:
        return ModelOptions(
            arch=self.model, pretrained=self.pretrained, clip_checkpoint=self.clip_checkpoint,
            text4vis_checkpoint=self.text4vis_checkpoint, temporal=self.temporal,
            preprocess=self.preprocess,  # type: ignore[arg-type]
            random_init=self.random_init, device=self.device, precision=self.precision, decoder=self.decoder,
            max_batch_size=self.max_batch_frames, engine_dir=self.engine_dir, backend=self.backend,
            providers=self.providers, threads=self.threads, compile=self.compile,
        )
