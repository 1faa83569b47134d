"""Bulk indexing on Ray Data: ``t4v index ... --ray ADDRESS`` (``local``: a Ray on this machine).

The same rows as :func:`~text4vis.engine.archive.indexer.index_files`, from a Ray Data pipeline:

    file list -> decode + sample + resize (CPU tasks, the project's own decoder:
    models/video_input.py) -> encode + temporal head (an actor pool holding the model: one actor
    per GPU with num_gpus=1, CPU actors otherwise) -> rows -> the archive's table

Ray Data was chosen because it streams a file list through CPU tasks and a GPU actor pool with
backpressure across machines, which is exactly the shape of this job. The rows are committed by
the driver with the archive's own ``merge_insert`` (batches of a few hundred rows), not Ray Data's
Lance sink: the sink appends without the id check, so a second writer at the same time (a
server with ``index=true``) could store a video twice; committed by key, every row is stored
exactly once whoever writes it. Files already stored are skipped before they are decoded.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from text4vis.engine.archive.indexer import MAX_WINDOWS, Indexed
from text4vis.engine.archive.store import ArchiveRow, ArchiveTable, content_id, window_id
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import ResolvedClip
from text4vis.models.errors import InputError, T4VError

log = logging.getLogger(__name__)
COMMIT_ROWS = 256


@dataclass(frozen=True)
class DecodeSpec:
    """What a decode task needs (picklable: it travels to the cluster)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scaler: str
    frames: int
    clips: int
    crops: int
    sampling: str
    windows_s: float | None
    stored: frozenset[str]  # the table's videos (content ids): not decoded again


def _pack(array: np.ndarray) -> tuple[bytes, list[int]]:
    return array.tobytes(), list(array.shape)


def _unpack(data: bytes, shape: Any, dtype: Any) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape([int(x) for x in shape])


def decode_batch(batch: dict[str, np.ndarray], spec: DecodeSpec) -> dict[str, np.ndarray]:
    """A CPU task: each file's sampled, resized and cropped frames (and its windows'), or its error."""
    from text4vis.models.choices import Sampling, Scaler
    from text4vis.models.preprocess import PreprocessConfig
    from text4vis.models.video_input import sample_clip, sample_frames
    from text4vis.models.windows import plan_timeline

    preprocess = PreprocessConfig(spec.resize, spec.crop, spec.mean, spec.std, Scaler(spec.scaler))
    out: dict[str, list[Any]] = {k: [] for k in ("path", "content", "error", "pixels", "gather", "meta")}
    for path_text in batch["path"]:
        path = Path(str(path_text))
        record: dict[str, Any] = {"path": str(path), "content": "", "error": "", "pixels": b"", "gather": b""}
        meta: dict[str, Any] = {}
        try:
            content = content_id(path)
            record["content"] = content
            if content in spec.stored:
                meta["skipped"] = True
            else:
                sampling = Sampling(spec.sampling)
                clip = sample_clip(
                    path, preprocess, spec.frames, spec.clips, spec.crops, name=str(path), sampling=sampling
                )
                pixels, gather = clip.pixels, clip.gather
                meta.update(duration_s=clip.duration_s, video_views=len(gather), windows=[])
                if spec.windows_s is not None:
                    plan = plan_timeline(path, spec.windows_s, spec.windows_s, spec.frames, MAX_WINDOWS)
                    if plan.windows:
                        win = sample_frames(path, preprocess, [w.indices for w in plan.windows], name=str(path))
                        gather = np.concatenate([gather, win.gather + len(pixels)])  # video views, then windows
                        pixels = np.concatenate([pixels, win.pixels])
                        meta["windows"] = [[w.start_s, w.end_s] for w in plan.windows]
                record["pixels"], shape = _pack(np.ascontiguousarray(pixels))
                record["gather"], gshape = _pack(np.ascontiguousarray(gather.astype(np.int64)))
                meta.update(pixels_shape=shape, gather_shape=gshape)
        except T4VError as exc:
            record["error"] = " ".join(str(exc).split())
        except Exception as exc:  # noqa: BLE001 - a library's own failure on a hostile file is the file's
            record["error"] = f"{path.name}: the file could not be decoded ({type(exc).__name__})"
        for key in ("path", "content", "error", "pixels", "gather"):
            out[key].append(record[key])
        out["meta"].append(json.dumps(meta))
    return {k: np.array(v, dtype=object) for k, v in out.items()}


class EncodeActor:
    """Holds the model (built once per actor from the model options); encodes a batch of decoded
    files in encoder calls shared by all of them, and answers the archive's rows."""

    def __init__(self, options: ModelOptions, max_batch: int = 64) -> None:
        from text4vis.engine.runtime.build import build_runtime

        self.runtime = build_runtime(options, max_batch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from text4vis.engine.archive.indexer import thumbnail

        pipeline = self.runtime.pipeline
        rows: dict[str, list[Any]] = {k: [] for k in ("path", "error", "skipped", "row_json", "embedding", "thumb")}
        decoded = []
        for i in range(len(batch["path"])):
            meta = json.loads(str(batch["meta"][i]))
            if batch["error"][i] or meta.get("skipped"):
                rows["path"].append(batch["path"][i])
                rows["error"].append(str(batch["error"][i]))
                rows["skipped"].append(bool(meta.get("skipped")))
                rows["row_json"].append(json.dumps({"id": str(batch["content"][i])}))
                rows["embedding"].append(b"")
                rows["thumb"].append(b"")
                continue
            pixels = _unpack(batch["pixels"][i], meta["pixels_shape"], np.uint8)
            gather = _unpack(batch["gather"][i], meta["gather_shape"], np.int64)
            decoded.append((i, meta, pixels, gather))
        if decoded:
            frame_emb = pipeline.encoder.encode(torch.from_numpy(np.concatenate([d[2] for d in decoded])))
            start = 0
            for i, meta, pixels, gather in decoded:
                emb = frame_emb[start : start + len(pixels)]
                start += len(pixels)
                views = meta["video_views"]
                gather_t = torch.from_numpy(gather)
                video = pipeline.embed(emb, gather_t[:views])
                first = torch.from_numpy(pixels[gather[0, 0]])
                name, content = str(batch["path"][i]), str(batch["content"][i])
                entries = [(content, "video", 0.0, meta["duration_s"], video, first)]
                window_emb = pipeline.score_rows(emb, gather_t[views:], None) if meta["windows"] else []
                for (start_s, end_s), (_, w_emb), w_gather in zip(
                    meta["windows"], window_emb, gather[views:], strict=True
                ):
                    w_first = torch.from_numpy(pixels[w_gather[0]])
                    entries.append((window_id(content, start_s, end_s), "window", start_s, end_s, w_emb, w_first))
                for row_id, kind, start_s, end_s, vector, frame in entries:
                    duration = meta["duration_s"]
                    rows["path"].append(name)
                    rows["error"].append("")
                    rows["skipped"].append(False)
                    rows["row_json"].append(
                        json.dumps(
                            {
                                "id": row_id,
                                "content_id": content,
                                "kind": kind,
                                "start_s": start_s,
                                "end_s": end_s if end_s is not None else 0.0,
                                "duration_s": duration,
                            }
                        )
                    )
                    rows["embedding"].append(vector.float().numpy().astype(np.float32).tobytes())
                    rows["thumb"].append(thumbnail(frame))
        return {k: np.array(v, dtype=object) for k, v in rows.items()}


def _row(record: dict[str, Any], dim: int) -> ArchiveRow:
    fields = json.loads(record["row_json"])
    return ArchiveRow(
        id=fields["id"],
        content_id=fields["content_id"],
        name=str(record["path"]),
        kind=fields["kind"],
        start_s=fields["start_s"],
        end_s=fields["end_s"],
        duration_s=fields["duration_s"],
        embedding=np.frombuffer(record["embedding"], dtype=np.float32).reshape(dim).copy(),
        thumbnail=bytes(record["thumb"]),
    )


def index_on_ray(
    address: str,
    options: ModelOptions,
    table: ArchiveTable,
    files: list[Path],
    clip: ResolvedClip,
    preprocess: Any,
    *,
    windows_s: float | None = None,
    encoders: int | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[Indexed | BaseException]:
    """Index ``files`` on Ray Data into ``table`` (``address``: a cluster, or ``local``). One
    result or error per file, in order, as :func:`index_files` answers."""
    import ray

    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = encoders or max(1, gpus)
    stored = table.video_ids()  # the decode tasks hash each file once and skip these
    p = preprocess
    spec = DecodeSpec(
        p.resize,
        p.crop,
        tuple(p.mean),
        tuple(p.std),
        str(p.scaler),
        clip.frames,
        clip.clips,
        clip.crops,
        str(clip.sampling),
        windows_s,
        stored,
    )
    log.info("Ray Data: %d files (%d stored), %d encoder actors, %d GPUs", len(files), len(stored), actors, gpus)
    dataset = ray.data.from_items([{"path": str(path)} for path in files])
    decoded = dataset.map_batches(functools.partial(decode_batch, spec=spec), batch_size=1, num_cpus=1)
    encoded = decoded.map_batches(
        EncodeActor,
        fn_constructor_kwargs={"options": options},
        batch_size=4,
        concurrency=actors,
        num_gpus=1 if gpus else 0,
        # reserves no CPU: a CPU actor's torch uses the node's cores whatever Ray reserves, and
        # reserving one would leave a 2-core machine one decode task at a time (0.42x t4v index)
        num_cpus=0,
    )
    per_file: dict[str, Indexed | BaseException] = {}
    counts: dict[str, tuple[str, list[int]]] = {}  # file -> its content id, [videos, windows]
    pending: list[ArchiveRow] = []
    dim = table.spec.embed_dim

    def commit() -> None:
        if pending:
            table.add(pending)
            pending.clear()

    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["path"])):
            record = {k: batch[k][i] for k in batch}
            name = str(record["path"])
            if record["error"]:
                per_file[name] = InputError(str(record["error"]))
                if on_done:
                    on_done()
                continue
            if record["skipped"]:
                per_file[name] = Indexed(name, _content(record), 0, 0, skipped=True)
                if on_done:
                    on_done()
                continue
            row = _row(record, dim)
            pending.append(row)
            c = counts.setdefault(name, (row.content_id, [0, 0]))[1]
            c[0 if row.kind == "video" else 1] += 1
            if row.kind == "video" and on_done:
                on_done()
        if len(pending) >= COMMIT_ROWS:
            commit()
    commit()
    for name, (content, (videos, windows)) in counts.items():
        per_file[name] = Indexed(name, content, videos + windows, windows, skipped=False)
    return [per_file.get(str(path), RuntimeError(f"{path}: no result from the Ray pipeline")) for path in files]


def _content(record: dict[str, Any]) -> str:
    return str(json.loads(record["row_json"])["id"])
