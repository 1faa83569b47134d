"""Write-behind for ``index=true``: a classify request hands its row over and answers at once;
one thread commits the rows that arrived within :data:`GROUP_WINDOW_S` of each other together
(one keyed commit per table, a group commit), so a request never waits for a commit (~6 ms each,
more under load) and concurrent requests share commits: under 8 clients a commit a request cost
a quarter of the throughput.

Reads in the same server call :meth:`ArchiveWriter.flush` first: a client that classified with
``index=true`` and then asks the archive sees its row. What a crash loses is what was not yet
committed: the rows of the last half second.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from text4vis.engine.archive.store import Archive, ArchiveRow, ArchiveTable

log = logging.getLogger(__name__)
MAX_GROUP_ROWS = 512
GROUP_WINDOW_S = 0.5  # how long a group gathers rows after its first (a read's flush cuts it short)
RETRY_S = 5.0  # how often rows that could not be committed are tried again
MAX_KEPT_ROWS = 50_000  # rows kept for a retry at most (the oldest are dropped past it, and counted)


Job = tuple[ArchiveTable | None, list[ArchiveRow], Future[int], list[tuple[str, str]]]


@dataclass
class _Kept:
    """Rows (and their names) a commit failed on, kept to be tried again."""

    table: ArchiveTable
    rows: list[ArchiveRow]
    names: list[tuple[str, str]]


class ArchiveWriter:
    """``archive``: where the names the rows were seen under are recorded (with the rows).

    A commit that fails (a read-only or full disk, a lost bucket) does not lose its rows: they
    are kept, in memory, and tried again every :data:`RETRY_S` until the archive takes them (at
    most :data:`MAX_KEPT_ROWS`; what a stop finds still kept is lost, and logged). Meanwhile
    :attr:`problem` says why (``/health/ready``, and ``index=true`` answers say their row is
    not stored yet)."""

    def __init__(self, archive: Archive | None = None) -> None:
        self._archive = archive
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._kept: list[_Kept] = []
        self._lock = threading.Lock()  # _kept and problem, read by other threads
        self.problem: str | None = None
        self.dropped = 0  # rows dropped from a full keep (counted in /metrics)
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    @property
    def kept_rows(self) -> int:
        """Rows waiting for the archive to take them again."""
        with self._lock:
            return sum(len(k.rows) for k in self._kept)

    def submit(
        self, table: ArchiveTable, rows: list[ArchiveRow], names: list[tuple[str, str]] | None = None
    ) -> Future[int]:
        """Queue ``rows`` for ``table`` (and the ``(content id, name)`` sightings of their files);
        the future says how many rows were new once committed."""
        done: Future[int] = Future()
        self._jobs.put((table, rows, done, names or []))
        return done

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every row submitted before this call has been tried (committed, or kept)."""
        marker: Future[int] = Future()
        self._jobs.put((None, [], marker, []))
        marker.result(timeout=timeout_s)

    def close(self) -> None:
        """Commit what is queued (and what is kept, once more), then stop."""
        self._jobs.put(None)
        self._thread.join(timeout=60)
        if self._kept:
            self._retry()
        if self._kept:
            log.error("archive: %d rows could not be committed before the server stopped: lost", self.kept_rows)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._jobs.get(timeout=RETRY_S if self._kept else None)
            except queue.Empty:
                self._retry()
                continue
            if first is None:
                return
            group = [first]
            rows = len(first[1])
            # a group gathers for GROUP_WINDOW_S after its first row (a flush does not wait): under
            # load each commit then carries many requests' rows, and commits stay few
            until = time.monotonic() + (GROUP_WINDOW_S if first[0] is not None else 0.0)
            while rows < MAX_GROUP_ROWS:
                try:
                    job = self._jobs.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                group.append(job)
                rows += len(job[1])
                if job[0] is None:  # a flush: commit what is here now
                    break
            self._commit(group)

    def _commit(self, group: list[Job]) -> None:
        tables: dict[int, tuple[_Kept, list[Future[int]]]] = {}
        for table, rows, done, names in group:
            if table is not None:
                entry = tables.setdefault(id(table), (_Kept(table, [], []), []))
                entry[0].rows.extend(rows)
                entry[0].names.extend(names)
                entry[1].append(done)
        for batch, futures in tables.values():
            try:
                added = self._write(batch)
            except Exception as exc:  # noqa: BLE001 - kept, retried, reported on each future and logged
                log.error(
                    "archive: committing %d rows to %s failed (%s); kept, tried again every %g s",
                    len(batch.rows),
                    batch.table.name,
                    exc,
                    RETRY_S,
                )
                self._keep([batch], exc, ahead=False)
                for f in futures:
                    f.set_exception(exc)
                continue
            self._settled()
            for f in futures:
                f.set_result(added)
        for table, _, done, _ in group:
            if table is None:
                done.set_result(0)  # a flush marker: everything before it has been tried

    def _write(self, batch: _Kept) -> int:
        if batch.names and self._archive is not None:
            self._archive.add_names(batch.names)  # before the rows: a stored row always has its name
        return batch.table.add(batch.rows)

    def _waiting(self) -> int:
        """Rows kept (call with the lock held)."""
        return sum(len(k.rows) for k in self._kept)

    def _settled(self) -> None:
        """Nothing kept any more: the archive takes rows again."""
        with self._lock:
            if not self._kept:
                self.problem = None

    def _keep(self, batches: list[_Kept], exc: Exception, *, ahead: bool) -> None:
        """``batches`` wait for the next try: ``ahead`` of those kept already (older ones put back
        by a retry) or after them (the oldest are tried, and dropped past the bound, first)."""
        with self._lock:
            self._kept = [*batches, *self._kept] if ahead else [*self._kept, *batches]
            while self._waiting() > MAX_KEPT_ROWS:
                dropped = self._kept.pop(0)
                self.dropped += len(dropped.rows)
                log.error("archive: %d kept rows dropped (more than %d wait)", len(dropped.rows), MAX_KEPT_ROWS)
            self.problem = f"{exc}; {self._waiting()} rows wait to be stored"

    def _retry(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
        stored = 0
        for i, batch in enumerate(kept):
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - still failing: this one and the rest wait again
                self._keep(kept[i:], exc, ahead=True)
                break
            stored += len(batch.rows)
        if stored:
            log.info("archive: %d kept rows committed now that the archive takes them", stored)
        self._settled()
