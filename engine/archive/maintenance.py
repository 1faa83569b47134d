"""Archive upkeep off the request path: a thread of its own that, every ``every_s`` seconds, brings
each table's indices up to date and compacts it (``ArchiveTable.maintain``), and a second one
that, every ``keys_every_s``, runs the light round: rows committed since join the key indices and
the small fragments commits leave are merged (a keyed commit reads every id its index lacks and
opens every fragment: without it each commit grew slower until the next full round). The light
round goes on while a full round builds an index (a full round takes seconds to minutes; commits
made meanwhile would otherwise pile up unindexed: up to 90 ms a commit after 6 s at 25 commits
a second, at 1M rows). Commits and reads never run upkeep and never wait for it: they see the table's version
before a step until the step's own commit lands (LanceDB's commits are atomic).

Every server replica may run one: two maintaining the same table at once conflict at commit, and
the later one's step is retried on its next round (logged, nothing lost).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from text4vis.engine.archive.store import Archive

log = logging.getLogger(__name__)

LANCE_THREADS = "lance_backgroun"  # how Lance's Python package names its runtime's threads (15 characters)
NICE = 10  # their CPU priority below the request path's (0)
KEYS_EVERY_S = 2.0  # the light round's period: keyed commits stay cheap between and during full rounds


class Maintainer:
    """Maintains every table of ``archive`` every ``every_s`` seconds, the first round
    ``first_s`` after :meth:`start`; the light round every ``keys_every_s`` on a thread of its own."""

    def __init__(
        self, archive: Archive, every_s: float, first_s: float = 5.0, keys_every_s: float = KEYS_EVERY_S
    ) -> None:
        self.archive, self.every_s, self.first_s, self.keys_every_s = archive, every_s, first_s, keys_every_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.rounds = 0

    def start(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._full_rounds, name="archive-maintenance", daemon=True),
                threading.Thread(target=self._light_rounds, name="archive-keys", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop; a step in progress (an index build) finishes on its own, its
        daemon thread does not hold the process."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def run_once(self, keys_only: bool = False) -> dict[str, list[str]]:
        """One round over the tables (``keys_only``: the light one): what was done to each (by
        name); a table that fails is logged and left for the next round."""
        lower_lance_threads()
        out: dict[str, list[str]] = {}
        try:
            names = self.archive.maintain(keys_only)
        except Exception:  # noqa: BLE001 - as a table's: next round
            log.warning("archive maintenance of the names failed; retried next round", exc_info=True)
            names = []
        if names:
            log.info("archive names: %s", "; ".join(names))
            out["names"] = names
        for spec in self.archive.specs():
            if self._stop.is_set():
                break
            try:
                table = self.archive.table(spec)
                done = table.maintain(keys_only)
            except Exception:  # noqa: BLE001 - another replica's conflicting commit, a full disk: next round
                log.warning("archive maintenance of %s failed; retried next round", spec.fingerprint, exc_info=True)
                continue
            if done:
                log.info("archive table %s: %s", table.name, "; ".join(done))
                out[table.name] = done
        lower_lance_threads()  # and those its first use of Lance started
        if not keys_only:
            self.rounds += 1
        return out

    def _full_rounds(self) -> None:
        wait_s = self.first_s
        while not self._stop.wait(wait_s):
            self.run_once()
            wait_s = self.every_s

    def _light_rounds(self) -> None:
        while not self._stop.wait(self.keys_every_s):
            self.run_once(keys_only=True)


def lower_lance_threads() -> int:
    """Lance's runtime threads (where compaction, index builds and the in-memory index's reads
    run) at :data:`NICE`, below the request path: a vector index delta asked for one thread
    keeps ~1.5 cores busy (6.5 CPU-s in 4.4 s for 100,000 rows at 1M), and on 2 cores commits
    and searches waited behind it. Commits go through LanceDB's own runtime (``lancedb-tokio``),
    and searches through faiss, both left at their priority. Linux only (elsewhere nothing
    changes); called each round, so threads the runtime adds later are lowered too. How many
    threads it lowered."""
    lowered = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() != LANCE_THREADS:
                continue
            tid = int(task.name)
            if os.getpriority(os.PRIO_PROCESS, tid) < NICE:
                os.setpriority(os.PRIO_PROCESS, tid, NICE)
                lowered += 1
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return lowered
