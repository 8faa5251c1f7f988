"""Feedback on served predictions, kept in SQLite (WAL mode) under --feedback-dir:

    feedback.sqlite3        a row per labelled request: prediction, model, label, split, review
    images/<sha256>.<ext>   each stored upload once, named by its content, without metadata

/predict remembers recent predictions in memory (bounded by count, bytes and time, pending.py);
POST /feedback {request_id, true_label} stores one: only then is its image written, stripped
of EXIF, XMP, ICC, comments and text chunks (scrub.py). With `store_uploads` (params
`serve.store_uploads`) every upload is written at /predict (table `uploads`). DELETE
/feedback/{request_id} removes one request; old uploads that never reached a dataset go after
`retention_days` (retention.py). A request's split is fixed at its first feedback (every
`test_every`-th record goes to test), and posting again relabels it: the last answer wins.
The watch exports the records accepted in review (review_store.py) as a dataset
(deployment/release/feedback_export.py). With --workers N > 1 (shared=True) the recent
predictions are kept in the database instead (pending.py).

Errors: a request_id that is not 32 hex characters (it names files) or a label the model does
not know is 400; a full disk is 507, another write failure 503, and the database is left as
it was. Records of older servers (records/<request_id>.json) move into the database on start.
"""

import errno
import hashlib
import json
import re
import sqlite3
import sys
import threading
import time
from pathlib import Path

from deployment.server import forget, pending, review_store, scrub
from deployment.server.errors import ApiError

REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex; always .fullmatch (no "\n" after it)
SPLITS = ("train", "test")
DATABASE = "feedback.sqlite3"
LOCK_WAIT_S = 30.0  # how long a writer waits for another process's lock
IMAGES = "images"  # <root>/images/<sha256>.<ext>: every image once
RECORDS = "records"  # older servers: <root>/records/<request_id>.json, migrated on start
SQLITE_IOERR, SQLITE_FULL = 10, 13  # sqlite3's primary result codes
COLUMNS = (
    "request_id",
    "model_name",
    "model_version",
    "labels",  # JSON list: the serving model's classes
    "predicted_label",
    "score",
    "predicted_at",
    "true_label",
    "correct",
    "split",
    "file",  # where export puts it: <split>/<request_id>.<ext>
    "image",  # images/<sha256>.<ext>
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: the split rule
    {", ".join(f"{c} {'TEXT UNIQUE NOT NULL' if c == 'request_id' else ''}" for c in COLUMNS)}
);
CREATE TABLE IF NOT EXISTS uploads (  -- store_uploads: every upload, feedback or not
    request_id TEXT PRIMARY KEY,
    at REAL NOT NULL,  -- time.time() when stored: retention counts from it
    image TEXT NOT NULL  -- images/<sha256>.<ext>
)
"""


def connect(root: Path) -> sqlite3.Connection:
    """The feedback database under root (created when missing), in WAL mode: readers (the
    watch) never block the server, and a crash mid-write loses nothing committed."""
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        root / DATABASE, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False
    )
    deadline, attempt = time.monotonic() + LOCK_WAIT_S, 0
    while True:
        try:
            _set_up(db)
            return db
        except sqlite3.OperationalError as err:
            # serve --workers N: N processes create the same new database at once, and the
            # switch to WAL fails at once ("locked") instead of waiting on the busy timeout
            if "locked" not in str(err) or time.monotonic() > deadline:
                db.close()
                raise
            attempt += 1
            time.sleep(min(0.01 * attempt, 0.2))


def _set_up(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes of the process
    db.execute("PRAGMA cache_size=-32768")  # 32 MiB of pages: the id index stays in memory
    db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes (an image) are overwritten
    db.executescript(SCHEMA)
    review_store.migrate(db)  # an older database gains the review columns


class FeedbackStore:
    """Remember recent predictions with their images; store feedback in the database.
    shared: remember them in the database, for every process on it (pending.Shared).
    store_uploads: also store every upload at once; retention_days: purge's age limit
    (0: none); pending_minutes: how long a prediction waits; review_*: review_store's."""

    def __init__(
        self,
        root: Path,
        capacity: int = 1000,
        max_bytes: int = 256 << 20,  # 256 MiB of remembered uploads
        test_every: int = 5,
        shared: bool = False,
        store_uploads: bool = False,
        retention_days: float = 30.0,
        pending_minutes: float = 15.0,
        review_agree: int = 3,
        review_flag_score: float = 0.95,
    ) -> None:
        self.root = Path(root)
        self.test_every = test_every
        self.store_uploads, self.retention_days = store_uploads, retention_days
        self.pending_s = pending_minutes * 60
        self._db_lock = threading.Lock()  # one connection, used by one thread at a time
        self._db = connect(self.root)
        self.recent = (
            pending.Shared(self._db, self._db_lock, capacity, max_bytes, self.pending_s)
            if shared
            else pending.Memory(capacity, max_bytes, self.pending_s)
        )
        args = (self._db, self._db_lock, review_agree, review_flag_score)
        self.reviews = review_store.Reviews(*args)  # the review status of each record
        if (self.root / RECORDS).is_dir():
            self._migrate()

    def remember(self, request_id: str, image: bytes, record: dict, labels: list[str]) -> None:
        """Keep what was predicted for request_id and its image; forget the oldest past the
        bounds (one image over max_bytes is not kept: feedback on it is 404)."""
        record = {**record, "predicted_at": round(time.time(), 3)}
        self.recent.remember(request_id, pending.Pending(record, list(labels), image))
        if self.store_uploads:  # blocks on the disk: /predict calls it in a worker thread
            try:
                with self._db_lock:
                    self._db.execute("BEGIN IMMEDIATE")  # purge never sees the file unnamed
                    try:
                        row = (request_id, time.time(), self._write_image(image))
                        self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?)", row)
                        self._db.execute("COMMIT")
                    except BaseException:
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                        raise
            except (sqlite3.Error, OSError, scrub.Unreadable) as err:
                print(f"serve: cannot store upload {request_id}: {err}", file=sys.stderr)

    def delete(self, request_id: str) -> list[str] | None:
        """Remove all that is kept of request_id (forget.delete): the files removed, or
        None when nothing was kept."""
        waiting = self.recent.forget(request_id)
        with self._db_lock:
            removed = forget.delete(self._db, self.root, request_id)
        return [] if removed is None and waiting else removed

    def purge(self) -> dict:
        """Remove what is past retention (forget.purge); return the counts."""
        expired = self.recent.expire()
        with self._db_lock:
            counts = forget.purge(self._db, self.root, self.retention_days, self.pending_s)
        return counts | {"pending": counts["pending"] + expired}

    def record(self, body: object) -> dict:
        """Validate {request_id, true_label}; store the image (once) and the row.

        Returns:
            The record: the row's columns, labels as a list, correct and flagged as bools.

        Raises:
            ApiError: 400 malformed body, id or unknown label; 404 unknown request_id;
                507 when the disk is full, 503 when the store cannot write otherwise.
        """
        if not isinstance(body, dict) or set(body) != {"request_id", "true_label"}:
            raise ApiError(400, "send exactly {request_id, true_label}")
        request_id, label = body["request_id"], body["true_label"]
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise ApiError(400, "request_id must be the 32 hex characters /predict returned")
        try:
            remembered = self.recent.get(request_id)
            with self._db_lock:
                record = self._store(request_id, label, remembered)
            self.recent.forget(request_id)  # the upload now lives in images/ only
            return record
        except scrub.Unreadable:  # a bad image the predictor still read
            raise ApiError(422, "the upload cannot be stored without its metadata") from None
        except (sqlite3.OperationalError, OSError) as err:
            status = _storage_status(err)
            if status is None:
                raise
            problem = "disk is full" if status == 507 else "disk cannot be written"
            message = f"the feedback store's {problem} ({err}); nothing was stored"
            raise ApiError(status, message) from None

    def _store(self, request_id: str, label: str, remembered: pending.Pending | None) -> dict:
        stored = self.get(request_id)
        if remembered is None and stored is None:
            raise ApiError(404, f"unknown request_id {request_id}")
        labels = remembered.labels if stored is None else stored["labels"]
        if label not in labels:
            raise ApiError(400, f"unknown label {label!r}; the model knows {labels}")
        if stored is not None:
            if stored["true_label"] != label:
                self.reviews.relabel_locked(request_id, label, stored["predicted_label"])
                self.reviews.agree_locked(stored["image"], label)
            return self.get(request_id)
        record = {"request_id": request_id, **remembered.record, "labels": labels}
        record |= {"true_label": label, "correct": label == record["predicted_label"]}
        self._db.execute("BEGIN IMMEDIATE")  # the split's count and the insert, together
        try:  # the image too: a purge in another process never sees it unnamed
            image = self._write_image(remembered.image)
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM feedback").fetchone()
            split = "test" if last % self.test_every == 0 else "train"
            record |= {"split": split, "file": f"{split}/{request_id}{Path(image).suffix}"}
            self._insert(record | {"image": image})
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on a full disk
                self._db.execute("ROLLBACK")
            raise
        self.reviews.agree_locked(image, label)
        return self.get(request_id)

    def _insert(self, record: dict) -> None:
        row = {**record, "labels": json.dumps(record["labels"])}
        row["correct"] = int(record["correct"])
        names = (*COLUMNS, "client")  # client: /predict's (review_store); the rest: defaults
        self._db.execute(
            f"INSERT INTO feedback ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [row.get(c) for c in names],
        )

    def get(self, request_id: str) -> dict | None:
        """The stored record of request_id, with its review status and flag, or None."""
        sql = f"SELECT {', '.join(COLUMNS)}, review FROM feedback WHERE request_id = ?"
        row = self._db.execute(sql, (request_id,)).fetchone()
        return None if row is None else _record(row, self.reviews.flag_score)

    def _write_image(self, data: bytes) -> str:
        """Store the upload, without metadata, once under its sha256; return its path
        relative to root."""
        data, ext = scrub.clean(data)
        name = f"{IMAGES}/{hashlib.sha256(data).hexdigest()}{ext}"
        if not (self.root / name).is_file():
            forget.write_whole(self.root / name, data)
        return name

    def _migrate(self) -> None:
        """Move records/<request_id>.json (older servers) into the database, in their
        arrival order, keeping split and file; then rename the folder records.migrated. Of
        several workers starting at once, each migrates what is not in the database yet (none
        after the first), within one transaction, and the first rename wins."""
        folder = self.root / RECORDS
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
            except FileNotFoundError:  # another worker renamed the folder meanwhile
                records = []
            records.sort(key=lambda r: (r.get("predicted_at", 0), r["request_id"]))
            for record in records:
                if (
                    self.get(record["request_id"]) is None
                    and (self.root / record["file"]).is_file()
                ):
                    image = self._write_image((self.root / record["file"]).read_bytes())
                    self._insert(record | {"image": image})
            self._db.execute("COMMIT")
        try:
            folder.rename(folder.with_name(f"{RECORDS}.migrated"))
        except FileNotFoundError:
            pass


def _record(row: tuple, flag_score: float) -> dict:
    record = dict(zip((*COLUMNS, "review"), row, strict=True))
    record["labels"] = json.loads(record["labels"])
    record["correct"] = bool(record["correct"])
    return record | {"flagged": review_store.flagged(record, flag_score)}


def _storage_status(err: Exception) -> int | None:
    """507 for a full disk or quota, 503 for another write failure of the store (a file
    size limit, an I/O error), None for an error that is not the storage's."""
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        return {SQLITE_FULL: 507, SQLITE_IOERR: 503}.get(code)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    return 503 if err.errno in (errno.EFBIG, errno.EIO) else None
