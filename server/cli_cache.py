"""What the CLI remembers between runs, so that ``t4v search`` answers in about a second: which
archive table a set of model options reads (the spec those options made when a model was last
loaded for them) and the text embeddings of queries already asked. Both are caches: a miss loads
the model as before and fills them; a key names every input (the options, the files they name by
size and modification time, the frames and views), so a changed file or option never reads a
stale entry.

Kept under ``$XDG_CACHE_HOME/text4vis`` (``~/.cache/text4vis``); deleting it costs one slow run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where a vector is read or written: `t4v --help` stays light
    import numpy as np

VERSION = 1  # bumped when what a key covers changes: older entries are not read


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "text4vis"


def _files(options: dict[str, Any]) -> dict[str, list[int]]:
    """Every file an option names, by size and modification time (a changed checkpoint is another key)."""
    out = {}
    for value in options.values():
        if isinstance(value, str | Path) and Path(value).is_file():
            stat = Path(value).stat()
            out[str(Path(value).resolve())] = [stat.st_size, stat.st_mtime_ns]
        elif isinstance(value, str | Path) and Path(value).is_dir() and (Path(value) / "manifest.json").is_file():
            stat = (Path(value) / "manifest.json").stat()  # an engine directory: its manifest names its files
            out[str(Path(value).resolve())] = [stat.st_size, stat.st_mtime_ns]
    return out


def spec_key(options: dict[str, Any], clip: str) -> str:
    """The key of what ``options`` (as given: a model is loaded from them the same way) make with
    the frames and views ``clip`` names."""
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(options.items())}
    blob = json.dumps([VERSION, given, _files(options), clip], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class SpecCache:
    """``key -> {"spec": json, "text_model": id}``: one small JSON file, replaced atomically."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / "specs.json"

    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict[str, str] | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, spec_json: str, text_model: str) -> None:
        with contextlib.suppress(OSError):  # a cache: a read-only home only costs speed
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._read()
            data[key] = {"spec": spec_json, "text_model": text_model}
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


class QueryCache:
    """The normalized text embedding of a query, by text model, templates and text (SQLite)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / "queries.db"

    def _db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5)
        db.execute("CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return db

    @staticmethod
    def _key(text_model: str, templates: list[str], text: str) -> str:
        return hashlib.sha256(json.dumps([text_model, templates, " ".join(text.split())]).encode()).hexdigest()

    def get(self, text_model: str, templates: list[str], text: str) -> np.ndarray | None:
        import numpy as np

        with contextlib.suppress(OSError, sqlite3.Error):
            key = self._key(text_model, templates, text)
            with contextlib.closing(self._db()) as db:
                row = db.execute("SELECT vec FROM queries WHERE key = ?", (key,)).fetchone()
            return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()
        return None

    def put(self, text_model: str, templates: list[str], text: str, vector: np.ndarray) -> None:
        import numpy as np

        with contextlib.suppress(OSError, sqlite3.Error), contextlib.closing(self._db()) as db:
            db.execute(
                "INSERT OR REPLACE INTO queries (key, vec) VALUES (?, ?)",
                (self._key(text_model, templates, text), np.asarray(vector, np.float32).tobytes()),
            )
            db.commit()
