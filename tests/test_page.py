"""The web page in a real browser: headless Debian chromium, driven by Selenium through the
Debian chromedriver, against the real server (`python -m deployment.server.serve` in a subprocess)
on a tiny bundle built through the real stage modules.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: `apt-get install chromium
chromium-driver`; override with $CHROMIUM and $CHROMEDRIVER) and the `selenium` package.
Selenium never downloads a driver here: the Service names the Debian one. A missing browser,
driver or package FAILS the test with the reason, it never skips.
Writes tests/artifacts/page.png (the page after feedback; also on failure) and page.log.
"""

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CLASSES,
    ROOT,
    pattern,
)
from PIL import Image
from servers import Server, running, shared_bundle

pytestmark = pytest.mark.slow
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT = 20  # seconds for anything in the page (a prediction takes milliseconds)
TRUTH = "diagonal"  # the class of the uploaded image


def _browser_problem() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path, package, env in (
        (CHROMIUM, "chromium", "CHROMIUM"),
        (CHROMEDRIVER, "chromium-driver", "CHROMEDRIVER"),
    ):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found: apt-get install {package} (or set ${env})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed: pip install selenium"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("page")
    bundle = shared_bundle(tmp_path_factory)
    flags = ("--host", "127.0.0.1", "--bundle", bundle)
    with running(root, *flags, name="page", feedback=root / "feedback") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # we may run as root (CI, containers)
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",  # the server is on 127.0.0.1; nothing else may be reached
        "--window-size=900,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "driver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _digit_png(path: Path, label: int) -> Path:
    """A 28x28 grayscale PNG of class `label` (the tiny dataset's stroke, scaled up 3.5x)."""
    image = Image.fromarray(pattern(label, np.random.default_rng(7)), "L")
    image.resize((28, 28), Image.Resampling.NEAREST).save(path)
    return path


def _wait_for_record(folder: Path, true_label: str) -> dict:
    """The one feedback record (a row of folder/feedback.sqlite3), once it says true_label.
    The server stores it before it replies; the wait only absorbs slow disks."""
    deadline = time.monotonic() + WAIT
    while True:
        rows = []
        if (folder / "feedback.sqlite3").is_file():
            with sqlite3.connect(folder / "feedback.sqlite3") as db:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute("SELECT * FROM feedback")]
        if len(rows) == 1 and rows[0]["true_label"] == true_label:
            rows[0]["labels"] = json.loads(rows[0]["labels"])
            rows[0]["correct"] = bool(rows[0]["correct"])
            return rows[0]
        assert len(rows) <= 1, f"one prediction, one record: {rows}"
        assert time.monotonic() < deadline, f"no record with true_label {true_label!r}: {rows}"
        time.sleep(0.1)


def test_upload_predict_and_feedback_in_a_browser(request, tmp_path) -> None:
    if problem := _browser_problem():  # before the fixtures: fail in a second, not a minute
        pytest.fail(f"cannot drive the page in a browser: {problem}", pytrace=False)
    server: Server = request.getfixturevalue("server")
    browser = request.getfixturevalue("browser")
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731

    def until(condition, what: str):
        try:
            return WebDriverWait(browser, WAIT).until(condition)
        except TimeoutException:
            pytest.fail(
                f"{what} within {WAIT}s; the page's error line: {find('error').text!r}; "
                f"server log:\n{server.log.read_text()[-2000:]}"
            )

    def text_is(id_: str, text: str):
        return until(ec.text_to_be_present_in_element((By.ID, id_), text), f"#{id_} {text!r}")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(server.url + "/")
        assert browser.title == "reprovision: classify an image"
        text_is("model", f"model {server.name}, version ")  # POST /v2/repository/index
        assert not find("result").is_displayed() and not find("preview").is_displayed()
        model, drop = find("model").rect, find("drop").rect  # the drop zone is below, not over
        assert model["y"] + model["height"] <= drop["y"], (model, drop)

        # The user chooses a file: the page previews it and POSTs it to /predict (multipart).
        find("file").send_keys(str(_digit_png(tmp_path / "digit.png", CLASSES.index(TRUTH))))
        until(ec.visibility_of_element_located((By.ID, "result")), "a prediction")
        assert find("error").text == ""
        preview = find("preview")
        assert preview.is_displayed()
        assert browser.execute_script("return arguments[0].naturalWidth", preview) == 28
        assert preview.size["width"] > 28  # shown scaled up (pixelated), not at 28 px
        predicted, score = find("label").text, find("score").text
        assert predicted in CLASSES and score.endswith("%")

        # top-k bars: one per class (3 < top 5), best first, the best one is the prediction
        rows = find("bars").find_elements(By.CSS_SELECTOR, ".bar")
        bars = [
            (r.find_element(By.TAG_NAME, "span").text, r.find_element(By.TAG_NAME, "small"))
            for r in rows
        ]
        assert sorted(label for label, _ in bars) == sorted(CLASSES)
        percents = [float(pct.text.rstrip("%")) for _, pct in bars]
        assert percents == sorted(percents, reverse=True)
        assert abs(sum(percents) - 100) < 0.5  # softmax over the 3 classes, rounded to 0.1
        assert bars[0][0] == predicted and f"{percents[0]:.1f}%" == score
        widths = [r.find_element(By.TAG_NAME, "div").size["width"] for r in rows]
        assert widths[0] >= widths[-1] and widths[0] > 0
        model_line = find("model").text

        # "Explain": the same file goes to /explain (the server loads TensorFlow for it: the
        # tiny mlp's integrated gradients); its heat map shows, 8x8 drawn at 224x224
        find("explain").click()
        until(ec.visibility_of_element_located((By.ID, "heatmap")), "a heat map")
        assert browser.execute_script("return arguments[0].naturalWidth", find("heatmap")) == 224
        assert find("method").text.startswith(
            f'integrated-gradients: where the model saw "{predicted}"'
        )

        # "Correct": the person confirms the prediction
        find("correct").click()
        text_is("thanks", f'Thank you: recorded "{predicted}".')
        record = _wait_for_record(server.feedback, predicted)
        assert record["predicted_label"] == predicted and record["correct"] is True
        assert record["model_name"] == server.name
        assert model_line == f"model {server.name}, version {record['model_version']}"
        assert f"{100 * record['score']:.1f}%" == score
        request_id = record["request_id"]

        # ...then corrects the click: picks another label and sends it; the last answer wins.
        other = TRUTH if predicted != TRUTH else next(c for c in CLASSES if c != predicted)
        Select(find("truth")).select_by_value(other)
        find("send").click()
        text_is("thanks", f'Thank you: recorded "{other}".')
        record = _wait_for_record(server.feedback, other)
        assert record["request_id"] == request_id and record["predicted_label"] == predicted
        assert record["correct"] is False
        assert find("error").text == ""

        errors = [
            entry
            for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
        ]
        assert errors == [], errors  # no script errors, no failed requests
    finally:
        browser.save_screenshot(str(ARTIFACTS / "page.png"))
        (ARTIFACTS / "page.log").write_text(server.log.read_text())
