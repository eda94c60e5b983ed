"""The UI, proven: a real `dagster dev`, a real run of the whole graph on the embedded
defaults launched through GraphQL, and headless Chromium reading what a person would see.

Screenshots land in test-artifacts/ui/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
RUN_TIMEOUT_S = 40 * 60

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited early:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"dagster dev did not answer on {url} in {timeout_s}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path_factory.mktemp("data")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNTH_ASSETS_WAREHOUSE": str(data / "warehouse.duckdb"),
        "SYNTH_ASSETS_DATA_DIR": str(data),
    }
    # The embedded defaults: no endpoint and no key, so the bundled model is served.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    log = home / "dagster_dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/server_info", 180, proc, log)
        yield {"port": port, "home": home, "log": log, "warehouse": data / "warehouse.duckdb"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


RUNS_QUERY = """
query { runsOrError(limit: 50) { ... on Runs { results { runId status jobName } } } }
"""

ASSETS_QUERY = """
query { assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } }
"""


@pytest.fixture(scope="module")
def materialized(dagster_dev):
    """Launch the whole graph through GraphQL and wait until no run is in flight."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev["port"])
    run_id = client.submit_job_execution("main_job", repository_location_name="synth_assets")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = _graphql(dagster_dev["port"], RUNS_QUERY)["runsOrError"]["results"]
        ours = next(r for r in runs if r["runId"] == run_id)
        # Automation may start runs of its own once assets exist; wait for all of them.
        if ours["status"] in TERMINAL and all(r["status"] in TERMINAL for r in runs):
            break
        time.sleep(5)
    else:
        pytest.fail(f"runs still in flight after {RUN_TIMEOUT_S}s: {runs}")
    assert ours["status"] == "SUCCESS", (ours, dagster_dev["log"].read_text()[-4000:])
    return {**dagster_dev, "run_id": run_id}


def test_every_asset_materialized_and_checked(materialized):
    nodes = _graphql(materialized["port"], ASSETS_QUERY)["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    for key in ("raw_stack_plus", "annotated_sample", "quality_classifier", "filtered_textbook",
                "synthetic_textbook", "code_exercises", "decontaminated_exercises",
                "cost_report", "training_data_release"):
        assert key in keys, f"{key} is not in the graph"
        assert keys[key]["assetMaterializations"], f"{key} was not materialized"
    statuses = [
        check["executionForLatestMaterialization"]["status"]
        for node in nodes
        for check in (node["assetChecksOrError"] or {}).get("checks", [])
        if check["executionForLatestMaterialization"]
    ]
    assert statuses, "no asset check was evaluated"
    assert all(s in {"SUCCEEDED", "FAILED"} for s in statuses), statuses


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _dismiss_welcome_dialog(driver) -> None:
    """A fresh instance greets the first visit with a "Join the Dagster community" dialog."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        if button.is_displayed():
            button.click()


def _page_text_when(driver, url: str, expected: list[str], screenshot: str, timeout_s: float = 60) -> str:
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        _dismiss_welcome_dialog(driver)
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(word in text for word in expected):
            break
        time.sleep(1)
    driver.save_screenshot(str(ARTIFACTS / screenshot))
    missing = [word for word in expected if word not in text]
    assert not missing, f"{url} does not show {missing}; screenshot {ARTIFACTS / screenshot}"
    return text


def test_asset_graph_page_shows_the_pipeline(materialized, browser):
    base = f"http://127.0.0.1:{materialized['port']}"
    # The global lineage page draws one box per group until a group is expanded.
    _page_text_when(browser, f"{base}/asset-groups",
                    ["ingest", "filtering", "synthesis", "decontamination", "reports", "release"],
                    "asset_graph.png")
    _page_text_when(browser, f"{base}/assets", ["decontaminated_exercises", "cost_report"],
                    "asset_catalog.png")


def test_asset_page_shows_checks(materialized, browser):
    base = f"http://127.0.0.1:{materialized['port']}"
    _page_text_when(browser, f"{base}/assets/raw_stack_plus?view=checks", ["raw_stack_plus"],
                    "raw_stack_plus_checks.png")


def test_cost_report_page_shows_cost_figures(materialized, browser):
    import duckdb

    with duckdb.connect(str(materialized["warehouse"]), read_only=True) as conn:
        calls = conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
    assert calls > 0
    base = f"http://127.0.0.1:{materialized['port']}"
    # The report's summary table, rendered from the asset's metadata, shows the ledger's total.
    _page_text_when(browser, f"{base}/assets/cost_report", ["cost_report", f"calls {calls:,}"], "cost_report.png")
