"""Bulk indexing on Ray Data (``t4v index ... --ray ADDRESS``; ``local``: a Ray on this machine):
an adapter that runs the engine's own functions on a cluster, nothing of its own.

    file list -> decode tasks (CPU): the file's hash, skipped when stored, else the decode job the
    server's workers run (``flow/decode_worker.py``: the same limits and decoder) -> an actor pool
    holding the runtime (one actor per GPU with num_gpus=1, CPU actors otherwise): the same embed
    step (the encoder, then ``VideoPipeline.fuse``) and the same row builders
    (``archive/indexer.py``) -> rows, with the fingerprint of the runtime that made them -> the
    driver commits them by key into the tables of that fingerprint

Which tables: one actor-like task reports the spec of what the actors run (a GPU cluster runs
fp16 where this machine would run fp32), the driver opens those tables, and it refuses any row
whose fingerprint is not its table's (a cluster of mixed nodes). Ray Data was chosen because it
streams a file list through CPU tasks and a GPU actor pool with backpressure across machines. The
driver commits with the archive's keyed merge (``ArchiveTable.add``), not Ray Data's Lance sink,
which appends without the id check: a server writing at the same time could store a row twice.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from text4vis.engine.archive.indexer import MAX_WINDOWS, Indexed, video_row, window_row
from text4vis.engine.archive.spec import ArchiveSpec
from text4vis.engine.archive.store import Archive, ArchiveRow, ArchiveTable, content_id
from text4vis.engine.errors import ArchiveMismatch
from text4vis.engine.flow.decode_worker import DecodeJob, PlanJob, run
from text4vis.engine.options import ModelOptions
from text4vis.engine.request import IndexRequest, ResolvedClip
from text4vis.models.errors import InputError, T4VError
from text4vis.models.limits import MediaLimits

log = logging.getLogger(__name__)
COMMIT_ROWS = 256


@dataclass(frozen=True)
class Made:
    """What the actors run, as specs: the tables their rows belong to."""

    video: ArchiveSpec
    window: ArchiveSpec


def _made(options: ModelOptions, clip: ResolvedClip) -> tuple[str, str, Any]:
    """On the cluster (a GPU node where there is one): the specs of what the actors will run, and
    the preprocessing the decode tasks must apply."""
    from text4vis.engine.runtime.build import build_runtime

    runtime = build_runtime(options)
    video, window = ArchiveSpec.of(runtime, clip), ArchiveSpec.of(runtime, clip.windows())
    return video.to_json(), window.to_json(), runtime.pipeline.preprocess


class StoredFilter:
    """The stored videos' content ids as a sorted array of their first 64 bits, put once in Ray's
    object store: a task carries only the reference (its pickle is the same size for ten stored
    videos or a hundred million), each node holds one copy, read without copying. A new file whose
    SHA-256 shares its first 64 bits with one of n stored ones is skipped: n / 2^64 a file, 5e-12
    at a hundred million."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref  # a ray.ObjectRef of a sorted uint64 array; a plain array outside Ray

    @staticmethod
    def keys(table: ArchiveTable) -> np.ndarray:
        """The sorted keys of a table's stored videos, read a batch of ids at a time (8 bytes a
        video in the driver, not a Python set of strings: ~70 bytes a video pickled)."""
        parts = [_prefixes(batch) for batch in table.id_batches("content_id", "video")]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.uint64)

    def __contains__(self, content: str) -> bool:
        keys = _fetched(self.ref)
        key = np.uint64(int(content[:16], 16))
        i = int(np.searchsorted(keys, key))
        return i < len(keys) and keys[i] == key


_FETCHED: dict[str, np.ndarray] = {}


def _fetched(ref: Any) -> np.ndarray:
    """The array behind ``ref``, fetched once per process (zero-copy from the node's object store)."""
    if isinstance(ref, np.ndarray):
        return ref
    key = ref.hex()
    if key not in _FETCHED:
        import ray

        _FETCHED.clear()  # one run's filter at a time
        _FETCHED[key] = ray.get(ref)
    return _FETCHED[key]


def _prefixes(ids: Any) -> np.ndarray:
    """The first 64 bits of each hex content id of a string array."""
    import pyarrow.compute as pc

    heads = pc.utf8_slice_codeunits(ids, 0, 16).to_pylist()
    return np.frombuffer(bytes.fromhex("".join(heads)), dtype=">u8").astype(np.uint64)


@dataclass(frozen=True)
class DecodeTask:
    """What a decode task needs (picklable: it travels to the cluster): the job every file's
    video runs (its path filled in per file), the windows' length, the videos not to decode again."""

    video: DecodeJob
    window_s: float | None
    stored: StoredFilter


def decode_batch(batch: dict[str, np.ndarray], task: DecodeTask) -> dict[str, np.ndarray]:
    """A CPU task: each file's decoded frames (and its windows'), or why it was skipped or failed."""
    out: dict[str, list[Any]] = {k: [] for k in ("path", "content", "error", "skipped", "decoded")}
    for path_text in batch["path"]:
        path = Path(str(path_text))
        content, error, decoded = "", "", b""
        try:
            content = content_id(path)
            if content not in task.stored:
                decoded = pickle.dumps(_decode(path, task))
        except T4VError as exc:
            error = " ".join(str(exc).split())
        except Exception as exc:  # noqa: BLE001 - a library's own failure on a hostile file is the file's
            error = f"{path.name}: the file could not be decoded ({type(exc).__name__})"
        out["path"].append(str(path))
        out["content"].append(content)
        out["error"].append(error)
        out["skipped"].append(bool(content) and not error and content in task.stored)
        out["decoded"].append(decoded)
    return {k: np.array(v, dtype=object) for k, v in out.items()}


def _decode(path: Path, task: DecodeTask) -> tuple[Any, list[Any], Any]:
    """The video's frames, its windows and their frames, through the decode worker's ``run``."""
    job = replace(task.video, path=path, name=str(path))
    frames = run(job)
    windows: list[Any] = []
    window_frames = None
    if task.window_s is not None:
        plan = run(
            PlanJob(
                path,
                task.window_s,
                task.window_s,
                job.frames,
                MAX_WINDOWS,
                job.decoder,
                name=str(path),
                limits=job.limits,
            )
        )
        windows = plan.windows  # type: ignore[union-attr]
        if windows:
            window_frames = run(replace(job, rows=[w.indices for w in windows]))
    return frames, windows, window_frames


class EncodeActor:
    """Holds the runtime (built once per actor from the model options) and embeds a batch of
    decoded files in one encoder call; answers each file's rows and the specs they were made under."""

    def __init__(self, options: ModelOptions, clip: ResolvedClip, max_batch: int = 64) -> None:
        from text4vis.engine.runtime.build import build_runtime

        runtime = build_runtime(options, max_batch)
        self.pipeline = runtime.pipeline
        self.made = (ArchiveSpec.of(runtime, clip).to_json(), ArchiveSpec.of(runtime, clip.windows()).to_json())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        out: dict[str, list[Any]] = {k: [] for k in ("path", "content", "error", "skipped", "rows", "made")}
        files = []
        for i in range(len(batch["path"])):
            decoded = batch["decoded"][i]
            files.append((i, pickle.loads(decoded) if decoded else None))
        pieces = [
            p for _, d in files if d is not None for p in (d[0].pixels, *(() if d[2] is None else (d[2].pixels,)))
        ]
        frame_emb = self.pipeline.encoder.encode(torch.from_numpy(np.concatenate(pieces))) if pieces else None
        start = 0
        for i, decoded in files:
            rows: list[ArchiveRow] = []
            if decoded is not None:
                assert frame_emb is not None
                rows, start = self._rows(str(batch["path"][i]), str(batch["content"][i]), decoded, frame_emb, start)
            for key in ("path", "content", "error", "skipped"):
                out[key].append(batch[key][i])
            out["rows"].append(pickle.dumps(rows))
            out["made"].append(self.made)
        return {k: np.array(v, dtype=object) for k, v in out.items()}

    def _rows(self, name: str, content: str, decoded: Any, frame_emb: Any, start: int) -> tuple[list[ArchiveRow], int]:
        import torch

        frames, windows, window_frames = decoded
        emb = frame_emb[start : start + len(frames.pixels)]
        start += len(frames.pixels)
        gather = torch.from_numpy(frames.gather)
        (video,) = self.pipeline.fuse(emb, [gather])
        first = torch.from_numpy(frames.pixels[frames.gather[0, 0]])
        rows = []
        if window_frames is not None:
            w_emb = frame_emb[start : start + len(window_frames.pixels)]
            start += len(window_frames.pixels)
            w_gather = torch.from_numpy(window_frames.gather)
            embeddings = self.pipeline.fuse(w_emb, [row[None] for row in w_gather])
            for w, e, row in zip(windows, embeddings, window_frames.gather, strict=True):
                frame = torch.from_numpy(window_frames.pixels[row[0]])
                rows.append(window_row(content, w.start_s, w.end_s, e, frame, name, frames.duration_s))
        return [*rows, video_row(content, video, first, frames.duration_s, name)], start


def index_on_ray(
    address: str,
    options: ModelOptions,
    archive: Archive,
    files: list[Path],
    clip: ResolvedClip,
    request: IndexRequest,
    *,
    limits: MediaLimits | None = None,
    encoders: int | None = None,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[Indexed | BaseException], ArchiveTable]:
    """Index ``files`` on Ray Data (``address``: a cluster, or ``local``). One result or error per
    file, in order, as ``t4v index`` answers; and the videos' table."""
    import ray

    from text4vis.engine.runtime.build import choose_decoder

    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = encoders or max(1, gpus)
    video_json, window_json, preprocess = ray.get(
        ray.remote(num_gpus=1 if gpus else 0, num_cpus=0)(_made).remote(options, clip)
    )
    made = Made(ArchiveSpec.from_json(video_json), ArchiveSpec.from_json(window_json))
    videos = archive.table(made.video, create=True)
    windows = archive.table(made.window, create=True) if request.window_s is not None else None
    keys = StoredFilter.keys(videos)  # the decode tasks hash each file once and skip these
    stored = StoredFilter(ray.put(keys))
    decoder, _, _ = choose_decoder(options.decoder, "cpu")  # decode tasks run on CPU nodes
    job = DecodeJob(
        Path(), preprocess, clip.frames, clip.clips, clip.crops, decoder, sampling=clip.sampling, limits=limits
    )
    log.info("Ray Data: %d files (%d stored), %d encoder actors, %d GPUs", len(files), len(keys), actors, gpus)
    dataset = ray.data.from_items([{"path": str(path)} for path in files])
    decoded = dataset.map_batches(
        functools.partial(decode_batch, task=DecodeTask(job, request.window_s, stored)), batch_size=1, num_cpus=1
    )
    encoded = decoded.map_batches(
        EncodeActor,
        fn_constructor_kwargs={"options": options, "clip": clip},
        batch_size=4,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        # reserves no CPU: a CPU actor's torch uses the node's cores whatever Ray reserves, and
        # reserving one would leave a 2-core machine one decode task at a time
        num_cpus=0,
    )
    committer = _Committer(made, videos, windows)
    per_file: dict[str, Indexed | BaseException] = {}
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["path"])):
            name, content = str(batch["path"][i]), str(batch["content"][i])
            if batch["error"][i]:
                per_file[name] = InputError(str(batch["error"][i]))
            elif batch["skipped"][i]:
                per_file[name] = Indexed(name, content, 0, 0, skipped=True)
            else:
                rows: list[ArchiveRow] = pickle.loads(batch["rows"][i])
                committer.take(tuple(batch["made"][i]), rows)
                per_file[name] = Indexed(name, content, len(rows), len(rows) - 1, skipped=False)
            if on_done is not None:
                on_done()
        committer.commit(COMMIT_ROWS)
    committer.commit(0)
    _record_names(archive, per_file)
    return [per_file.get(str(path), RuntimeError(f"{path}: no result from the Ray pipeline")) for path in files], videos


def _record_names(archive: Archive, per_file: dict[str, Indexed | BaseException]) -> None:
    """Every file's path as a name of its content (after its rows: a stored row has its name);
    a stored file seen under a new path says so in its result."""
    seen = {name: done.id for name, done in per_file.items() if isinstance(done, Indexed)}
    known = archive.names(set(seen.values()))
    new = [(content, name) for name, content in seen.items() if name not in {s.name for s in known.get(content, [])}]
    archive.add_names(new)
    for _, name in new:
        done = per_file[name]
        assert isinstance(done, Indexed)
        per_file[name] = replace(done, names_added=1)


class _Committer:
    """Rows gathered per table and committed by key, windows before their videos; a row made
    under another spec than its table's is refused."""

    def __init__(self, made: Made, videos: ArchiveTable, windows: ArchiveTable | None) -> None:
        self.made, self.videos, self.windows = made, videos, windows
        self.pending: dict[str, list[ArchiveRow]] = {"window": [], "video": []}

    def take(self, made: tuple[str, str], rows: list[ArchiveRow]) -> None:
        video, window = ArchiveSpec.from_json(made[0]), ArchiveSpec.from_json(made[1])
        if video.fingerprint != self.made.video.fingerprint or window.fingerprint != self.made.window.fingerprint:
            raise ArchiveMismatch(
                f"a Ray actor embeds as {video.describe()}, but the table is {self.made.video.describe()}: "
                "every node must run the same model, precision and backend (give --precision and --backend)"
            )
        for row in rows:
            self.pending[row.kind].append(row)

    def commit(self, at_least: int) -> None:
        if sum(len(rows) for rows in self.pending.values()) < max(at_least, 1):
            return
        if self.windows is self.videos:
            self.videos.add(self.pending["window"] + self.pending["video"])
        else:
            if self.windows is not None and self.pending["window"]:
                self.windows.add(self.pending["window"])
            if self.pending["video"]:
                self.videos.add(self.pending["video"])
        self.pending = {"window": [], "video": []}
