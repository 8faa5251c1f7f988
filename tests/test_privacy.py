"""Privacy of uploads (issue 13, item 6), on real files and the real server over HTTP.

A JPEG carrying EXIF GPS tags, XMP, an ICC profile and a comment, and a PNG with text
chunks, are stored without any of it (and with their pixels unchanged); no upload is written
until feedback names it, unless params `serve.store_uploads` says so; DELETE
/feedback/{request_id} removes the image, the record and the exported dataset files (with
--workers 2, on the SQLite store they share); retention removes old uploads that no dataset
holds, at server start and from the command line (deployment/server/retention.py).
"""

import io
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES
from PIL import Image, ImageCms, PngImagePlugin
from servers import Server, call, running, shared_bundle

from deployment.release.feedback_export import export
from deployment.server.feedback_store import FeedbackStore
from deployment.server.scrub import clean

pytestmark = pytest.mark.slow  # real servers (a tiny bundle trained once per process)
GPS_IFD, ORIENTATION = 0x8825, 0x0112
SECRETS = (b"Model X", b"home sweet home", b"51.5,-0.12", b"adobe:ns:meta")
INFO_KEYS = {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment", "Author", "GPS"}
LABELS = ["a", "b"]


def pixels(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (24, 16, 3), dtype=np.uint8), "RGB")


def gps_jpeg(seed: int = 0, orientation: int | None = None) -> bytes:
    """A photo as a phone writes it: EXIF with GPS and camera, XMP, an ICC profile, a comment."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Phone", "Model X"
    if orientation:
        exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 1.0)})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    out = io.BytesIO()
    pixels(seed).save(
        out, "JPEG", exif=exif, icc_profile=icc, xmp=xmp, comment=b"home sweet home", quality=90
    )
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as im:  # the fixture carries what it should
        assert im.getexif().get_ifd(GPS_IFD)[1] == "N" and INFO_KEYS & set(im.info) >= {
            "exif",
            "icc_profile",
            "comment",
        }
    return data


def text_png(seed: int = 1) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "home sweet home")
    info.add_text("GPS", "51.5,-0.12")
    out = io.BytesIO()
    pixels(seed).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def assert_clean(path: Path, upload: bytes) -> None:
    """No EXIF (so no GPS), XMP, ICC, comment or text, and the upload's very pixels."""
    data = path.read_bytes()
    assert not any(secret in data for secret in SECRETS)
    with Image.open(path) as im, Image.open(io.BytesIO(upload)) as before:
        assert dict(im.getexif()) == {} and not im.getexif().get_ifd(GPS_IFD)
        assert not INFO_KEYS & set(im.info), im.info
        assert not getattr(im, "text", {})
        assert np.array_equal(np.asarray(im), np.asarray(before))  # rewritten losslessly


def test_scrub_keeps_pixels_and_only_the_orientation() -> None:
    upright = clean(gps_jpeg(2, orientation=6))[0]
    with Image.open(io.BytesIO(upright)) as im:
        assert dict(im.getexif()) == {ORIENTATION: 6}  # training turns it as serving did
    assert not any(s in upright for s in SECRETS)
    plain = io.BytesIO()
    pixels(3).save(plain, "PNG")
    assert clean(plain.getvalue()) == (plain.getvalue(), ".png")  # nothing to strip: same bytes
    gif = io.BytesIO()
    pixels(4).convert("P").save(gif, "GIF", comment=b"home sweet home")
    data, ext = clean(gif.getvalue())
    assert ext == ".png" and b"home" not in data


def _predict(srv: Server, data: bytes, kind: str) -> str:
    status, body = call(srv, "POST", "/predict", data, {"Content-Type": f"image/{kind}"})
    assert status == 200, body
    return body["request_id"]


def _rows(root: Path, table: str = "feedback") -> dict[str, tuple]:
    with sqlite3.connect(root / "feedback.sqlite3") as db:
        return {r[0]: r for r in db.execute(f"SELECT request_id, image FROM {table}")}


def _images(root: Path) -> set[str]:
    return {p.name for p in (root / "images").glob("*")} if (root / "images").is_dir() else set()


def _old_records(root: Path) -> tuple[str, str]:
    """(an accepted, exported record, a pending one never exported), both two days old, in
    a store at root."""
    store = FeedbackStore(root)
    rids = []
    for seed in (10, 11):
        rid = uuid.uuid4().hex
        store.remember(rid, text_png(seed), {"predicted_label": "a", "score": 0.5}, LABELS)
        store.record({"request_id": rid, "true_label": "b"})
        rids.append(rid)
        if seed == 10:
            store.reviews.decide(rid, "accept")  # only accepted records are exported
            export(root)  # the first is now a dataset file (its <split>/<id>.png)
    with sqlite3.connect(root / "feedback.sqlite3") as db:
        db.execute("UPDATE feedback SET predicted_at = predicted_at - 2 * 86400")
    return rids[0], rids[1]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("privacy")
    exported, unexported = _old_records(root / "feedback")
    flags = ("--bundle", shared_bundle(tmp_path_factory), "--workers", "2")
    flags += ("--retention-days", "1", "--drain-seconds", "0")
    with running(root, *flags, feedback=root / "feedback") as srv:
        yield srv, exported, unexported


def test_retention_at_start_removes_only_old_unexported_feedback(two_workers) -> None:
    srv, exported, unexported = two_workers
    deadline = time.monotonic() + 10
    while unexported in _rows(srv.feedback) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(_rows(srv.feedback)) >= {exported} and unexported not in _rows(srv.feedback)
    assert len(_images(srv.feedback)) == 1  # the purged record's image went with it


def test_uploads_are_stored_only_with_feedback_and_without_metadata(two_workers) -> None:
    srv = two_workers[0]
    for data, kind in ((gps_jpeg(), "jpeg"), (text_png(), "png")):
        before = _images(srv.feedback)
        rid = _predict(srv, data, kind)
        assert _images(srv.feedback) == before  # a prediction alone writes no image
        assert rid in _rows(srv.feedback, "pending")  # it waits (--workers 2: in SQLite)
        status, body = call(
            srv, "POST", "/feedback", {"request_id": rid, "true_label": CLASSES[0]}
        )
        assert status == 200, body
        assert rid not in _rows(srv.feedback, "pending")  # the waiting copy is gone
        assert_clean(srv.feedback / body["record"]["image"], data)
        assert body["record"]["image"].endswith(".jpg" if kind == "jpeg" else ".png")


def test_delete_removes_the_image_the_record_and_its_dataset_files(two_workers) -> None:
    srv = two_workers[0]
    rids = []
    for seed in (20, 21, 22):
        rid = _predict(srv, gps_jpeg(seed), "jpeg")
        status, _ = call(srv, "POST", "/feedback", {"request_id": rid, "true_label": CLASSES[1]})
        assert status == 200
        status, _ = call(srv, "POST", f"/review/{rid}", {"decision": "accept"})  # review.py
        assert status == 200
        rids.append(rid)
    export(srv.feedback)  # what the watch does: <split>/<id>.jpg and groundtruth.csv
    rid = rids[1]
    (_, image), file = _rows(srv.feedback)[rid], next(srv.feedback.glob(f"*/{rid}.jpg"))
    status, body = call(srv, "DELETE", f"/feedback/{rid}")
    assert status == 200 and body["deleted"] == rid and image in body["removed"]
    assert file.relative_to(srv.feedback).as_posix() in body["removed"]
    for _ in range(4):  # --workers 2: whichever worker answers, nothing is left of it
        status, body = call(srv, "DELETE", f"/feedback/{rid}")
        assert status == 404 and "error" in body
    assert rid not in _rows(srv.feedback) and not (srv.feedback / image).exists()
    assert not file.exists() and rid not in (file.parent / "groundtruth.csv").read_text()
    assert all(r in _rows(srv.feedback) for r in (rids[0], rids[2]))
    assert call(srv, "DELETE", "/feedback/not-an-id")[0] == 400
    status, body = call(srv, "DELETE", f"/feedback/{uuid.uuid4().hex}")
    assert status == 404 and "error" in body


def test_store_uploads_from_params_and_pending_expiry(tmp_path: Path, tmp_path_factory) -> None:
    """params.yaml `serve` (in the server's working directory): every upload is stored at
    /predict, cleaned; a prediction waits 1.2 s for feedback, then feedback on it is 404."""
    (tmp_path / "params.yaml").write_text(
        "serve:\n  store_uploads: true\n  pending_minutes: 0.02\n"
    )
    bundle = shared_bundle(tmp_path_factory)
    flags = ("--bundle", bundle, "--drain-seconds", "0")
    with running(tmp_path, *flags, feedback=tmp_path / "feedback") as srv:
        data = gps_jpeg(30)
        rid = _predict(srv, data, "jpeg")
        (_, image) = _rows(srv.feedback, "uploads")[rid]
        assert_clean(srv.feedback / image, data)
        time.sleep(1.5)
        status, _ = call(srv, "POST", "/feedback", {"request_id": rid, "true_label": CLASSES[0]})
        assert status == 404
        status, body = call(srv, "DELETE", f"/feedback/{rid}")
        assert (status, body["removed"]) == (200, [image])
        assert not (srv.feedback / image).exists() and rid not in _rows(srv.feedback, "uploads")


def test_purge_and_delete_from_the_command_line(tmp_path: Path) -> None:
    root = tmp_path / "feedback"
    exported, unexported = _old_records(root)
    (tmp_path / "params.yaml").write_text("serve:\n  retention_days: 1\n")

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "deployment.server.retention", "--feedback-dir", root]
        return subprocess.run(
            [*map(str, command), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    purged = cli("--purge")
    assert purged.returncode == 0 and "'feedback': 1" in purged.stdout, purged.stderr
    assert set(_rows(root)) == {exported}
    assert cli("--delete", exported).returncode == 0
    assert _rows(root) == {} and _images(root) == set()
    assert not list(root.glob("*/*.png")) and not list(root.glob("*/groundtruth.csv"))
    assert cli("--delete", exported).returncode == 1  # nothing is kept of it any more


def test_shared_pending_rows_expire_and_an_older_table_is_replaced(tmp_path: Path) -> None:
    """--workers N keeps waiting uploads in SQLite: they expire after pending_minutes, and an
    older server's pending table (no expiry time) is replaced on start."""
    with sqlite3.connect(tmp_path / "feedback.sqlite3") as db:
        db.execute(
            "CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT "
            "UNIQUE NOT NULL, record TEXT NOT NULL, labels TEXT NOT NULL, image BLOB NOT NULL)"
        )
        db.execute("INSERT INTO pending VALUES (1, 'old', '{}', '[]', x'00')")
    store = FeedbackStore(tmp_path, shared=True, pending_minutes=0.01)  # 0.6 s
    rid = uuid.uuid4().hex
    store.remember(rid, text_png(), {"predicted_label": "a", "score": 0.5}, LABELS)
    assert set(_rows(tmp_path, "pending")) == {rid}
    time.sleep(0.8)
    assert store.recent.get(rid) is None
    assert store.purge()["pending"] == 1 and _rows(tmp_path, "pending") == {}
    assert _images(tmp_path) == set()  # nothing was ever written as a file
    memory = FeedbackStore(tmp_path / "one")  # --workers 1: waiting in memory; deleted there
    rid = uuid.uuid4().hex
    memory.remember(rid, text_png(), {"predicted_label": "a", "score": 0.5}, LABELS)
    assert memory.delete(rid) == [] and memory.recent.get(rid) is None
    assert memory.delete(rid) is None
