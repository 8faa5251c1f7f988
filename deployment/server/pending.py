"""Predictions waiting for their feedback (feedback_store.py): /predict remembers each with its
image, POST /feedback takes it back; the newest `capacity` are kept, within `max_bytes` of
images, the oldest forgotten first (one image over max_bytes alone is not kept). An entry
lives at most `ttl` seconds (params `serve.pending_minutes`), and goes as soon as its feedback
is stored (`forget`): past that its feedback is 404.

`Memory` keeps them in the server process. `Shared` keeps them in the feedback database's
`pending` table, where every process of `serve --workers N` reads them (workers.py), so the
feedback may reach another worker than its prediction did; a failed write there is logged and
the prediction is answered anyway (its feedback is then 404). Deleted rows are overwritten
on disk (feedback_store.connect sets PRAGMA secure_delete).
"""

import json
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: the oldest go first
    request_id TEXT UNIQUE NOT NULL,
    at REAL NOT NULL,  -- when it was remembered (time.time()): it expires ttl seconds later
    record TEXT NOT NULL,  -- JSON: what was predicted, by which model, when
    labels TEXT NOT NULL,  -- JSON list
    image BLOB NOT NULL
)
"""


@dataclass
class Pending:
    record: dict  # what was predicted, and by which model
    labels: list[str]  # the serving model's classes: the valid true labels
    image: bytes


class Memory:
    """The recent predictions of this process, in a dict (oldest first)."""

    def __init__(self, capacity: int, max_bytes: int, ttl: float) -> None:
        self.capacity, self.max_bytes, self.ttl = capacity, max_bytes, ttl
        self._recent: OrderedDict[str, Pending] = OrderedDict()
        self._at: dict[str, float] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, request_id: str, pending: Pending) -> None:
        with self._lock:
            self._pop(request_id)
            self._recent[request_id], self._at[request_id] = pending, time.time()
            self._bytes += len(pending.image)
            while self._recent and (
                len(self._recent) > self.capacity or self._bytes > self.max_bytes
            ):
                self._pop(next(iter(self._recent)))
        self.expire()

    def get(self, request_id: str) -> Pending | None:
        with self._lock:
            if self._at.get(request_id, 0) < time.time() - self.ttl:
                return None
            return self._recent.get(request_id)

    def forget(self, request_id: str) -> bool:
        """Drop request_id's entry; True when there was one."""
        with self._lock:
            return self._pop(request_id)

    def expire(self) -> int:
        """Drop the entries older than ttl; return how many."""
        cutoff, dropped = time.time() - self.ttl, 0
        with self._lock:
            while self._recent and self._at[next(iter(self._recent))] < cutoff:
                dropped += self._pop(next(iter(self._recent)))
        return dropped

    def _pop(self, request_id: str) -> bool:
        pending = self._recent.pop(request_id, None)
        self._at.pop(request_id, None)
        if pending is not None:
            self._bytes -= len(pending.image)
        return pending is not None


class Shared:
    """The recent predictions of every process on the database, in its `pending` table;
    `lock` guards the connection `db` (one thread at a time), which is in autocommit mode."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.Lock,
        capacity: int,
        max_bytes: int,
        ttl: float,
    ) -> None:
        self.db, self.lock, self.capacity, self.max_bytes = db, lock, capacity, max_bytes
        self.ttl = ttl
        with lock:
            db.execute("BEGIN IMMEDIATE")  # workers starting at once: one changes the table
            try:
                columns = [c[1] for c in db.execute("PRAGMA table_info(pending)")]
                if columns and "at" not in columns:  # an older server's table: no expiry
                    db.execute("DROP TABLE pending")  # its rows were only ever transient
                db.execute(SCHEMA)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def remember(self, request_id: str, pending: Pending) -> None:
        record, labels = json.dumps(pending.record), json.dumps(pending.labels)
        row = (request_id, time.time(), record, labels, pending.image)
        try:
            with self.lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.execute(
                        "INSERT OR REPLACE INTO pending (request_id, at, record, labels, image) "
                        "VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                    self.db.execute("DELETE FROM pending WHERE at < ?", (row[1] - self.ttl,))
                    self._forget_oldest()
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as err:
            print(f"serve: feedback: cannot remember {request_id}: {err}", file=sys.stderr)

    def _forget_oldest(self) -> None:
        sizes = self.db.execute("SELECT seq, length(image) FROM pending ORDER BY seq DESC")
        total = 0
        for kept, (seq, size) in enumerate(sizes):  # newest first
            total += size
            if kept >= self.capacity or total > self.max_bytes:
                self.db.execute("DELETE FROM pending WHERE seq <= ?", (seq,))
                return

    def get(self, request_id: str) -> Pending | None:
        with self.lock:
            found = self.db.execute(
                "SELECT record, labels, image FROM pending WHERE request_id = ? AND at >= ?",
                (request_id, time.time() - self.ttl),
            ).fetchone()
        if found is None:
            return None
        return Pending(json.loads(found[0]), json.loads(found[1]), found[2])

    def forget(self, request_id: str) -> bool:
        """Drop request_id's row; True when there was one."""
        with self.lock:
            return (
                self.db.execute("DELETE FROM pending WHERE request_id = ?", (request_id,)).rowcount
                > 0
            )

    def expire(self) -> int:
        """Drop the rows older than ttl; return how many."""
        with self.lock:
            cutoff = time.time() - self.ttl
            return self.db.execute("DELETE FROM pending WHERE at < ?", (cutoff,)).rowcount
