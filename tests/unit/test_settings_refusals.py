"""Settings that would lose data are refused at start, in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from text4vis.server.settings import Settings


@pytest.mark.parametrize("uri", ["memory://", "MEMORY://archive"])
def test_an_archive_in_memory_is_refused(tmp_path: Path, uri: str) -> None:
    """``memory://`` was taken silently and every indexed video was gone at the next start."""
    with pytest.raises(ValidationError, match="keeps nothing once the server stops"):
        Settings(data_dir=tmp_path, archive_uri=uri)
    assert Settings(data_dir=tmp_path, archive_uri=str(tmp_path / "a")).archive_location() == str(tmp_path / "a")
