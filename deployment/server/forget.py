"""What the feedback store forgets (retention.py says when): one request, or everything
past its time, each in one write transaction (BEGIN IMMEDIATE), so a server writing the same
database from another process (--workers N) never names an image this removes.

delete: the request's feedback row, its kept upload (`uploads`), its waiting prediction
    (`pending`), its image under images/ (unless another row names the same bytes), and what
    the watch's export made of it: <split>/<request_id>.<ext> and its line in
    <split>/groundtruth.csv.
purge: rejected feedback (with any dataset file of it), pending feedback older than the
    retention age unless the export wrote its <split>/<file>, kept uploads past that age,
    expired waiting predictions, and the images no row names any more.

The feedback store (feedback_store.py) calls these under its lock; nothing here imports it.
"""

import csv
import io
import os
import sqlite3
import tempfile
import time
from pathlib import Path

DAY = 86400.0
CSV_NAME = "groundtruth.csv"  # as data_processing/sources/seed.py, which we may not import


def write_whole(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def delete(db: sqlite3.Connection, root: Path, request_id: str) -> list[str] | None:
    """Remove everything kept of request_id (see the module doc); return the files removed,
    relative to root, or None when nothing was kept of it."""
    with _transaction(db):
        tables = _tables(db) & {"feedback", "uploads", "pending"}
        found = False
        images, removed = set(), []
        if "feedback" in tables:
            row = db.execute(
                "SELECT file, image FROM feedback WHERE request_id = ?", (request_id,)
            ).fetchone()
            if row is not None:
                found, (file, image) = True, row
                images.add(image)
                removed += _unexport(root, file)
        if "uploads" in tables:
            images |= {
                image
                for (image,) in db.execute(
                    "SELECT image FROM uploads WHERE request_id = ?", (request_id,)
                )
            }
        for table in tables:
            found |= (
                db.execute(f"DELETE FROM {table} WHERE request_id = ?", (request_id,)).rowcount > 0
            )
        return removed + _unlink_unused(db, root, images) if found else None


def purge(db: sqlite3.Connection, root: Path, retention_days: float, pending_s: float) -> dict:
    """Remove what is past its time (see the module doc); return counts of what went.
    retention_days 0 keeps feedback and uploads for ever (pending entries still expire)."""
    now = time.time()
    cutoff = now - retention_days * DAY if retention_days > 0 else float("-inf")
    counts = {"feedback": 0, "uploads": 0, "pending": 0, "images": 0}
    with _transaction(db):
        tables = _tables(db)
        images = set()
        if "feedback" in tables:
            gone = _purged_feedback(db, root, cutoff)
            db.executemany("DELETE FROM feedback WHERE request_id = ?", [(r,) for r, _ in gone])
            counts["feedback"], images = len(gone), {image for _, image in gone}
        if "uploads" in tables:
            images |= {
                i for (i,) in db.execute("SELECT image FROM uploads WHERE at < ?", (cutoff,))
            }
            counts["uploads"] = db.execute("DELETE FROM uploads WHERE at < ?", (cutoff,)).rowcount
        if "pending" in tables:
            expired = db.execute("DELETE FROM pending WHERE at < ?", (now - pending_s,))
            counts["pending"] = expired.rowcount
        counts["images"] = len(_unlink_unused(db, root, images))
    return counts


def _purged_feedback(db: sqlite3.Connection, root: Path, cutoff: float) -> list[tuple[str, str]]:
    """(request_id, image) of the feedback rows purge removes (the module doc's rule); the
    dataset files of rejected ones go now."""
    rows = db.execute(
        "SELECT request_id, file, image, review FROM feedback "
        "WHERE review = 'rejected' OR (review = 'pending' AND predicted_at < ?)",
        (cutoff,),
    ).fetchall()
    for _, file, _, review in rows:
        if review == "rejected":
            _unexport(root, file)  # left by an export before a relabel sent it back to review
    return [
        (rid, image)
        for rid, file, image, review in rows
        if review == "rejected" or not (root / file).is_file()
    ]


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on an error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


def _unlink_unused(db: sqlite3.Connection, root: Path, images: set[str]) -> list[str]:
    """Remove each of `images` that no feedback or uploads row names; return those removed."""
    tables = _tables(db) & {"feedback", "uploads"}
    removed = []
    for image in sorted(images):
        named = any(
            db.execute(f"SELECT 1 FROM {t} WHERE image = ? LIMIT 1", (image,)).fetchone()
            for t in tables
        )
        if not named and (root / image).is_file():
            (root / image).unlink()
            removed.append(image)
    return removed


def _unexport(root: Path, file: str) -> list[str]:
    """Remove <split>/<name> and its line in <split>/groundtruth.csv (the CSV goes with its
    last line); return the files removed or rewritten."""
    path, changed = root / file, []
    if path.is_file():
        path.unlink()
        changed.append(file)
    table = path.with_name(CSV_NAME)
    if table.is_file():
        lines = list(csv.reader(io.StringIO(table.read_text())))
        kept = [row for row in lines[1:] if row and row[0] != path.name]
        if len(kept) < len(lines) - 1:
            if kept:
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows([lines[0], *kept])
                write_whole(table, text.getvalue().encode())
            else:
                table.unlink()
            changed.append(table.relative_to(root).as_posix())
    return changed
