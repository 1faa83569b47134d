"""``Client`` and ``AsyncClient``: the same requests, one blocking, one async.

Retries: 503 and 429 (and connection errors) are retried up to ``retries`` times, waiting what
the server's ``Retry-After`` says, else an exponential backoff, never more than ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from t4v_client.errors import T4VError, Unavailable, error_for
from t4v_client.models import (
    AbstainDefault,
    ArchiveIndexed,
    ArchivePage,
    ArchiveRow,
    ClassifyResult,
    FewShotSettings,
    Health,
    RelabelledRow,
    SearchHit,
    Segment,
    Similarity,
    Timeline,
    TimelineEnd,
    TimelineStart,
    Vocabulary,
    VocabularySummary,
)

RETRY_STATUS = {429, 503}
Media = str | Path | bytes


def _wait_s(response: httpx.Response | None, attempt: int, max_wait_s: float) -> float:
    header = response.headers.get("retry-after") if response is not None else None
    try:
        wait = float(header) if header is not None else 0.25 * 2**attempt
    except ValueError:
        wait = 0.25 * 2**attempt
    return max(0.0, min(wait, max_wait_s))


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (json.JSONDecodeError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    raise error_for(response.status_code, str(detail))


def _file(media: Media, filename: str | None) -> tuple[str, bytes]:
    if isinstance(media, bytes):
        return filename or "upload", media
    path = Path(media)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, not a video or image file") from None
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    return filename or path.name, data


def _classify_form(
    vocab: str | None,
    labels: Sequence[str] | None,
    top_k: int,
    frames: int | None,
    views: str | None,
    thumbnails: bool,
    abstain: bool | None = None,
    abstain_margin: float | None = None,
    min_score: float | None = None,
    background: str | None = None,
    sampling: str | None = None,
    clean_labels: bool = False,
    index: bool = False,
    index_required: bool = False,
) -> dict[str, str]:
    if (vocab is None) == (labels is None):
        raise ValueError("give exactly one of vocab or labels")
    form = {"top_k": str(top_k)}
    if vocab is not None:
        form["vocab"] = vocab
    else:
        form["labels"] = json.dumps(list(labels or []))
    if frames:
        form["frames"] = str(frames)
    if views:
        form["views"] = views
    if thumbnails:
        form["thumbnails"] = "true"
    if abstain is not None:
        form["abstain"] = "true" if abstain else "false"
    if abstain_margin is not None:
        form["abstain_margin"] = str(abstain_margin)
    if min_score is not None:
        form["min_score"] = str(min_score)
    if background:
        form["background"] = background
    if sampling:
        form["sampling"] = sampling
    if clean_labels:
        form["clean_labels"] = "true"
    if index:
        form["index"] = "true"
    if index_required:
        form["index_required"] = "true"
    return form


def _timeline_form(
    vocab: str | None,
    labels: Sequence[str] | None,
    window_s: float,
    stride_s: float | None,
    frames: int | None,
    top_k: int,
    stream: bool,
    clean_labels: bool = False,
    index: bool = False,
) -> dict[str, str]:
    form = _classify_form(vocab, labels, top_k, frames, None, False, clean_labels=clean_labels, index=index)
    form["window_s"] = str(window_s)
    if stride_s is not None:
        form["stride_s"] = str(stride_s)
    if stream:
        form["stream"] = "true"
    return form


def _archive_form(
    frames: int | None,
    views: str | None,
    sampling: str | None,
    window_s: float | None,
    metadata: dict[str, Any] | None,
) -> dict[str, str]:
    form: dict[str, str] = {}
    if frames:
        form["frames"] = str(frames)
    if views:
        form["views"] = views
    if sampling:
        form["sampling"] = sampling
    if window_s is not None:
        form["window_s"] = str(window_s)
    if metadata:
        form["metadata"] = json.dumps(metadata)
    return form


TimelineItem = TimelineStart | Segment | TimelineEnd


def _timeline_item(line: str) -> TimelineItem:
    """One NDJSON line of a streamed timeline; its error line raises the error it stands for."""
    item = json.loads(line)
    kind = item.pop("type", None)
    if kind == "start":
        return TimelineStart.model_validate(item)
    if kind == "segment":
        return Segment.model_validate(item)
    if kind == "end":
        return TimelineEnd.model_validate(item)
    if kind == "error":
        raise error_for(int(item.get("status", 500)), str(item.get("detail", "the timeline failed")))
    raise T4VError(f"unexpected line in a timeline stream: {line[:100]}")


def _vocab_body(
    labels: Sequence[str] | None,
    templates: Sequence[str] | None,
    preset: str | None,
    clean_labels: bool = False,
    abstain: AbstainDefault | None = None,
    examples: dict[str, list[str]] | None = None,
    few_shot: FewShotSettings | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"preset": preset} if preset else {"labels": list(labels or [])}
    if templates:
        body["templates"] = list(templates)
    if clean_labels:
        body["clean_labels"] = True
    if abstain is not None:
        body["abstain"] = abstain.model_dump()
    if examples is not None:
        body["examples"] = {label: list(ids) for label, ids in examples.items()}
    if few_shot is not None:
        body["few_shot"] = few_shot.model_dump(exclude_none=True)
    return body


def _labels_body(
    vocab: str | None, labels: Sequence[str] | None, top_k: int, kind: str, options: dict[str, Any]
) -> dict[str, Any]:
    return {
        "vocab": vocab,
        "labels": list(labels) if labels is not None else None,
        "top_k": top_k,
        "kind": kind,
        **options,
    }


def _relabelled(line: str) -> RelabelledRow | None:
    """One line of ``POST /archive/labels``: a row, the summary (None) or the error that ended it."""
    if not line.strip():
        return None
    item = json.loads(line)
    if "error" in item:
        raise error_for(int(item.get("status", 500)), item["error"])
    return None if item.get("done") else RelabelledRow.model_validate(item)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """Blocking client. ``Client("http://localhost:8000")``; use as a context manager or call close()."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 120.0,
        retries: int = 3,
        max_wait_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """``api_key``: sent with every request (a server with API keys needs one to change vocabularies)."""
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=_auth(api_key))
        self.retries = retries
        self.max_wait_s = max_wait_s

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = None
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unavailable(f"cannot reach the server at {self._http.base_url}: {exc}") from None
                time.sleep(_wait_s(None, attempt, self.max_wait_s))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self.retries:
                break
            time.sleep(_wait_s(response, attempt, self.max_wait_s))
        assert response is not None
        _raise_for(response)
        return response

    def classify(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        frames: int | None = None,
        views: str | None = None,
        filename: str | None = None,
        thumbnails: bool = False,
        abstain: bool | None = None,
        abstain_margin: float | None = None,
        min_score: float | None = None,
        background: str | None = None,
        sampling: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
        index_required: bool = False,
    ) -> ClassifyResult:
        """Classify a video or image (a path or bytes) against a vocabulary or ad-hoc labels;
        ``abstain`` / ``min_score`` / ``background`` (a vocabulary to abstain against): may answer
        "none of these" (``result.abstained``). Unset, the vocabulary's default applies;
        ``abstain=False`` turns it off. ``index``: also store the video's embedding in the
        server's archive (``result.archive_id``; ``result.archive_stored`` is False while the
        archive cannot be written, or with ``index_required`` the call fails then)."""
        form = _classify_form(
            vocab,
            labels,
            top_k,
            frames,
            views,
            thumbnails,
            abstain,
            abstain_margin,
            min_score,
            background,
            sampling,
            clean_labels,
            index,
            index_required,
        )
        r = self._request("POST", "/classify", data=form, files={"file": _file(media, filename)})
        return ClassifyResult.model_validate(r.json())

    def timeline(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        window_s: float = 8.0,
        stride_s: float | None = None,
        frames: int | None = None,
        top_k: int = 3,
        filename: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
    ) -> Timeline:
        """Classify a video window by window (``window_s`` long, every ``stride_s``): segments and
        the events they merge into, in one answer."""
        form = _timeline_form(
            vocab, labels, window_s, stride_s, frames, top_k, stream=False, clean_labels=clean_labels, index=index
        )
        r = self._request("POST", "/classify/timeline", data=form, files={"file": _file(media, filename)})
        return Timeline.model_validate(r.json())

    def stream_timeline(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        window_s: float = 8.0,
        stride_s: float | None = None,
        frames: int | None = None,
        top_k: int = 3,
        filename: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
    ) -> Iterator[TimelineItem]:
        """The same, as it is computed: a :class:`TimelineStart`, one :class:`Segment` per window as
        the server scores it, then a :class:`TimelineEnd` with the events. A failure midway raises
        the error (``UnsupportedMedia`` for a file damaged after its start, ...)."""
        form = _timeline_form(
            vocab, labels, window_s, stride_s, frames, top_k, stream=True, clean_labels=clean_labels, index=index
        )
        upload = _file(media, filename)
        for attempt in range(self.retries + 1):
            try:
                with self._http.stream("POST", "/classify/timeline", data=form, files={"file": upload}) as r:
                    if r.status_code in RETRY_STATUS and attempt < self.retries:
                        wait = _wait_s(r, attempt, self.max_wait_s)
                    else:
                        if not r.is_success:
                            r.read()
                            _raise_for(r)
                        for line in r.iter_lines():
                            if line.strip():
                                yield _timeline_item(line)
                        return
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unavailable(f"cannot reach the server at {self._http.base_url}: {exc}") from None
                wait = _wait_s(None, attempt, self.max_wait_s)
            time.sleep(wait)

    # --- the archive ---

    def index_video(
        self,
        media: Media,
        filename: str | None = None,
        frames: int | None = None,
        views: str | None = None,
        sampling: str | None = None,
        window_s: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ArchiveIndexed:
        """Store a video's embedding (and its windows' with ``window_s``) in the server's archive."""
        form = _archive_form(frames, views, sampling, window_s, metadata)
        r = self._request("POST", "/archive/videos", data=form, files={"file": _file(media, filename)})
        return ArchiveIndexed.model_validate(r.json())

    def archive_videos(
        self, kind: str = "video", offset: int = 0, limit: int = 50, thumbnails: bool = False, **table: Any
    ) -> ArchivePage:
        """A page of stored rows (``table``: frames / views / sampling, to read another table)."""
        params = {"kind": kind, "offset": offset, "limit": limit, "thumbnails": thumbnails, **table}
        return ArchivePage.model_validate(self._request("GET", "/archive/videos", params=params).json())

    def archive_video(self, row_id: str, embedding: bool = False, **table: Any) -> ArchiveRow:
        """One stored row; ``embedding``: with its stored float32 embedding."""
        params = {"embedding": embedding, **table}
        return ArchiveRow.model_validate(self._request("GET", f"/archive/videos/{row_id}", params=params).json())

    def delete_archive_video(self, row_id: str, **table: Any) -> int:
        """A video and its windows; how many rows went."""
        return int(self._request("DELETE", f"/archive/videos/{row_id}", params=table).json()["deleted"])

    def archive_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/archive/stats").json()
        return result

    def search(
        self, q: str, k: int = 10, kind: str = "video", thumbnails: bool = False, **table: Any
    ) -> list[SearchHit]:
        """The stored videos (or windows) nearest a text, best first."""
        params = {"q": q, "k": k, "kind": kind, "thumbnails": thumbnails, **table}
        data = self._request("GET", "/archive/search", params=params).json()["results"]
        return [SearchHit.model_validate(h) for h in data]

    def relabel_archive(
        self,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        kind: str = "video",
        **options: Any,
    ) -> Iterator[RelabelledRow]:
        """Every stored row under a vocabulary, as the server streams it (one typed row each, with
        ``predictions`` as /classify's); ``options``: abstain, min_score, templates, frames, views..."""
        body = _labels_body(vocab, labels, top_k, kind, options)
        with self._http.stream("POST", "/archive/labels", json=body) as r:
            if not r.is_success:
                r.read()
                _raise_for(r)
            for line in r.iter_lines():
                row = _relabelled(line)
                if row is not None:
                    yield row

    def put_vocab(
        self,
        name: str,
        labels: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        if_match: str | None = None,
        preset: str | None = None,
        clean_labels: bool = False,
        abstain: AbstainDefault | None = None,
        examples: dict[str, list[str]] | None = None,
        few_shot: FewShotSettings | None = None,
    ) -> Vocabulary:
        """Define (or replace) a vocabulary; ``if_match`` = the ETag you last saw, to avoid lost updates;
        ``clean_labels``: prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup); ``abstain``:
        its default for "none of these"; ``examples``: ``{label: [archive row ids]}``, a few stored
        videos per label, used as ``few_shot`` says (default: the better method, fitted)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        body = _vocab_body(labels, templates, preset, clean_labels, abstain, examples, few_shot)
        r = self._request("PUT", f"/vocab/{name}", json=body, headers=headers)
        return Vocabulary.model_validate(r.json())

    def add_example(
        self, name: str, media: Media, label: str, filename: str | None = None, if_match: str | None = None
    ) -> Vocabulary:
        """Upload an example of one of the vocabulary's labels: stored in the archive, and a new
        version of the vocabulary uses it."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        files = {"file": _file(media, filename)}
        r = self._request("POST", f"/vocab/{name}/examples", data={"label": label}, files=files, headers=headers)
        return Vocabulary.model_validate(r.json())

    def get_vocab(self, name: str) -> Vocabulary:
        return Vocabulary.model_validate(self._request("GET", f"/vocab/{name}").json())

    def similarity(self, name: str) -> Similarity:
        """Cosine of every pair of the vocabulary's classifier rows (at most 500 labels)."""
        return Similarity.model_validate(self._request("GET", f"/vocab/{name}/similarity").json())

    def similarity_png(self, name: str) -> bytes:
        """The same matrix as a clustered heatmap (PNG bytes)."""
        return self._request("GET", f"/vocab/{name}/similarity", params={"format": "png"}).content

    def list_vocabs(self) -> list[VocabularySummary]:
        data = self._request("GET", "/vocab").json()["vocabularies"]
        return [VocabularySummary.model_validate(v) for v in data]

    def delete_vocab(self, name: str) -> None:
        self._request("DELETE", f"/vocab/{name}")

    def health(self) -> Health:
        """Liveness and readiness; never raises for a 503 (that is an answer here)."""
        try:
            live = self._http.get("/health/live").is_success
            ready = self._http.get("/health/ready")
        except httpx.TransportError as exc:
            return Health(live=False, ready=False, detail=str(exc))
        return Health(live=live, ready=ready.is_success, detail=ready.json().get("detail"))


class AsyncClient:
    """The same as :class:`Client`, with ``await``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        timeout: float = 120.0,
        retries: int = 3,
        max_wait_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, headers=_auth(api_key))
        self.retries = retries
        self.max_wait_s = max_wait_s

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = None
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unavailable(f"cannot reach the server at {self._http.base_url}: {exc}") from None
                await asyncio.sleep(_wait_s(None, attempt, self.max_wait_s))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self.retries:
                break
            await asyncio.sleep(_wait_s(response, attempt, self.max_wait_s))
        assert response is not None
        _raise_for(response)
        return response

    async def classify(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        frames: int | None = None,
        views: str | None = None,
        filename: str | None = None,
        thumbnails: bool = False,
        abstain: bool | None = None,
        abstain_margin: float | None = None,
        min_score: float | None = None,
        background: str | None = None,
        sampling: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
        index_required: bool = False,
    ) -> ClassifyResult:
        form = _classify_form(
            vocab,
            labels,
            top_k,
            frames,
            views,
            thumbnails,
            abstain,
            abstain_margin,
            min_score,
            background,
            sampling,
            clean_labels,
            index,
            index_required,
        )
        r = await self._request("POST", "/classify", data=form, files={"file": _file(media, filename)})
        return ClassifyResult.model_validate(r.json())

    async def timeline(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        window_s: float = 8.0,
        stride_s: float | None = None,
        frames: int | None = None,
        top_k: int = 3,
        filename: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
    ) -> Timeline:
        form = _timeline_form(
            vocab, labels, window_s, stride_s, frames, top_k, stream=False, clean_labels=clean_labels, index=index
        )
        r = await self._request("POST", "/classify/timeline", data=form, files={"file": _file(media, filename)})
        return Timeline.model_validate(r.json())

    async def stream_timeline(
        self,
        media: Media,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        window_s: float = 8.0,
        stride_s: float | None = None,
        frames: int | None = None,
        top_k: int = 3,
        filename: str | None = None,
        clean_labels: bool = False,
        index: bool = False,
    ) -> AsyncIterator[TimelineItem]:
        form = _timeline_form(
            vocab, labels, window_s, stride_s, frames, top_k, stream=True, clean_labels=clean_labels, index=index
        )
        upload = _file(media, filename)
        for attempt in range(self.retries + 1):
            try:
                async with self._http.stream("POST", "/classify/timeline", data=form, files={"file": upload}) as r:
                    if r.status_code in RETRY_STATUS and attempt < self.retries:
                        wait = _wait_s(r, attempt, self.max_wait_s)
                    else:
                        if not r.is_success:
                            await r.aread()
                            _raise_for(r)
                        async for line in r.aiter_lines():
                            if line.strip():
                                yield _timeline_item(line)
                        return
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unavailable(f"cannot reach the server at {self._http.base_url}: {exc}") from None
                wait = _wait_s(None, attempt, self.max_wait_s)
            await asyncio.sleep(wait)

    # --- the archive ---

    async def index_video(
        self,
        media: Media,
        filename: str | None = None,
        frames: int | None = None,
        views: str | None = None,
        sampling: str | None = None,
        window_s: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ArchiveIndexed:
        """:meth:`Client.index_video`."""
        form = _archive_form(frames, views, sampling, window_s, metadata)
        r = await self._request("POST", "/archive/videos", data=form, files={"file": _file(media, filename)})
        return ArchiveIndexed.model_validate(r.json())

    async def archive_videos(
        self, kind: str = "video", offset: int = 0, limit: int = 50, thumbnails: bool = False, **table: Any
    ) -> ArchivePage:
        """:meth:`Client.archive_videos`."""
        params = {"kind": kind, "offset": offset, "limit": limit, "thumbnails": thumbnails, **table}
        return ArchivePage.model_validate((await self._request("GET", "/archive/videos", params=params)).json())

    async def archive_video(self, row_id: str, embedding: bool = False, **table: Any) -> ArchiveRow:
        """:meth:`Client.archive_video`."""
        r = await self._request("GET", f"/archive/videos/{row_id}", params={"embedding": embedding, **table})
        return ArchiveRow.model_validate(r.json())

    async def delete_archive_video(self, row_id: str, **table: Any) -> int:
        """:meth:`Client.delete_archive_video`."""
        return int((await self._request("DELETE", f"/archive/videos/{row_id}", params=table)).json()["deleted"])

    async def archive_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._request("GET", "/archive/stats")).json()
        return result

    async def search(
        self, q: str, k: int = 10, kind: str = "video", thumbnails: bool = False, **table: Any
    ) -> list[SearchHit]:
        """:meth:`Client.search`."""
        params = {"q": q, "k": k, "kind": kind, "thumbnails": thumbnails, **table}
        data = (await self._request("GET", "/archive/search", params=params)).json()["results"]
        return [SearchHit.model_validate(h) for h in data]

    async def relabel_archive(
        self,
        vocab: str | None = None,
        labels: Sequence[str] | None = None,
        top_k: int = 5,
        kind: str = "video",
        **options: Any,
    ) -> AsyncIterator[RelabelledRow]:
        """:meth:`Client.relabel_archive`."""
        body = _labels_body(vocab, labels, top_k, kind, options)
        async with self._http.stream("POST", "/archive/labels", json=body) as r:
            if not r.is_success:
                await r.aread()
                _raise_for(r)
            async for line in r.aiter_lines():
                row = _relabelled(line)
                if row is not None:
                    yield row

    async def put_vocab(
        self,
        name: str,
        labels: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        if_match: str | None = None,
        preset: str | None = None,
        clean_labels: bool = False,
        abstain: AbstainDefault | None = None,
        examples: dict[str, list[str]] | None = None,
        few_shot: FewShotSettings | None = None,
    ) -> Vocabulary:
        """:meth:`Client.put_vocab`."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        body = _vocab_body(labels, templates, preset, clean_labels, abstain, examples, few_shot)
        r = await self._request("PUT", f"/vocab/{name}", json=body, headers=headers)
        return Vocabulary.model_validate(r.json())

    async def add_example(
        self, name: str, media: Media, label: str, filename: str | None = None, if_match: str | None = None
    ) -> Vocabulary:
        """:meth:`Client.add_example`."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        files = {"file": _file(media, filename)}
        r = await self._request("POST", f"/vocab/{name}/examples", data={"label": label}, files=files, headers=headers)
        return Vocabulary.model_validate(r.json())

    async def get_vocab(self, name: str) -> Vocabulary:
        return Vocabulary.model_validate((await self._request("GET", f"/vocab/{name}")).json())

    async def similarity(self, name: str) -> Similarity:
        return Similarity.model_validate((await self._request("GET", f"/vocab/{name}/similarity")).json())

    async def similarity_png(self, name: str) -> bytes:
        return (await self._request("GET", f"/vocab/{name}/similarity", params={"format": "png"})).content

    async def list_vocabs(self) -> list[VocabularySummary]:
        data = (await self._request("GET", "/vocab")).json()["vocabularies"]
        return [VocabularySummary.model_validate(v) for v in data]

    async def delete_vocab(self, name: str) -> None:
        await self._request("DELETE", f"/vocab/{name}")

    async def health(self) -> Health:
        try:
            live = (await self._http.get("/health/live")).is_success
            ready = await self._http.get("/health/ready")
        except httpx.TransportError as exc:
            return Health(live=False, ready=False, detail=str(exc))
        return Health(live=live, ready=ready.is_success, detail=ready.json().get("detail"))


__all__ = ["AsyncClient", "Client", "T4VError"]
