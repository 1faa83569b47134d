"""Which processes a test left behind (Linux /proc: no extra dependency)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def children_of(pid: int) -> set[int]:
    """The live descendants of ``pid`` (zombies excluded: they are exited processes; so is
    multiprocessing's resource tracker, one per process that ever spawned, by design)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and b"resource_tracker" not in _cmdline(stat.parent):
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def alive(pids: set[int], wait_s: float = 5.0) -> set[int]:
    """Those of ``pids`` still running (not exited, not zombies) after up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        running = {pid for pid in pids if _state(pid) not in (None, "Z")}
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def _state(pid: int) -> str | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; whether it held. A test waits for
    what it expects, not for a fixed sleep that a loaded machine outruns."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True
