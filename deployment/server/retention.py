"""When the feedback store forgets (forget.py says what): one request on demand, and old
uploads on a schedule.

delete: DELETE /feedback/{request_id} (human.py) or `--delete ID`: everything kept of one
    request (forget.delete).
purge: a feedback record is kept while it may train. Rejected in review (review_store.py):
    removed at the next purge, whatever its age, with any dataset file of it. Accepted: kept
    (until exported, then as part of a `dvc add`ed snapshot that keeps training). Pending:
    removed once older than params `serve.retention_days` unless the export wrote its
    <split>/<file>. Also every kept upload (`serve.store_uploads`) past that age, expired
    waiting predictions, and the images no row names any more. The server runs it at start
    and hourly (Sweeper); cron can run this module.

Deleted rows are overwritten on disk (PRAGMA secure_delete, feedback_store.connect).

Run: reprovision retention --purge [--feedback-dir DIR] [--retention-days N]
     reprovision retention --delete REQUEST_ID [--feedback-dir DIR]
"""

import argparse
import sqlite3
import sys
import threading
import time

from deployment.server import options
from deployment.server.feedback_store import REQUEST_ID, FeedbackStore

PURGE_EVERY_S = 3600.0  # the server's purge
EXPIRE_EVERY_S = 60.0  # the server's expiry of waiting predictions


class Sweeper:
    """The server's thread: store.purge() now and every PURGE_EVERY_S, and the expiry of
    waiting predictions every EXPIRE_EVERY_S (both cheap: indexed deletes, a few files)."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store, self._stop = store, threading.Event()
        threading.Thread(target=self._run, name="feedback-retention", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        purged_at = float("-inf")
        while not self._stop.is_set():
            try:
                if time.monotonic() - purged_at >= PURGE_EVERY_S:
                    purged_at = time.monotonic()
                    counts = self.store.purge()
                    if any(counts.values()):
                        print(f"serve: retention: removed {counts}", file=sys.stderr, flush=True)
                else:
                    self.store.recent.expire()
            except (sqlite3.Error, OSError) as err:
                print(f"serve: retention: {err}", file=sys.stderr, flush=True)
            self._stop.wait(EXPIRE_EVERY_S)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="reprovision retention", description=options.summary(__doc__)
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--purge", action="store_true", help="remove what is past retention")
    what.add_argument("--delete", metavar="REQUEST_ID", help="remove one request's upload")
    for flag in ("--feedback-dir", "--retention-days"):  # as the server's, params included
        parser.add_argument(flag, **options.FLAGS[flag])
    options.serve_params(parser, keys=("retention_days",))
    args = parser.parse_args()
    if args.delete is not None and not REQUEST_ID.fullmatch(args.delete):
        parser.error("REQUEST_ID must be the 32 hex characters /predict returned")
    store = FeedbackStore(args.feedback_dir, retention_days=args.retention_days)
    if args.delete is not None:
        removed = store.delete(args.delete)
        print("unknown request_id" if removed is None else f"removed: {removed}")
        sys.exit(0 if removed is not None else 1)
    print(f"purged: {store.purge()}")


if __name__ == "__main__":
    main()
