"""``Client`` and ``AsyncClient``: the same requests, one blocking, one async.

Retries: 503 and 429 (and connection errors) are retried up to ``retries`` times, waiting what
the server's ``Retry-After`` says, else an exponential backoff, never more than ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from t4v_client.errors import T4VError, Unavailable, error_for
from t4v_client.models import ClassifyResult, Health, Similarity, Vocabulary, VocabularySummary

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
    return filename or path.name, path.read_bytes()


def _classify_form(vocab: str | None, labels: Sequence[str] | None, top_k: int, frames: int | None,
                   views: str | None, thumbnails: bool, abstain: bool = False, abstain_margin: float = 0.0,
                   min_score: float | None = None) -> dict[str, str]:
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
    if abstain:
        form["abstain"] = "true"
        form["abstain_margin"] = str(abstain_margin)
    if min_score is not None:
        form["min_score"] = str(min_score)
    return form


def _vocab_body(labels: Sequence[str] | None, templates: Sequence[str] | None, preset: str | None,
                clean_labels: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"preset": preset} if preset else {"labels": list(labels or [])}
    if templates:
        body["templates"] = list(templates)
    if clean_labels:
        body["clean_labels"] = True
    return body


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """Blocking client. ``Client("http://localhost:8000")``; use as a context manager or call close()."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 120.0, retries: int = 3,
                 max_wait_s: float = 10.0, transport: httpx.BaseTransport | None = None,
                 api_key: str | None = None) -> None:
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
                    raise Unavailable(f"cannot reach the server: {exc}") from None
                time.sleep(_wait_s(None, attempt, self.max_wait_s))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self.retries:
                break
            time.sleep(_wait_s(response, attempt, self.max_wait_s))
        assert response is not None
        _raise_for(response)
        return response

    def classify(self, media: Media, vocab: str | None = None, labels: Sequence[str] | None = None, top_k: int = 5,
                 frames: int | None = None, views: str | None = None, filename: str | None = None,
                 thumbnails: bool = False, abstain: bool = False, abstain_margin: float = 0.0,
                 min_score: float | None = None) -> ClassifyResult:
        """Classify a video or image (a path or bytes) against a vocabulary or ad-hoc labels;
        ``abstain`` / ``min_score``: may answer "none of these" (``result.abstained``)."""
        form = _classify_form(vocab, labels, top_k, frames, views, thumbnails, abstain, abstain_margin, min_score)
        r = self._request("POST", "/classify", data=form, files={"file": _file(media, filename)})
        return ClassifyResult.model_validate(r.json())

    def put_vocab(self, name: str, labels: Sequence[str] | None = None, templates: Sequence[str] | None = None,
                  if_match: str | None = None, preset: str | None = None, clean_labels: bool = False) -> Vocabulary:
        """Define (or replace) a vocabulary; ``if_match`` = the ETag you last saw, to avoid lost updates;
        ``clean_labels``: prompt cleaned-up labels (ApplyEyeMakeup -> apply eye makeup)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        r = self._request("PUT", f"/vocab/{name}", json=_vocab_body(labels, templates, preset, clean_labels),
                          headers=headers)
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

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 120.0, retries: int = 3,
                 max_wait_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None,
                 api_key: str | None = None) -> None:
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
                    raise Unavailable(f"cannot reach the server: {exc}") from None
                await asyncio.sleep(_wait_s(None, attempt, self.max_wait_s))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self.retries:
                break
            await asyncio.sleep(_wait_s(response, attempt, self.max_wait_s))
        assert response is not None
        _raise_for(response)
        return response

    async def classify(self, media: Media, vocab: str | None = None, labels: Sequence[str] | None = None,
                       top_k: int = 5, frames: int | None = None, views: str | None = None,
                       filename: str | None = None, thumbnails: bool = False, abstain: bool = False,
                       abstain_margin: float = 0.0, min_score: float | None = None) -> ClassifyResult:
        form = _classify_form(vocab, labels, top_k, frames, views, thumbnails, abstain, abstain_margin, min_score)
        r = await self._request("POST", "/classify", data=form, files={"file": _file(media, filename)})
        return ClassifyResult.model_validate(r.json())

    async def put_vocab(self, name: str, labels: Sequence[str] | None = None, templates: Sequence[str] | None = None,
                        if_match: str | None = None, preset: str | None = None,
                        clean_labels: bool = False) -> Vocabulary:
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        r = await self._request("PUT", f"/vocab/{name}", json=_vocab_body(labels, templates, preset, clean_labels),
                                headers=headers)
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
