from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_helpers import serve


@pytest.fixture(scope="session")
def live_server(tiny_clip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `t4v serve` (uvicorn, SQLite store, one decode process) shared by the e2e tests."""
    with serve(tmp_path_factory.mktemp("live"), tiny_clip_path, "--max-upload-bytes", str(4 * 2**20)) as url:
        yield url
