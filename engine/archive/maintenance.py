"""Archive upkeep off the request path: a thread of its own that, every ``every_s`` seconds, brings
each table's indices up to date and compacts it (``ArchiveTable.maintain``), and between those
rounds, every ``keys_every_s``, a light one that brings the key indices up to date and merges the
small fragments commits leave (a keyed commit reads every id its index lacks and opens every
fragment: without it each commit grew slower until the next full round). Commits and reads never
run it and never wait for it: they see the table's version before a step until the step's own
commit lands (LanceDB's commits are atomic), so an index build of minutes delays no request.

Every server replica may run one: two maintaining the same table at once conflict at commit, and
the later one's step is retried on its next round (logged, nothing lost).
"""

from __future__ import annotations

import logging
import threading
import time

from text4vis.engine.archive.store import Archive

log = logging.getLogger(__name__)

KEYS_EVERY_S = 5.0  # the light round's period: keyed commits stay cheap between full rounds


class Maintainer:
    """Maintains every table of ``archive`` every ``every_s`` seconds, the first round
    ``first_s`` after :meth:`start`; the light round every ``keys_every_s`` between."""

    def __init__(
        self, archive: Archive, every_s: float, first_s: float = 5.0, keys_every_s: float = KEYS_EVERY_S
    ) -> None:
        self.archive, self.every_s, self.first_s, self.keys_every_s = archive, every_s, first_s, keys_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="archive-maintenance", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop; a step in progress (an index build) finishes on its own, its
        daemon thread does not hold the process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def run_once(self, keys_only: bool = False) -> dict[str, list[str]]:
        """One round over the tables (``keys_only``: the light one): what was done to each (by
        name); a table that fails is logged and left for the next round."""
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
        if not keys_only:
            self.rounds += 1
        return out

    def _run(self) -> None:
        full_at = time.monotonic() + self.first_s
        while not self._stop.wait(max(0.0, min(full_at - time.monotonic(), self.keys_every_s))):
            if time.monotonic() >= full_at:
                self.run_once()
                full_at = time.monotonic() + self.every_s
            else:
                self.run_once(keys_only=True)
