"""Review of feedback before it trains: a `review` status on each row of the feedback table.

    pending   every new record, and one whose label changed after a decision: never trains
    accepted  by a reviewer (GET /review, review.py) or by agreement: the watch exports it
    rejected  by a reviewer: never trains; retention.purge removes it at its next run

Agreement: `review_agree` (params `serve.review_agree`) records of the same image (its sha256
after scrubbing: the `image` column) with the same true label, from that many distinct
clients, accept each other; 0 or 1 turns it off (a reviewer only). A client is the sha256 of
its network address (first 16 hex digits; the User-Agent and headers are the sender's to
choose, the address is not), so behind a proxy every user is one client and only a reviewer
accepts. A rejected record does not count.

Flagged: the true label contradicts a prediction whose score was at least
`review_flag_score` (params `serve.review_flag_score`). Flagged records head the review
queue and are never accepted by agreement: a person looks at them. The flag is worked out
when read, from the stored prediction, so a changed threshold applies to every record.

Databases of older servers gain the columns on open (`migrate`); their records are pending,
so nothing that was never reviewed trains.
"""

import hashlib
import sqlite3
import threading
import time

STATUSES = ("pending", "accepted", "rejected")
DECISIONS = {"accept": "accepted", "reject": "rejected"}
COLUMNS = {  # added to the feedback table: name -> declaration
    "review": "TEXT NOT NULL DEFAULT 'pending'",
    "reviewed_by": "TEXT",  # reviewer | agreement
    "reviewed_at": "REAL",  # time.time() of the decision
    "client": "TEXT",  # client_id of the first feedback's sender, for agreement
}
FLAGGED = "(true_label != predicted_label AND score >= ?)"  # SQL, with review_flag_score
QUEUED = ("request_id", "predicted_label", "score", "true_label", "model_version", "predicted_at")
DECIDED = (*QUEUED, "review", "reviewed_by", "reviewed_at")  # what decide returns


class Conflict(Exception):
    """The record was already decided."""


def migrate(db: sqlite3.Connection) -> None:
    """Add the review columns and indexes to the feedback table where they are missing; one
    process of several starting at once does it (BEGIN IMMEDIATE, then a second look)."""
    if set(COLUMNS) <= _columns(db) and _indexed(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for name in [c for c in COLUMNS if c not in _columns(db)]:
            db.execute(f"ALTER TABLE feedback ADD COLUMN {name} {COLUMNS[name]}")
        db.execute("CREATE INDEX IF NOT EXISTS feedback_review ON feedback (review, seq)")
        db.execute("CREATE INDEX IF NOT EXISTS feedback_image ON feedback (image)")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(feedback)")}


def _indexed(db: sqlite3.Connection) -> bool:
    names = {row[1] for row in db.execute("PRAGMA index_list(feedback)")}
    return {"feedback_review", "feedback_image"} <= names


def client_id(address: str | None) -> str | None:
    """The pseudonymous client of a request: sha256 of its address, 16 hex digits."""
    return hashlib.sha256(address.encode()).hexdigest()[:16] if address else None


def flagged(record: dict, flag_score: float) -> bool:
    """Does the record's label contradict a prediction scored at least flag_score?"""
    score = record.get("score") or 0.0
    return record["true_label"] != record["predicted_label"] and score >= flag_score


class Reviews:
    """The review side of the feedback store (feedback_store.FeedbackStore.reviews): `lock`
    guards the connection `db` (autocommit), as for pending.Shared. Methods whose names end
    in _locked expect the caller to hold it."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.Lock, agree: int, flag_score: float
    ) -> None:
        self.db, self.lock, self.agree, self.flag_score = db, lock, agree, flag_score

    def relabel_locked(self, request_id: str, label: str, predicted: str) -> None:
        """A new label for a stored record: back to pending, whatever was decided."""
        self.db.execute(
            "UPDATE feedback SET true_label = ?, correct = ?, review = 'pending', "
            "reviewed_by = NULL, reviewed_at = NULL WHERE request_id = ?",
            (label, int(label == predicted), request_id),
        )

    def agree_locked(self, image: str, label: str) -> int:
        """Accept the pending, unflagged records of `image` labelled `label` once `agree`
        distinct clients sent that label for it; return how many were accepted."""
        if self.agree < 2:
            return 0
        self.db.execute("BEGIN IMMEDIATE")  # the count and the update, together
        try:
            (clients,) = self.db.execute(
                "SELECT COUNT(DISTINCT client) FROM feedback WHERE image = ? AND true_label = ? "
                "AND review != 'rejected' AND client IS NOT NULL",
                (image, label),
            ).fetchone()
            accepted = 0
            if clients >= self.agree:
                accepted = self.db.execute(
                    "UPDATE feedback SET review = 'accepted', reviewed_by = 'agreement', "
                    f"reviewed_at = ? WHERE image = ? AND true_label = ? AND review = 'pending' "
                    f"AND NOT {FLAGGED}",
                    (time.time(), image, label, self.flag_score),
                ).rowcount
            self.db.execute("COMMIT")
            return accepted
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def decide(self, request_id: str, decision: str) -> dict | None:
        """A reviewer's accept or reject (a key of DECISIONS) of a pending record.

        Returns:
            The record (DECIDED and flagged), or None when there is no such record.

        Raises:
            Conflict: the record is not pending (decided before).
        """
        with self.lock:
            changed = self.db.execute(
                "UPDATE feedback SET review = ?, reviewed_by = 'reviewer', reviewed_at = ? "
                "WHERE request_id = ? AND review = 'pending'",
                (DECISIONS[decision], time.time(), request_id),
            ).rowcount
            found = self.db.execute(
                f"SELECT {', '.join(DECIDED)}, {FLAGGED} FROM feedback WHERE request_id = ?",
                (self.flag_score, request_id),
            ).fetchone()
        if found is not None and not changed:
            raise Conflict(f"request_id {request_id} was already {found[DECIDED.index('review')]}")
        return None if found is None else _flagged_row(DECIDED, found)

    def queue(self, limit: int, offset: int = 0) -> list[dict]:
        """Up to `limit` pending records from `offset`: flagged first, then the oldest. SQLite
        keeps only limit + offset rows while it sorts, so memory is bounded by the page."""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {', '.join(QUEUED)}, {FLAGGED} FROM feedback WHERE review = 'pending' "
                f"ORDER BY {FLAGGED} DESC, seq LIMIT ? OFFSET ?",
                (self.flag_score, self.flag_score, limit, offset),
            ).fetchall()
        return [_flagged_row(QUEUED, row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Records per status, and `flagged`: the pending ones that are flagged."""
        with self.lock:
            found = dict(self.db.execute("SELECT review, COUNT(*) FROM feedback GROUP BY review"))
            (flags,) = self.db.execute(
                f"SELECT COUNT(*) FROM feedback WHERE review = 'pending' AND {FLAGGED}",
                (self.flag_score,),
            ).fetchone()
        return {status: found.get(status, 0) for status in STATUSES} | {"flagged": flags}

    def image(self, request_id: str) -> str | None:
        """The stored image (images/<sha256>.<ext>, relative to the store) of request_id."""
        with self.lock:
            row = self.db.execute(
                "SELECT image FROM feedback WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else row[0]


def _flagged_row(names: tuple[str, ...], row: tuple) -> dict:
    """A row of `names` and the FLAGGED expression as a dict."""
    return dict(zip(names, row[:-1], strict=True)) | {"flagged": bool(row[-1])}
