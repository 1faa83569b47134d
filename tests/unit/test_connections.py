"""The connection bounds and the flood's log lines (``server/connections.py``)."""

from __future__ import annotations

import logging
import time

import pytest

from text4vis.server.connections import ConnectionLimits, RateLimitedLog, RateLimitedRecords


def test_bounds_in_all_and_per_address() -> None:
    limits = ConnectionLimits(max_total=3, max_per_client=2)
    assert limits.refusal("a") is None and limits.refusal("a") is None
    assert "max_connections_per_client" in (limits.refusal("a") or "")
    assert limits.refusal("b") is None
    assert "max_connections" in (limits.refusal("c") or "")
    limits.closed("a")
    assert limits.refusal("c") is None and limits.total == 3
    for address in ("a", "b", "c"):
        limits.closed(address)
    assert limits.total == 0 and not limits.per_client


def test_a_flood_makes_one_line_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    """20,200 refused connections wrote 302 MB of log; now a line per kind per interval, and the
    next line says how many were not written."""
    logger = logging.getLogger("t4v.test.flood")
    flood = RateLimitedLog(logger, every_s=0.2)
    with caplog.at_level(logging.WARNING, logger="t4v.test.flood"):
        for i in range(1000):
            flood.warning("refused", "connection %d refused", i)
        flood.warning("head", "a head was cut")  # another kind: its own line
        assert [r.getMessage() for r in caplog.records] == ["connection 0 refused", "a head was cut"]
        time.sleep(0.25)
        flood.warning("refused", "connection %d refused", 1000)
        assert (
            caplog.records[-1].getMessage() == "connection 1000 refused (999 more like it not logged in the last 0.2 s)"
        )
    records = RateLimitedRecords(every_s=60)
    made = [logging.LogRecord("asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource", (), None)]
    made += [logging.LogRecord("asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource", (), None)]
    assert [records.filter(r) for r in made] == [True, False]
