"""Feedback on served predictions: one atomic JSON record per request_id.

/predict remembers its last `capacity` predictions in memory (request_id -> what was
predicted). POST /feedback {request_id, true_label} then writes <dir>/<request_id>.json:

    {"request_id", "model_name", "model_version", "predicted_label", "score",
     "predicted_at", "true_label", "correct"}

Choices: a request_id that is not 32 hex characters is 400 (it names a file, so nothing else
may reach the path); a well-formed id this process did not serve (or has forgotten, or
served before a restart) is 404; a label the model does not know is 400. Posting again for
the same request_id replaces the record (the last answer wins: a person may correct a
click); the same body twice leaves the same bytes, so retries are idempotent. The record is
written to a temporary file in the same folder and renamed, so readers never see half.
"""

import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from deployment.inference import ApiError

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex


class FeedbackStore:
    """Remember recent predictions; write feedback records for them."""

    def __init__(self, folder: Path, labels: list[str], capacity: int = 10_000) -> None:
        self.folder = Path(folder)
        self.labels = labels
        self.capacity = capacity
        self._recent: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, record: dict) -> None:
        """Keep what was predicted for request_id (the oldest is forgotten past capacity)."""
        with self._lock:
            self._recent[request_id] = {**record, "predicted_at": round(time.time(), 3)}
            while len(self._recent) > self.capacity:
                self._recent.popitem(last=False)

    def record(self, body: object) -> dict:
        """Validate {request_id, true_label} and write its record; return the record.

        Raises:
            ApiError: 400 malformed body, id or unknown label; 404 unknown request_id.
        """
        if not isinstance(body, dict) or set(body) != {"request_id", "true_label"}:
            raise ApiError(400, "send exactly {request_id, true_label}")
        request_id, label = body["request_id"], body["true_label"]
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise ApiError(400, "request_id must be the 32 hex characters /predict returned")
        if label not in self.labels:
            raise ApiError(400, f"unknown label {label!r}; the model knows {self.labels}")
        with self._lock:
            predicted = self._recent.get(request_id)
        if predicted is None:
            raise ApiError(404, f"unknown request_id {request_id}")
        record = {
            "request_id": request_id,
            **predicted,
            "true_label": label,
            "correct": label == predicted["predicted_label"],
        }
        self._write(self.folder / f"{request_id}.json", record)
        return record

    @staticmethod
    def _write(path: Path, record: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
