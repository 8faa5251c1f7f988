"""The API's schema is the server's contract (deployment/server/contract.py): it names every
route the server answers and nothing else, schemathesis finds no server error, no schema
violation and no undocumented status over 1,000+ generated requests to a real server, and
/docs renders it in headless Chromium with nothing fetched from outside."""

import re
import subprocess
import sys

import pytest
from conftest import BIN, ROOT, tool_env
from servers import call, png, running, shared_bundle

from deployment.server import contract, serve
from deployment.server.door import ROUTES
from deployment.server.options import Config

pytestmark = pytest.mark.slow
SEED = 20261207
EXAMPLES = 50  # per operation and phase: about 2,000 requests in all


def test_the_contract_names_every_route_and_only_those() -> None:
    door = serve.create_app(Config(bundle=None))
    answered = {("post", path) for path in ROUTES}  # v2 infer: the door's own
    for route in door.app.router.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {name:model} -> {name}
        if path in ("/docs", "/docs/{asset}", "/openapi.json"):
            continue  # the schema's own pages
        answered |= {(method.lower(), path) for method in route.methods if method != "HEAD"}
    assert answered == set(contract.OPERATIONS)


def _feedback(srv) -> str:
    """A stored feedback record's request_id, so review routes reach their logic."""
    status, answer = call(srv, "POST", "/predict", png(1), {"Content-Type": "image/png"})
    assert status == 200, answer
    body = {"request_id": answer["request_id"], "true_label": answer["label"]}
    assert call(srv, "POST", "/feedback", body)[0] == 200
    return answer["request_id"]


def test_schemathesis_finds_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("schemathesis")
    bundle = shared_bundle(tmp_path_factory)
    with running(root, "--bundle", bundle, "--drain-seconds", "0") as srv:
        _feedback(srv)
        cmd = [str(BIN / "schemathesis"), "--config-file", str(ROOT / "tests/schemathesis.toml")]
        cmd += ["run", f"{srv.url}/openapi.json", "--checks", "all", "--seed", str(SEED)]
        cmd += ["--max-examples", str(EXAMPLES), "--workers", "1", "--no-color"]
        proc = subprocess.run(
            cmd, cwd=root, env=tool_env(), capture_output=True, text=True, timeout=300
        )
        log = srv.logged()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated and int(generated[1]) >= 1000 and generated[1] == generated[2], out[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_docs_render_offline_in_chromium(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Swagger UI from the server's own files: every operation of the schema is on the page,
    and the browser asked nothing of any other host."""
    from test_page import _browser_problem

    if problem := _browser_problem():
        pytest.fail(f"cannot open /docs in a browser: {problem}", pytrace=False)
    root = tmp_path_factory.mktemp("docs")
    bundle = shared_bundle(tmp_path_factory)
    with running(root, "--bundle", bundle, "--drain-seconds", "0") as srv:
        shown = subprocess.run(
            [sys.executable, "-c", DOCS, srv.url, str(root / "profile")],
            capture_output=True,
            text=True,
            timeout=120,
            env=tool_env(PYTHONPATH=str(ROOT / "tests")),
        )
    assert shown.returncode == 0, shown.stderr[-3000:]
    operations, foreign = shown.stdout.strip().splitlines()[-2:]
    assert int(operations) == len(contract.OPERATIONS)
    assert foreign == "[]", foreign


# In a child process: open /docs, wait for Swagger UI to draw every operation, print their
# count and the web requests that went to any other host (from the performance log).
DOCS = """
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_page import CHROMEDRIVER, CHROMIUM
url, profile = sys.argv[1], sys.argv[2]
options = webdriver.ChromeOptions()
options.binary_location = str(CHROMIUM)
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-proxy-server", f"--user-data-dir={profile}"):
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
try:
    driver.get(url + "/docs")
    deadline, count = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        count = len(driver.find_elements(By.CSS_SELECTOR, ".opblock"))
        if count:
            time.sleep(0.5)
            if len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) == count:
                break
        time.sleep(0.2)
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            seen = message["params"]["request"]["url"]
            if seen.startswith(("http:", "https:", "ws:", "wss:")) and not seen.startswith(url):
                hosts.add(seen)
    print(count)
    print(json.dumps(sorted(hosts)))
finally:
    driver.quit()
"""
