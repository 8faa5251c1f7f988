"""Feedback you can trust (issue 13, item 5): review before training.

On the store (a real SQLite database and files): the status transitions, acceptance by
distinct clients' agreement, the flag on a label contradicting a confident prediction, the
export and count of accepted records only, an older database gaining the review columns,
and retention keeping accepted records and purging rejected ones; the review guard's rule.
In headless Debian chromium (as tests/test_page.py), against the real server with a review
token: feedback over HTTP, the review page lists it flagged first, a click accepts it and
the watch's export counts it. Writes tests/artifacts/review.png (also on failure).
"""

import io
import os
import sqlite3
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES
from PIL import Image
from servers import Server, call, png, running, shared_bundle
from test_page import ARTIFACTS, WAIT, _browser_problem, browser  # noqa: F401 (a fixture)

from deployment.release.feedback_export import count, export
from deployment.server.feedback_store import FeedbackStore
from deployment.server.forget import DAY
from deployment.server.review import refusal, render
from deployment.server.review_store import Conflict, client_id

LABELS = ["a", "b", "c"]
TOKEN = "s3cret-review-token"


def noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def labelled(
    store: FeedbackStore, image: bytes, label: str, score: float = 0.6, client: str = "10.0.0.1"
) -> dict:
    """/predict (label "a" at `score`, from address `client`), then /feedback `label`."""
    rid = uuid.uuid4().hex
    record = {"model_name": "m", "model_version": "v1", "predicted_label": "a", "score": score}
    store.remember(rid, image, record | {"client": client_id(client)}, LABELS)
    return store.record({"request_id": rid, "true_label": label})


def reviews(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "feedback.sqlite3") as db:
        return dict(db.execute("SELECT request_id, review FROM feedback"))


def test_new_feedback_waits_for_a_reviewer_and_a_relabel_reopens_it(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, review_agree=0)
    first, second = (labelled(store, noise_png(i), "b") for i in (1, 2))
    assert (first["review"], first["flagged"]) == ("pending", False)
    accepted = store.reviews.decide(first["request_id"], "accept")
    assert accepted["review"] == "accepted" and accepted["reviewed_by"] == "reviewer"
    assert store.reviews.decide(second["request_id"], "reject")["review"] == "rejected"
    with pytest.raises(Conflict, match="already accepted"):
        store.reviews.decide(first["request_id"], "reject")
    assert store.reviews.decide(uuid.uuid4().hex, "accept") is None
    again = {"request_id": first["request_id"], "true_label": "b"}
    assert store.record(again)["review"] == "accepted"  # the same answer: still accepted
    relabelled = store.record(again | {"true_label": "c"})  # a new label: reviewed again
    assert relabelled["review"] == "pending" and relabelled["true_label"] == "c"
    assert reviews(tmp_path) == {first["request_id"]: "pending", second["request_id"]: "rejected"}


def test_distinct_clients_agreeing_accept_and_flagged_records_wait(tmp_path: Path) -> None:
    """review_agree 3: the same image (its bytes) with the same label from three addresses
    accepts those records; one address twice, another label or a rejected record does not
    count; a flagged record counts but waits for a person."""
    store = FeedbackStore(tmp_path, review_agree=3, review_flag_score=0.95)
    same = noise_png(5)
    one = labelled(store, same, "b", client="10.0.0.1")
    twice = labelled(store, same, "b", client="10.0.0.1")
    other = labelled(store, same, "c", client="10.0.0.2")  # another label
    rejected = labelled(store, same, "b", client="10.0.0.3")
    store.reviews.decide(rejected["request_id"], "reject")
    assert set(reviews(tmp_path).values()) == {"pending", "rejected"}
    flagged = labelled(store, same, "b", score=0.99, client="10.0.0.4")  # contradicts 0.99 "a"
    assert flagged["flagged"] and flagged["review"] == "pending"
    third = labelled(store, same, "b", client="10.0.0.5")  # the third distinct client
    assert third["review"] == "accepted"
    got = reviews(tmp_path)
    assert [got[r["request_id"]] for r in (one, twice, third)] == ["accepted"] * 3
    assert [got[r["request_id"]] for r in (other, rejected, flagged)] == [
        "pending",
        "rejected",
        "pending",
    ]
    off = FeedbackStore(tmp_path / "off", review_agree=1)  # 0 or 1: a reviewer only
    for n in range(4):
        assert labelled(off, same, "b", client=f"10.0.1.{n}")["review"] == "pending"


def test_flagged_feedback_heads_the_queue(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, review_agree=0, review_flag_score=0.95)
    plain = labelled(store, noise_png(10), "b", score=0.9)  # below the threshold
    agreeing = labelled(store, noise_png(11), "a", score=0.99)  # confirms the prediction
    flagged = labelled(store, noise_png(12), "c", score=0.96)
    assert [r["flagged"] for r in (plain, agreeing, flagged)] == [False, False, True]
    queue = store.reviews.queue(limit=10)
    assert [r["request_id"] for r in queue] == [
        flagged["request_id"],
        plain["request_id"],
        agreeing["request_id"],
    ]
    assert queue[0] | {"predicted_at": 0} == {
        "request_id": flagged["request_id"],
        "predicted_label": "a",
        "score": 0.96,
        "true_label": "c",
        "model_version": "v1",
        "predicted_at": 0,
        "flagged": True,
    }
    assert [r["request_id"] for r in store.reviews.queue(limit=1, offset=1)] == [
        plain["request_id"]
    ]
    store.reviews.decide(flagged["request_id"], "accept")
    counts = {"pending": 2, "accepted": 1, "rejected": 0, "flagged": 0}
    assert store.reviews.counts() == counts


def test_only_accepted_feedback_is_exported_and_counted(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, review_agree=0)
    records = [labelled(store, noise_png(20 + i), LABELS[i % 3]) for i in range(6)]
    for record in records[:3]:
        store.reviews.decide(record["request_id"], "accept")
    store.reviews.decide(records[3]["request_id"], "reject")
    assert count(tmp_path) == 3 and export(tmp_path) == 3
    exported = {p.stem for s in ("train", "test") for p in tmp_path.glob(f"{s}/*.png")}
    assert exported == {r["request_id"] for r in records[:3]}
    relabel = {"request_id": records[0]["request_id"], "true_label": "c"}
    store.record(relabel)  # back to review: its dataset file goes at the next export
    assert count(tmp_path) == 2 and export(tmp_path) == 2
    assert not list(tmp_path.glob(f"*/{records[0]['request_id']}.png"))


def test_an_older_database_gains_review_and_its_records_wait(tmp_path: Path) -> None:
    """A database written before review (no review columns, a record already exported)
    opens with every record pending: the export drops it until someone accepts it."""
    rid, image = uuid.uuid4().hex, "images/0a.png"
    (tmp_path / "images").mkdir()
    (tmp_path / image).write_bytes(noise_png(30))
    with sqlite3.connect(tmp_path / "feedback.sqlite3") as db:
        db.execute(
            "CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT "
            "UNIQUE NOT NULL, model_name, model_version, labels, predicted_label, score, "
            "predicted_at, true_label, correct, split, file, image)"
        )
        row = (rid, "m", "v0", '["a", "b", "c"]', "a", 0.99, time.time(), "b", 0, "test")
        db.execute(
            "INSERT INTO feedback VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *row,
                f"test/{rid}.png",
                image,
            ),
        )
    assert count(tmp_path) == 0  # the export's own connection migrates too
    store = FeedbackStore(tmp_path)
    record = store.get(rid)
    assert (record["review"], record["flagged"]) == ("pending", True)
    assert export(tmp_path) == 0
    store.reviews.decide(rid, "accept")
    assert export(tmp_path) == 1 and (tmp_path / f"test/{rid}.png").is_file()
    FeedbackStore(tmp_path)  # a second start changes nothing
    assert reviews(tmp_path) == {rid: "accepted"}


def test_retention_keeps_accepted_and_purges_rejected(tmp_path: Path) -> None:
    """Rejected: gone at the next purge, whatever its age; accepted: kept, old and never
    exported; pending: gone after retention_days, as before review."""
    store = FeedbackStore(tmp_path, retention_days=1, review_agree=0)
    old = {n: labelled(store, noise_png(40 + i), "b") for i, n in enumerate(("acc", "pend"))}
    new = {n: labelled(store, noise_png(50 + i), "b") for i, n in enumerate(("rej", "pend"))}
    store.reviews.decide(old["acc"]["request_id"], "accept")
    store.reviews.decide(new["rej"]["request_id"], "reject")
    with sqlite3.connect(tmp_path / "feedback.sqlite3") as db:
        rids = [old[n]["request_id"] for n in old]
        db.execute(
            "UPDATE feedback SET predicted_at = predicted_at - ? WHERE request_id IN (?, ?)",
            (2 * DAY, *rids),
        )
    assert store.purge()["feedback"] == 2
    kept = {old["acc"]["request_id"]: "accepted", new["pend"]["request_id"]: "pending"}
    assert reviews(tmp_path) == kept
    assert {p.name for p in (tmp_path / "images").iterdir()} == {
        Path(old["acc"]["image"]).name,
        Path(new["pend"]["image"]).name,
    }


@pytest.mark.parametrize(
    ("token", "bound", "client", "host", "given", "status"),
    [
        (None, "127.0.0.1", "127.0.0.1", "127.0.0.1:8080", None, None),
        (None, "localhost", "::1", "[::1]:8080", None, None),
        (None, "0.0.0.0", "127.0.0.1", "127.0.0.1:8080", None, 403),  # a public bind
        (None, "127.0.0.1", "10.1.2.3", "127.0.0.1:8080", None, 403),
        (None, "127.0.0.1", "127.0.0.1", "evil.example:8080", None, 403),  # DNS rebinding
        ("t0k", "0.0.0.0", "10.1.2.3", "example.org", "t0k", None),
        ("t0k", "127.0.0.1", "127.0.0.1", "127.0.0.1:8080", None, 401),
        ("t0k", "0.0.0.0", "10.1.2.3", "example.org", "t0K", 401),
    ],
)
def test_who_may_review(token, bound, client, host, given, status) -> None:
    refused = refusal(token, bound, client, host, given)
    assert (refused and refused[0]) == status, refused


# ---- the page in a browser ----


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The real server with a review token (env), flagging any contradicted prediction."""
    root = tmp_path_factory.mktemp("review")
    flags = ("--bundle", shared_bundle(tmp_path_factory), "--review-flag-score", "0")
    env = {**os.environ, "SERVE_REVIEW_TOKEN": TOKEN}
    with running(root, *flags, name="review", feedback=root / "feedback", env=env) as srv:
        yield srv


def _feedback(srv: Server, data: bytes, agree: bool) -> dict:
    """POST /predict then /feedback: the predicted label (agree) or another one."""
    status, answer = call(srv, "POST", "/predict", data, {"Content-Type": "image/png"})
    assert status == 200, answer
    label = answer["label"] if agree else next(c for c in CLASSES if c != answer["label"])
    body = {"request_id": answer["request_id"], "true_label": label}
    status, stored = call(srv, "POST", "/feedback", body)
    assert status == 200 and stored["record"]["review"] == "pending", stored
    return stored["record"]


def _http_checks(srv: Server, rid: str) -> None:
    """The token is needed everywhere; malformed decisions are 4xx."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert call(srv, "GET", "/review")[0] == 401
    assert call(srv, "GET", f"/review/image/{rid}?token=wrong")[0] == 401
    status, page = call(srv, "GET", "/review", headers=bearer)
    assert status == 200 and rid.encode() in page
    post = lambda path, body, headers: call(srv, "POST", path, body, headers)  # noqa: E731
    json_bearer = bearer | {"Content-Type": "application/json"}
    decision = b'{"decision": "accept"}'
    assert post(f"/review/{rid}", decision, {"Content-Type": "application/json"})[0] == 401
    assert post(f"/review/{rid}", decision, bearer | {"Content-Type": "text/plain"})[0] == 415
    assert post(f"/review/{rid}", b'{"decision": "maybe"}', json_bearer)[0] == 400
    assert post(f"/review/{uuid.uuid4().hex}", decision, json_bearer)[0] == 404
    assert post("/review/not-an-id", decision, json_bearer)[0] == 400


@pytest.mark.slow
def test_review_page_in_a_browser_accepts_into_training(request) -> None:
    if problem := _browser_problem():  # before the fixtures: fail in a second, not a minute
        pytest.fail(f"cannot drive the page in a browser: {problem}", pytrace=False)
    srv: Server = request.getfixturevalue("server")
    driver = request.getfixturevalue("browser")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def status_is(rid: str, text: str) -> None:
        located = (By.CSS_SELECTOR, f"#r-{rid} .status")
        try:
            WebDriverWait(driver, WAIT).until(ec.text_to_be_present_in_element(located, text))
        except TimeoutException:
            error = driver.find_element(By.ID, "error").text
            pytest.fail(f"{rid} not {text} within {WAIT}s; page error {error!r}")

    confirmed = _feedback(srv, png(0, seed=70), agree=True)  # first: the older record
    contradicted = _feedback(srv, png(1, seed=71), agree=False)
    assert (confirmed["flagged"], contradicted["flagged"]) == (False, True)
    _http_checks(srv, confirmed["request_id"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "review.png").unlink(missing_ok=True)  # this run's, after the clicks
    try:
        driver.get(f"{srv.url}/review?token={TOKEN}")
        assert driver.title == "reprovision: review feedback"
        assert "2 pending (1 flagged)" in driver.find_element(By.ID, "summary").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
        ids = [row.get_attribute("data-id") for row in rows]
        assert ids == [contradicted["request_id"], confirmed["request_id"]]  # flagged first
        first = rows[0]
        assert "flagged" in first.get_attribute("class")
        proposed = first.find_element(By.CSS_SELECTOR, ".proposed").text
        predicted = first.find_element(By.CSS_SELECTOR, ".predicted").text
        assert (proposed, predicted) == (
            contradicted["true_label"],
            contradicted["predicted_label"],
        )
        image = first.find_element(By.TAG_NAME, "img")  # fetched with the page's token
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 8

        first.find_element(By.CSS_SELECTOR, "button[data-decision=accept]").click()
        status_is(contradicted["request_id"], "accepted")
        rows[1].find_element(By.CSS_SELECTOR, "button[data-decision=reject]").click()
        status_is(confirmed["request_id"], "rejected")
        driver.save_screenshot(str(ARTIFACTS / "review.png"))
        assert reviews(srv.feedback) == {
            contradicted["request_id"]: "accepted",
            confirmed["request_id"]: "rejected",
        }
        assert count(srv.feedback) == 1 and export(srv.feedback) == 1  # what the watch trains on
        dataset = [p.stem for s in ("train", "test") for p in srv.feedback.glob(f"{s}/*.png")]
        assert dataset == [contradicted["request_id"]]
        again = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        path = f"/review/{contradicted['request_id']}"
        assert call(srv, "POST", path, b'{"decision": "reject"}', again)[0] == 409
        driver.refresh()
        assert (
            "0 pending (0 flagged), 1 accepted, 1 rejected"
            in driver.find_element(By.ID, "summary").text
        )
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert [e for e in severe if "favicon.ico" not in e["message"]] == []
    finally:
        if not (ARTIFACTS / "review.png").is_file():
            driver.save_screenshot(str(ARTIFACTS / "review.png"))
        (ARTIFACTS / "review.log").write_text(srv.log.read_text())


def test_the_page_escapes_labels_and_pages_with_its_token() -> None:
    record = {
        "request_id": "ab" * 16,
        "predicted_label": "<b>",
        "score": 0.5,
        "true_label": '"><script>alert(1)</script>',
        "model_version": "v1",
        "predicted_at": 0.0,
        "flagged": True,
    }
    counts = {"pending": 120, "accepted": 0, "rejected": 0, "flagged": 1}
    text = render(counts, [record], 2, "token=t%26k", 0.95)
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "120 pending (1 flagged), 0 accepted, 0 rejected; page 2 of 3" in text
    assert '<a href="/review?page=1&amp;token=t%26k">previous</a>' in text
    assert '<a href="/review?page=3&amp;token=t%26k">next</a>' in text
    assert f'src="/review/image/{"ab" * 16}?token=t%26k"' in text and "&ge; 95%" in text
