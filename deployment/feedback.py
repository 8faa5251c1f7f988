"""Feedback on served predictions, kept as a dataset in the seed folder format.

/predict remembers its recent predictions in memory, the uploaded image bytes included
(bounded: `capacity` predictions and `max_bytes` of images; the oldest go first). POST
/feedback {request_id, true_label} then writes, under the feedback root (serve.py
--feedback-dir, default datasets/raw/feedback):

    records/<request_id>.json       {request_id, model_name, model_version, labels (the
                                     model's classes), predicted_label, score, predicted_at,
                                     true_label, correct, split, file}
    <split>/<request_id>.<ext>      the uploaded bytes as sent (.png .jpg .bmp .gif);
                                    other formats are re-encoded as PNG
    <split>/groundtruth.csv         filename,label: every record of the split, sorted

so `data_processing.sources.seed.parse(root)` imports it like any raw dataset. The split is
fixed at a request_id's first feedback: record number n (0-based, in arrival order) goes
to test when n % test_every == 0, else to train. The first record is therefore test and
the second train: from two records on, both splits exist and the importer accepts the
folder (validation still wants every test label in train, and min_per_class images).

The records are the source of truth: each write is image, then record, then CSVs, each to
a temporary file renamed into place, so readers never see half a file. On start the CSVs
are rebuilt from the records and images without a record (a crash between writes) are
deleted. Posting again for a request_id relabels it (the last answer wins: a person may
correct a click) and keeps its split and file; the same body twice leaves the same bytes.
After a restart a request_id already on disk can still be relabelled; one never recorded
and no longer in memory is 404.

Validation: a request_id that is not 32 hex characters is 400 (it names files, so nothing
else may reach a path); a label the model that served the request does not know is 400.
"""

import csv
import io
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from deployment.inference import ApiError

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex
CSV_NAME = "groundtruth.csv"  # as data_processing/sources/seed.py, which we may not import
SPLITS = ("train", "test")
RECORDS = "records"  # <root>/records/<request_id>.json: one file per labelled prediction
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif"}  # kept as sent


@dataclass
class _Pending:
    record: dict  # what was predicted, and by which model
    labels: list[str]  # the serving model's classes: the valid true labels
    image: bytes


class FeedbackStore:
    """Remember recent predictions with their images; write feedback as a seed dataset."""

    def __init__(
        self,
        root: Path,
        capacity: int = 1000,
        max_bytes: int = 256 << 20,  # 256 MiB of remembered uploads
        test_every: int = 5,
    ) -> None:
        self.root = Path(root)
        self.capacity, self.max_bytes, self.test_every = capacity, max_bytes, test_every
        self._recent: OrderedDict[str, _Pending] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._recover()

    def remember(self, request_id: str, image: bytes, record: dict, labels: list[str]) -> None:
        """Keep what was predicted for request_id and its image; forget the oldest past the
        bounds (one image over max_bytes is not kept: feedback on it is 404)."""
        with self._lock:
            record = {**record, "predicted_at": round(time.time(), 3)}
            self._recent[request_id] = _Pending(record, list(labels), image)
            self._bytes += len(image)
            while self._recent and (
                len(self._recent) > self.capacity or self._bytes > self.max_bytes
            ):
                self._bytes -= len(self._recent.popitem(last=False)[1].image)

    def record(self, body: object) -> dict:
        """Validate {request_id, true_label}, store the image, record and CSV row.

        Returns:
            The record, as written to records/<request_id>.json.

        Raises:
            ApiError: 400 malformed body, id or unknown label; 404 unknown request_id.
        """
        if not isinstance(body, dict) or set(body) != {"request_id", "true_label"}:
            raise ApiError(400, "send exactly {request_id, true_label}")
        request_id, label = body["request_id"], body["true_label"]
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise ApiError(400, "request_id must be the 32 hex characters /predict returned")
        with self._lock:
            pending, stored = self._recent.get(request_id), self._records.get(request_id)
            if pending is None and stored is None:
                raise ApiError(404, f"unknown request_id {request_id}")
            labels = pending.labels if pending else stored["labels"]
            if label not in labels:
                raise ApiError(400, f"unknown label {label!r}; the model knows {labels}")
            if stored is None:
                stored = self._store_image(request_id, pending)
            record = {**stored, "true_label": label}
            record["correct"] = label == record["predicted_label"]
            _write(self.root / RECORDS / f"{request_id}.json", _json(record))
            self._records[request_id] = record
            self._write_csvs()
        return record

    def _store_image(self, request_id: str, pending: _Pending) -> dict:
        split = "test" if len(self._records) % self.test_every == 0 else "train"
        data, ext = _as_stored(pending.image)
        file = f"{split}/{request_id}{ext}"
        _write(self.root / file, data)
        record = {"request_id": request_id, **pending.record, "labels": pending.labels}
        return {**record, "split": split, "file": file}

    def _write_csvs(self) -> None:
        for split in SPLITS:
            rows = sorted(
                (Path(r["file"]).name, r["true_label"])
                for r in self._records.values()
                if r["split"] == split
            )
            if not rows:
                continue
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerows([("filename", "label"), *rows])
            _write(self.root / split / CSV_NAME, text.getvalue().encode())

    def _recover(self) -> None:
        """Read the records; delete images without one; rewrite the CSVs."""
        records = {}
        for stale in (self.root / RECORDS).glob(".tmp-*"):  # a write cut short
            stale.unlink()
        for path in sorted((self.root / RECORDS).glob("*.json")):
            record = json.loads(path.read_text())
            records[record["request_id"]] = record
        files = {r["file"] for r in records.values()}
        for split in SPLITS:
            for image in (self.root / split).glob("*"):
                if (
                    image.is_file()
                    and image.name != CSV_NAME
                    and f"{split}/{image.name}" not in files
                ):
                    image.unlink()
        self._records = records
        self._write_csvs()


def _as_stored(image: bytes) -> tuple[bytes, str]:
    """(bytes, extension): the upload itself when the seed importer reads its format."""
    with PILImage.open(io.BytesIO(image)) as im:
        if im.format in EXTENSIONS:
            return image, EXTENSIONS[im.format]
        out = io.BytesIO()
        im.save(out, format="PNG")
        return out.getvalue(), ".png"


def _json(record: dict) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True).encode()


def _write(path: Path, data: bytes) -> None:
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
