"""The host's embedded SQLite database: one file in the data directory, opened once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class Database:
    """A SQLite connection shared by the embedded services, safe to use from threads.

    WAL mode with `synchronous=NORMAL` keeps every committed transaction across a process
    crash (only an OS crash can lose the last ones), and readers never block the writer.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        with self.lock:
            self.conn.close()
