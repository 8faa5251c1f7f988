"""The feedback store: a real SQLite database and real files (deployment/server/feedback_store.py).

Relabelling, idempotence and the split rule; one image file per distinct upload; a restart
that keeps everything; the migration of records written by older servers; the exported
seed-format dataset read back by the project's own importer (of accepted records: review is
tests/test_review.py); and writers in 8 processes at once losing and doubling nothing.
"""

import io
import json
import multiprocessing
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_processing.sources import seed
from deployment.release.feedback_export import export
from deployment.server.errors import ApiError
from deployment.server.feedback_store import FeedbackStore

LABELS = ["a", "b", "c"]


def noise_png(seed_: int) -> bytes:
    pixels = np.random.default_rng(seed_).integers(0, 255, (8, 8), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def predicted(store: FeedbackStore, image: bytes, labels: list[str] = LABELS) -> str:
    """What /predict does: remember a prediction; return its request_id."""
    rid = uuid.uuid4().hex
    record = {"model_name": "m", "model_version": "v1", "predicted_label": labels[0]}
    store.remember(rid, image, record | {"score": 0.9}, labels)
    return rid


def rows(root: Path) -> list[dict]:
    with sqlite3.connect(root / "feedback.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY seq")]


def test_split_rule_relabel_and_one_file_per_image(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    same = noise_png(0)
    rids = [predicted(store, same if i < 2 else noise_png(i)) for i in range(6)]
    for rid in rids:
        store.record({"request_id": rid, "true_label": "b"})
    store.record({"request_id": rids[1], "true_label": "a"})  # the last answer wins
    got = rows(tmp_path)
    assert [r["request_id"] for r in got] == rids
    assert [r["split"] for r in got] == ["test", "train", "train", "train", "train", "test"]
    assert [r["true_label"] for r in got] == ["b", "a", "b", "b", "b", "b"]
    assert [r["correct"] for r in got] == [0, 1, 0, 0, 0, 0]
    assert got[0]["image"] == got[1]["image"]  # the same bytes are stored once
    assert len(list((tmp_path / "images").iterdir())) == 5


def test_a_restart_keeps_every_record_and_relabels_from_the_database(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    rid = predicted(store, noise_png(1))
    store.record({"request_id": rid, "true_label": "c"})
    del store
    again = FeedbackStore(tmp_path)  # nothing remembered in memory now
    record = again.record({"request_id": rid, "true_label": "a"})
    assert record["true_label"] == "a" and record["correct"] is True
    assert record["labels"] == LABELS and rows(tmp_path)[0]["true_label"] == "a"


def test_shared_stores_see_each_others_predictions_within_the_bounds(tmp_path: Path) -> None:
    """--workers N: a prediction one worker remembers gets feedback through another; the
    pending table keeps the newest `capacity` predictions and at most max_bytes of images."""
    images = [noise_png(60 + i) for i in range(4)]
    size = len(images[0])
    one = FeedbackStore(tmp_path, capacity=3, max_bytes=3 * size + 10, shared=True)
    other = FeedbackStore(tmp_path, capacity=3, max_bytes=3 * size + 10, shared=True)
    rids = [predicted(one, image) for image in images]  # the first is forgotten
    with pytest.raises(ApiError) as err:
        other.record({"request_id": rids[0], "true_label": "a"})
    assert err.value.status == 404
    record = other.record({"request_id": rids[1], "true_label": "b"})
    assert record["model_version"] == "v1"
    assert (tmp_path / record["image"]).read_bytes() == images[1]
    # one image over max_bytes: it and all before it are forgotten, as in memory
    predicted(one, noise_png(70) + b"\0" * (4 * size))
    with sqlite3.connect(tmp_path / "feedback.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone() == (0,)


def test_export_is_a_seed_dataset_the_importer_reads(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    for i in range(7):
        rid = predicted(store, noise_png(10 + i))
        store.record({"request_id": rid, "true_label": LABELS[i % 3]})
        store.reviews.decide(rid, "accept")  # only accepted records train
    assert export(tmp_path) == 7
    splits = seed.parse(tmp_path, "feedback")
    assert {s: len(d.images) for s, d in splits.items()} == {"train": 5, "test": 2}
    for r in rows(tmp_path):
        assert (tmp_path / r["file"]).read_bytes() == (tmp_path / r["image"]).read_bytes()
    assert export(tmp_path) == 7  # again: the same files
    assert seed.parse(tmp_path, "feedback") == splits


def test_records_of_older_servers_are_migrated(tmp_path: Path) -> None:
    """records/<request_id>.json and <split>/<file> (the format before the database) become
    rows, in arrival order, with their split and file; the export gives the same CSVs."""
    legacy = {}
    for i, split in enumerate(["test", "train", "train"]):
        rid = uuid.uuid4().hex
        file = f"{split}/{rid}.png"
        (tmp_path / split).mkdir(exist_ok=True)
        (tmp_path / file).write_bytes(noise_png(20 + i))
        record = {
            "request_id": rid,
            "model_name": "m",
            "model_version": "v0",
            "labels": LABELS,
            "predicted_label": "a",
            "score": 0.5,
            "predicted_at": 1000.0 + i,
            "true_label": LABELS[i],
            "correct": i == 0,
            "split": split,
            "file": file,
        }
        (tmp_path / "records").mkdir(exist_ok=True)
        (tmp_path / "records" / f"{rid}.json").write_text(json.dumps(record))
        legacy[rid] = record
    csvs = {s: (tmp_path / s / "groundtruth.csv") for s in ("train", "test")}
    for split, path in csvs.items():  # as the older server wrote them: sorted by file name
        chosen = sorted(
            (Path(r["file"]).name, r["true_label"]) for r in legacy.values() if r["split"] == split
        )
        path.write_text("".join(f"{n},{lab}\n" for n, lab in [("filename", "label"), *chosen]))
    before = {s: p.read_text() for s, p in csvs.items()}
    store = FeedbackStore(tmp_path)
    got = rows(tmp_path)
    assert [r["request_id"] for r in got] == list(legacy)  # arrival order
    for r in got:
        old = legacy[r["request_id"]]
        for key in ("split", "file", "true_label", "predicted_at", "model_version"):
            assert r[key] == old[key], key
        assert r["review"] == "pending"  # never reviewed: it trains once accepted
    assert not (tmp_path / "records").exists() and (tmp_path / "records.migrated").is_dir()
    for rid in legacy:
        store.reviews.decide(rid, "accept")
    export(tmp_path)
    assert {s: p.read_text() for s, p in csvs.items()} == before
    FeedbackStore(tmp_path)  # a second start has nothing to migrate
    assert len(rows(tmp_path)) == 3


def _writer(root: str, worker: int, count: int) -> None:
    store = FeedbackStore(Path(root))
    for i in range(count):
        rid = predicted(store, noise_png(1000 * worker + i))
        store.record({"request_id": rid, "true_label": LABELS[i % 3]})


def test_writers_in_8_processes_lose_and_double_nothing(tmp_path: Path) -> None:
    FeedbackStore(tmp_path)  # the database exists before the writers race to create it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    got = rows(tmp_path)
    assert len(got) == 400 and len({r["request_id"] for r in got}) == 400
    assert [r["seq"] for r in got] == list(range(1, 401))
    assert sum(r["split"] == "test" for r in got) == 80  # every 5th, in arrival order
    assert len(list((tmp_path / "images").iterdir())) == 400


def test_exported_feedback_merges_into_a_normalized_train_split(tmp_path: Path) -> None:
    """normalize's merge (data_processing/feedback.py) appends the exported records to the
    train split it read (an ImageTable), ids renumbered by file name."""
    from conftest import CLASSES, write_seed_dataset

    from data_processing import feedback as merging
    from data_processing import schema
    from data_processing.normalize import normalize

    raw = write_seed_dataset(tmp_path / "raw" / "shapes")
    store = FeedbackStore(tmp_path / "raw" / "feedback")
    for i in range(3):
        rid = predicted(store, noise_png(40 + i), list(CLASSES))
        store.record({"request_id": rid, "true_label": CLASSES[i]})
        store.reviews.decide(rid, "accept")
    export(tmp_path / "raw" / "feedback")
    train = normalize(raw, "seed")["train"]
    params = merging.FeedbackParams(dataset="shapes", snapshot="abc")
    merged = merging.merge(train, raw, params)
    assert merged.info["feedback_images"] == 3 and len(merged.images) == len(train.images) + 3
    assert [i.id for i in merged.images] == list(range(1, len(merged.images) + 1))
    names = [i.file_name for i in merged.images]
    assert names == sorted(names) and sum(n.startswith("../feedback/") for n in names) == 3
    assert schema.validate(merged) == []


def _fill_until_full(root: str, fsize: int, out) -> None:
    """Record feedback until the store refuses 3 times, under a file-size limit when
    fsize > 0. Sends (statuses, rows the database holds, its integrity check)."""
    import resource

    store = FeedbackStore(Path(root))
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    statuses = []
    for i in range(400):
        rid = predicted(store, noise_png(5000 + i) * 40)  # about 10 KB an image
        try:
            store.record({"request_id": rid, "true_label": "a"})
            statuses.append(200)
        except Exception as err:  # noqa: BLE001 - the status is what is checked
            statuses.append(getattr(err, "status", repr(err)))
            if len(statuses) - statuses.count(200) >= 3:
                break
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    with sqlite3.connect(Path(root) / "feedback.sqlite3") as db:
        held = db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    out.put((statuses, held, ok))


def test_a_full_disk_is_507_and_the_database_stays_consistent(tmp_path: Path) -> None:
    """On a 2 MiB tmpfs (a real ENOSPC) feedback is refused with 507 once the disk fills;
    where mounting is not permitted, a file-size limit (EFBIG, SQLite's I/O error) gives 503.
    Either way every accepted record is in the database and it passes its integrity check."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )
    try:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        child = ctx.Process(
            target=_fill_until_full, args=(str(mount / "feedback"), 0 if mounted else 400_000, out)
        )
        child.start()
        statuses, held, ok = out.get(timeout=120)
        child.join(timeout=30)
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)
    refused = 507 if mounted else 503
    accepted = statuses.count(200)
    assert accepted >= 5 and statuses[accepted:] == [refused] * 3, statuses
    assert (held, ok) == (accepted, "ok")


def _connect_at(job: tuple[str, float]) -> str:
    """Open the database at `root` once the shared start time comes (a spawned process)."""
    import time

    from deployment.server.feedback_store import connect

    root, start = job
    while time.time() < start:
        pass
    try:
        connect(Path(root)).close()
        return "ok"
    except sqlite3.Error as err:
        return repr(err)


def test_workers_creating_the_database_at_once_all_start(tmp_path: Path) -> None:
    """serve --workers N on a fresh feedback folder: N processes create the database at the
    same moment. Switching it to WAL fails at once ("database is locked") in all but one
    unless connect waits its turn; a worker that gave up took the whole server down (found
    by bench/peers.py). 8 trials of 6 processes: it failed 3 in 20 trials of 6 before."""
    import time

    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_connect_at, [(str(tmp_path / "warm"), 0.0)] * 6)  # imports done
        for trial in range(8):
            start = time.time() + 0.3
            found = pool.map(_connect_at, [(str(tmp_path / str(trial)), start)] * 6)
            assert found == ["ok"] * 6, found
