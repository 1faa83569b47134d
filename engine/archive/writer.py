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

from text4vis.engine.archive.store import Archive, ArchiveRow, ArchiveTable

log = logging.getLogger(__name__)
MAX_GROUP_ROWS = 512
GROUP_WINDOW_S = 0.5  # how long a group gathers rows after its first (a read's flush cuts it short)


Job = tuple[ArchiveTable | None, list[ArchiveRow], Future[int], list[tuple[str, str]]]


class ArchiveWriter:
    """``archive``: where the names the rows were seen under are recorded (with the rows)."""

    def __init__(self, archive: Archive | None = None) -> None:
        self._archive = archive
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def submit(
        self, table: ArchiveTable, rows: list[ArchiveRow], names: list[tuple[str, str]] | None = None
    ) -> Future[int]:
        """Queue ``rows`` for ``table`` (and the ``(content id, name)`` sightings of their files);
        the future says how many rows were new once committed."""
        done: Future[int] = Future()
        self._jobs.put((table, rows, done, names or []))
        return done

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every row submitted before this call is committed."""
        marker: Future[int] = Future()
        self._jobs.put((None, [], marker, []))
        marker.result(timeout=timeout_s)

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._jobs.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
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
        tables: dict[int, tuple[ArchiveTable, list[ArchiveRow], list[Future[int]]]] = {}
        names = [pair for job in group for pair in job[3]]
        if names and self._archive is not None:
            try:  # before the rows: a stored row always has its name
                self._archive.add_names(names)
            except Exception:  # noqa: BLE001 - logged; the rows are still committed
                log.exception("archive: recording %d names failed", len(names))
        for table, rows, done, _ in group:
            if table is not None:
                entry = tables.setdefault(id(table), (table, [], []))
                entry[1].extend(rows)
                entry[2].append(done)
        for table, rows, futures in tables.values():
            try:
                added = table.add(rows)
            except Exception as exc:  # noqa: BLE001 - reported on each request's future and logged
                log.exception("archive: committing %d rows to %s failed", len(rows), table.name)
                for f in futures:
                    f.set_exception(exc)
                continue
            for f in futures:
                f.set_result(added)
        for table, _, done, _ in group:
            if table is None:
                done.set_result(0)  # a flush marker: everything before it is committed
