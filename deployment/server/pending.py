"""Predictions waiting for their feedback (feedback_store.py): /predict remembers each with its
image, POST /feedback takes it back; the newest `capacity` are kept, within `max_bytes` of
images, the oldest forgotten first (one image over max_bytes alone is not kept).

`Memory` keeps them in the server process. `Shared` keeps them in the feedback database's
`pending` table, where every process of `serve --workers N` reads them (workers.py), so the
feedback may reach another worker than its prediction did; a failed write there is logged and
the prediction is answered anyway (its feedback is then 404).
"""

import json
import sqlite3
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: the oldest go first
    request_id TEXT UNIQUE NOT NULL,
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
    """The recent predictions of this process, in a dict."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self._recent: OrderedDict[str, Pending] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, request_id: str, pending: Pending) -> None:
        with self._lock:
            self._recent[request_id] = pending
            self._bytes += len(pending.image)
            while self._recent and (
                len(self._recent) > self.capacity or self._bytes > self.max_bytes
            ):
                self._bytes -= len(self._recent.popitem(last=False)[1].image)

    def get(self, request_id: str) -> Pending | None:
        with self._lock:
            return self._recent.get(request_id)


class Shared:
    """The recent predictions of every process on the database, in its `pending` table;
    `lock` guards the connection `db` (one thread at a time), which is in autocommit mode."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.Lock, capacity: int, max_bytes: int
    ) -> None:
        self.db, self.lock, self.capacity, self.max_bytes = db, lock, capacity, max_bytes
        with lock:
            db.execute(SCHEMA)

    def remember(self, request_id: str, pending: Pending) -> None:
        row = (request_id, json.dumps(pending.record), json.dumps(pending.labels), pending.image)
        try:
            with self.lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.execute(
                        "INSERT OR REPLACE INTO pending (request_id, record, labels, image) "
                        "VALUES (?, ?, ?, ?)",
                        row,
                    )
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
                "SELECT record, labels, image FROM pending WHERE request_id = ?", (request_id,)
            ).fetchone()
        if found is None:
            return None
        return Pending(json.loads(found[0]), json.loads(found[1]), found[2])
