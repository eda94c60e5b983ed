"""The UI, proven: a real `dagster dev` whose run workers call the OpenAI test double over
HTTP, the whole graph launched through GraphQL on a small corpus of real standard-library
files, and headless Chromium reading what a person would see: the groups and assets on the
lineage page, one materialization's row count and `llm/cost_usd`, a passed check, and the
cost report's total equal to the `llm_calls` ledger's.

The double answers each of the pipeline's prompts the way a capable model would (a grade
that depends on the file, exercises whose solutions pass their tests, distinct textbook
sections), so every asset fills with rows and every check has something real to check.
The bundled local model is exercised end to end by tests/test_end_to_end.py.

Screenshots and page texts land in test-artifacts/ui/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CLASS_STATEMENT
from tests import instruction_doubles
from tests.openai_double import OpenAIDouble, default_chat, schema_from_response_format

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
LOCATION = "synth_assets"
CORPUS_FILES = 40
# The corpus as 20 shards of about 2 files (the lasting settings file), so a backfill of
# every shard from the UI takes more than one run of SHARDS_PER_RUN partitions.
FILES_PER_SHARD = 2
CHAT_MODEL = "gpt-4o-mini"  # priced by genai-prices, so llm/cost_usd is a real figure
EMBEDDING_MODEL = "text-embedding-3-small"
API_KEY = "sk-test-secret-4f7c"
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 600
# Sensors that start runs by themselves (README "The UI"): stopped before `dagster dev`
# starts, so the launched run is the only one and nothing else competes for the 2 cores.
SENSORS = ("corpus_change_sensor", "automation_sensor")
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


# --------------------------------------------------------------------------- the LLM double's answers


def _last_user_message(body: dict) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def grade_answer(user: str) -> str:
    """annotated_sample: 4 for a file that shows a class early, else 1, so the labels
    (FineWeb-Edu threshold 3 on a remote endpoint) are two classes the classifier can learn."""
    shown = user.split("File:\n```python\n", 1)[-1]
    if CLASS_STATEMENT.search(shown):
        return json.dumps({"rationale": "Defines a class a beginner can follow.", "educational_score": 4})
    return json.dumps({"rationale": "Module-level helpers with little explanation.", "educational_score": 1})


# (parameters, docstring, body, tests): correct solutions, so the sandbox passes them.
EXERCISES = (
    (["values"], "Return the running totals of the {topic} values.",
     "totals = []\nrunning = 0\nfor value in values:\n    running += value\n    totals.append(running)\nreturn totals",
     ["assert {name}([1, 2, 3]) == [1, 3, 6]", "assert {name}([]) == []"]),
    (["pairs"], "Group the {topic} pairs by their first element.",
     "groups = {}\nfor key, value in pairs:\n    groups.setdefault(key, []).append(value)\nreturn groups",
     ["assert {name}([('a', 1), ('b', 2), ('a', 3)]) == {'a': [1, 3], 'b': [2]}", "assert {name}([]) == {}"]),
    (["grid"], "Return the {topic} grid turned a quarter to the right.",
     "return [list(row) for row in zip(*grid[::-1])]",
     ["assert {name}([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]", "assert {name}([]) == []"]),
    (["seconds"], "Format a {topic} duration given in seconds as H:MM:SS.",
     "hours, rest = divmod(seconds, 3600)\nminutes, secs = divmod(rest, 60)\nreturn f'{hours}:{minutes:02d}:{secs:02d}'",
     ["assert {name}(3725) == '1:02:05'", "assert {name}(0) == '0:00:00'"]),
    (["items", "size"], "Cut the {topic} items into chunks of the given size.",
     "return [items[i:i + size] for i in range(0, len(items), size)]",
     ["assert {name}([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]", "assert {name}([], 3) == []"]),
)


def exercise_answer(user: str) -> str:
    """code_exercises: one of a few correct solutions, for the planned function name."""
    name = re.search(r"Write a Python function named (\w+)\.", user).group(1)
    topic_match = re.search(r"Topic: (.+?) \(", user)
    topic = topic_match.group(1) if topic_match else "given"
    parameters, docstring, body, tests = EXERCISES[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(EXERCISES)]
    return json.dumps(
        {
            "parameters": parameters,
            "docstring": docstring.replace("{topic}", topic),
            "body": body,
            "tests": [test.replace("{name}", name) for test in tests],
        }
    )


VOCABULARY = (
    "value list loop index number string word letter table record queue stack tree node edge path graph "
    "search sort order count total sum average minimum maximum key map set pair tuple step rule case test "
    "input output result error check branch condition function argument parameter return call module class "
    "object method field state change update reading writing file line column row grid cell window range "
    "slice copy merge split join filter group batch stream buffer cache memory time clock date event signal "
    "message student teacher lesson example problem idea pattern reason answer question notebook chapter "
    "simple careful quick clear small large empty full first last next previous inner outer early late"
).split()


def textbook_answer(user: str) -> str:
    """synthetic_textbook: an overview, an example in words and a parseable code block,
    different for every prompt (seeded by it), with the required words."""
    rng = random.Random(hashlib.sha256(user.encode()).digest())
    subject = re.search(r"textbook section about (.+?)\.\n", user)
    required = re.search(r"Use the words (.+?) somewhere", user)
    words = required.group(1).split(" and ") if required else []

    def sentence(extra: list[str]) -> str:
        chosen = rng.choices(VOCABULARY, k=rng.randint(9, 14)) + extra
        rng.shuffle(chosen)
        return " ".join(chosen).capitalize() + "."

    overview = " ".join(sentence(words if i == 0 else []) for i in range(4))
    example = " ".join(sentence([]) for _ in range(3))
    function = "_".join(rng.sample(VOCABULARY, 2))
    factor = rng.randint(2, 9)
    code = (
        f"def {function}(values):\n"
        f'    """Return every value times {factor}."""\n'
        f"    return [value * {factor} for value in values]\n\n\n"
        f"print({function}([1, 2, 3]))\n"
    )
    title = subject.group(1) if subject else "A lesson"
    return f"# {title}\n\n{overview}\n\nAn example: {example}\n\n```python\n{code}```\n"


ROLES = ("teacher", "nurse", "librarian", "surveyor", "baker", "pilot", "archivist", "chemist", "farmer", "editor",
         "carpenter", "ranger", "translator", "cartographer", "brewer", "referee")


def persona_answer(user: str) -> str:
    """personas: a distinct one-sentence persona per prompt (seeded by it)."""
    rng = random.Random(hashlib.sha256(user.encode()).digest())
    role = rng.choice(ROLES)
    return json.dumps({"persona": f"a {role} who uses Python to {' '.join(rng.sample(VOCABULARY, 6))}"})


def inputs_answer(user: str) -> str:
    """case2code: calls of the shown function with ints, strings and lists, so that some
    of them run whatever its parameters expect."""
    import ast

    program = re.search(r"```python\n(.*?)```", user, re.DOTALL)
    name = re.search(r"inputs to call (\w+) with", user)
    count = re.search(r"Write (\d+) different inputs", user)
    arity = 1
    if program and name:
        try:
            tree = ast.parse(program.group(1))
        except SyntaxError:
            tree = None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name.group(1):
                arity = len(node.args.args) - len(node.args.defaults)
    literals = ("{i}", "'w{i}'", "[{i}, {j}]", "{i}.5", "'{j}x{i}'")
    calls = [
        ", ".join(literals[(i + a) % len(literals)].format(i=i, j=i + a + 1) for a in range(max(arity, 0)))
        for i in range(int(count.group(1)) if count else 3)
    ]
    return json.dumps({"inputs": calls})


def pipeline_chat(body: dict) -> str:
    """The double's chat responder for every prompt the pipeline sends; a prompt it does
    not know gets the double's default (a minimal schema-valid answer)."""
    user = _last_user_message(body)
    properties = (schema_from_response_format(body.get("response_format")) or {}).get("properties", {})
    if "educational_score" in properties:
        return grade_answer(user)
    if "tests" in properties and "Write a Python function named" in user:
        return exercise_answer(user)
    if "persona" in properties:
        return persona_answer(user)
    if "inputs" in properties:
        return inputs_answer(user)
    if "textbook section about" in user and not properties:
        return textbook_answer(user)
    return instruction_answer(body) or default_chat(body)


def instruction_answer(body: dict) -> str | None:
    """The instruction methods' prompts, answered by their tests' responders
    (tests/instruction_doubles.py); None for a prompt none of them knows."""
    props, text = instruction_doubles.schema_properties(body), instruction_doubles.user_text(body)
    if props == ["rationale", "score"]:
        responder = instruction_doubles.judge_responder
    elif props == ["instruction", "input", "output"] and "The task is about" in text:
        responder = instruction_doubles.alpaca_responder
    elif props in (["instruction"], ["is_classification"], ["output", "input"], ["input", "output"]):
        responder = instruction_doubles.self_instruct_responder
    elif props == ["questions"] or "based on the content above:" in text:
        responder = instruction_doubles.self_qa_responder
    elif props in (["prompt"], ["judgement"]) or "Given Prompt#" in text:
        responder = instruction_doubles.evol_responder
    else:
        return None
    try:
        return responder(body)
    except (AssertionError, AttributeError, IndexError, KeyError):  # a prompt shape the test double does not parse
        return None


# --------------------------------------------------------------------------- dagster dev


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


LOCATION_QUERY = """
query { workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _wait_for_code_location(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited early:\n{log.read_text()[-4000:]}")
        try:
            entries = _graphql(port, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
        except OSError:
            entries = []
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            assert loaded.get("__typename") != "PythonError", loaded.get("message")
            return
        time.sleep(1)
    raise AssertionError(f"code location {LOCATION} not loaded in {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _stop_sensors(env: dict, home: Path) -> None:
    """`dagster sensor stop` for each self-starting sensor (in parallel), before the daemon
    runs: the stopped state is stored in the instance, which `dagster dev` then honours."""
    from dagster import DagsterInstance

    # Create the instance's storage first, so the parallel commands do not race to create it.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dagster", "sensor", "stop", name, "-w", str(ROOT / "workspace.yaml")],
            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in SENSORS
    ]
    for name, proc in zip(SENSORS, procs):
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0 and f"Stopped sensor {name}" in output, output


def _start_dagster_dev(env: dict, data: Path, log: Path, port: int) -> subprocess.Popen:
    """`dagster dev` in its own session (its process group is killed at the end). The
    working directory is the throwaway data folder, so any relative `data/...` path the
    code falls back to lands there, not in the repository."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=data, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _stop_dagster_dev(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llm_double():
    with OpenAIDouble(chat=pipeline_chat) as server:
        yield server


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory, stdlib_corpus, llm_double):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path_factory.mktemp("data")
    settings = home / "synth_assets.toml"
    settings.write_text(f"[raw_stack_plus]\nfiles_per_shard = {FILES_PER_SHARD}\n")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNTH_ASSETS_SETTINGS": str(settings),
        "SYNTH_ASSETS_WAREHOUSE": str(data / "lake"),
        "SYNTH_ASSETS_CORPUS_PATHS": str(stdlib_corpus(CORPUS_FILES)),
        # The run workers are subprocesses of `dagster dev`: they reach the double in this
        # process over HTTP on 127.0.0.1, as they would reach OpenAI.
        "OPENAI_BASE_URL": llm_double.base_url,
        "OPENAI_API_KEY": API_KEY,
        "SYNTH_ASSETS_CHAT_MODEL": CHAT_MODEL,
        "SYNTH_ASSETS_EMBEDDING_MODEL": EMBEDDING_MODEL,
    }
    # Nothing from the shell may point the run at another lake or model server.
    for name in ("SYNTH_ASSETS_CATALOG", "SYNTH_ASSETS_DATA_PATH", "SYNTH_ASSETS_LOCAL_MODEL_URL"):
        env.pop(name, None)
    _stop_sensors(env, home)
    log = home / "dagster_dev.log"
    proc = _start_dagster_dev(env, data, log, port)
    try:
        _wait_for_code_location(port, proc, log)
        yield {"port": port, "home": home, "log": log, "data": data, "warehouse": data / "lake"}
    finally:
        _stop_dagster_dev(proc)


RUNS_QUERY = """
query { runsOrError(limit: 20) { ... on Runs { results { runId status jobName } } } }
"""

ASSETS_QUERY = """
query { assetNodes { assetKey { path } groupName
  assetMaterializations(limit: 1) { runId partition metadataEntries { label
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } }
  assetChecksOrError { ... on AssetChecks { checks { name blocking
    executionForLatestMaterialization { status runId } } } } } }
"""


def run_config(data: Path) -> dict:
    """The launchpad settings: artefacts into the throwaway data folder, and the whole run
    in one process (each step in its own process would re-import the code ~40 times)."""
    return {
        "execution": {"config": {"in_process": {}}},
        "ops": {
            "quality_classifier": {"config": {"artefact_dir": str(data / "models" / "quality_classifier")}},
            "cost_report": {"config": {"report_path": str(data / "reports" / "cost_report.html")}},
            "training_data_release": {"config": {"release_dir": str(data / "release")}},
        },
    }


FAILURES_QUERY = """
query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events { __typename
  ... on ExecutionStepFailureEvent { stepKey error { message } } } } } }
"""


def _step_failures(port: int, run_id: str) -> str:
    """Each failed step and its error, as the run page shows them."""
    events = _graphql(port, FAILURES_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    return "\n".join(
        f"{e['stepKey']}: {e['error']['message']}" for e in events if e["__typename"] == "ExecutionStepFailureEvent"
    )


@pytest.fixture(scope="module")
def materialized(dagster_dev):
    """Launch main_job (the whole graph) through GraphQL and wait for it to finish."""
    from dagster_graphql import DagsterGraphQLClient

    port = dagster_dev["port"]
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "main_job", repository_location_name=LOCATION, run_config=run_config(dagster_dev["data"])
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = _graphql(port, RUNS_QUERY)["runsOrError"]["results"]
        ours = next(r for r in runs if r["runId"] == run_id)
        if ours["status"] in TERMINAL:
            break
        time.sleep(2)
    else:
        pytest.fail(f"main_job still {ours['status']} after {RUN_TIMEOUT_S}s")
    assert ours["status"] == "SUCCESS", _step_failures(port, run_id) or dagster_dev["log"].read_text()[-4000:]
    assert _step_failures(port, run_id) == ""
    # The sensors were stopped: nothing but the launched run happened.
    assert [r["runId"] for r in runs] == [run_id], runs
    return {**dagster_dev, "run_id": run_id}


@pytest.fixture(scope="module")
def asset_nodes(materialized) -> dict[str, dict]:
    nodes = _graphql(materialized["port"], ASSETS_QUERY)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def _query(materialized: dict, sql: str, params: list | None = None) -> tuple:
    """The first row of `sql` on the run's warehouse, attached read-only."""
    from resources.warehouse import Warehouse

    return Warehouse(path=str(materialized["warehouse"])).read_only().query(sql, params).row(0)


# --------------------------------------------------------------------------- the run, through GraphQL


def test_every_asset_materialized_by_the_run_and_every_check_passed(materialized, asset_nodes):
    import dagster as dg

    from synth_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert set(asset_nodes) == {key.to_user_string() for key in graph.get_all_asset_keys()}
    # main_job is every asset but the per-shard partitions (corpus_shards, corpus_scores),
    # which raw_stack_plus and filtered_textbook fill themselves as runless materializations
    job_keys = defs.resolve_job_def("main_job").asset_layer.selected_asset_keys
    assert {key.to_user_string() for key in graph.get_all_asset_keys() - job_keys} == {"corpus_shards", "corpus_scores"}
    for key, node in asset_nodes.items():
        [latest] = node["assetMaterializations"]
        if dg.AssetKey(key) in job_keys:
            assert latest["runId"] == materialized["run_id"], f"{key} was not materialized by the run"
        else:
            assert latest["partition"], f"{key}: no shard reported"
    checks = {
        check["name"]: check
        for key, node in asset_nodes.items()
        if dg.AssetKey(key) in job_keys
        for check in (node["assetChecksOrError"] or {}).get("checks", [])
    }
    assert len(checks) == len([key for key in graph.asset_check_keys if key.asset_key in job_keys])
    not_passed = {
        name: (check["executionForLatestMaterialization"] or {}).get("status")
        for name, check in checks.items()
        if (check["executionForLatestMaterialization"] or {}).get("status") != "SUCCEEDED"
    }
    blocking = {name for name, check in checks.items() if check["blocking"]}
    assert blocking and not blocking & set(not_passed), not_passed
    # A capable model's answers meet the quality floors too (the bundled 135M model does not).
    assert not not_passed, not_passed


def test_every_table_has_rows_and_the_ledger_priced_every_call(materialized, asset_nodes):
    for key, node in asset_nodes.items():
        metadata = {e["label"]: e for e in node["assetMaterializations"][0]["metadataEntries"]}
        if "dagster/row_count" in metadata:
            assert metadata["dagster/row_count"]["intValue"] > 0, f"{key} wrote an empty table"
    calls, unpriced, failed, cost = _query(
        materialized,
        "SELECT count(*), count(*) FILTER (cost_usd IS NULL), count(*) FILTER (status <> 'ok'), sum(cost_usd) "
        "FROM llm_calls WHERE run_id = ?",
        [materialized["run_id"]],
    )
    assert calls > 0 and unpriced == 0 and failed == 0 and cost > 0


def test_the_api_key_is_written_nowhere(materialized):
    """Not in the run's event log, compute logs, instance databases, the lake or any artefact."""
    files = [path for root in (materialized["home"], materialized["data"]) for path in root.rglob("*") if path.is_file()]
    # The scan reads what the run wrote: the model name is in the event log, for one.
    assert any(CHAT_MODEL.encode() in path.read_bytes() for path in files)
    assert not [path for path in files if API_KEY.encode() in path.read_bytes()]


# --------------------------------------------------------------------------- what a person sees


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
                 "--disable-dev-shm-usage", "--window-size=2400,1400"):
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


def _page_text_when(driver, url: str, expected: list[str], name: str, timeout_s: float = 60) -> str:
    """Open `url` and wait until the page's visible text contains every `expected` string;
    save a screenshot and the text as `name`.png/.txt either way."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        _dismiss_welcome_dialog(driver)
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(word in text for word in expected):
            break
        time.sleep(0.5)
    _dismiss_welcome_dialog(driver)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.txt").write_text(text)
    missing = [word for word in expected if word not in text]
    assert not missing, f"{url} does not show {missing}; see {ARTIFACTS / name}.png"
    return text


def test_asset_graph_page_shows_the_groups_and_their_assets(materialized, asset_nodes, browser):
    base = f"http://127.0.0.1:{materialized['port']}"
    groups: dict[str, list[str]] = {}
    for key, node in asset_nodes.items():
        groups.setdefault(node["groupName"], []).append(key)
    # The global lineage page draws one box per group until a group is expanded; once the
    # statuses are fetched, each box shows its number of assets.
    _page_text_when(browser, f"{base}/asset-groups",
                    [f"\n{group}\n{len(keys)}\n" for group, keys in sorted(groups.items())], "asset_graph")
    # Each group's page lists its assets (the lineage tab draws only what fits the viewport).
    for group, keys in sorted(groups.items()):
        _page_text_when(browser, f"{base}/locations/{LOCATION}/asset-groups/{group}/list", sorted(keys),
                        f"asset_group_{group}")


def _metadata_value(text: str, label: str) -> str:
    """The value of a metadata row on an asset page: label, timestamp, value lines."""
    match = re.search(rf"^{re.escape(label)}\n[^\n]*\n([^\n]+)$", text, re.MULTILINE)
    assert match, f"{label} is not on the page:\n{text}"
    return match.group(1)


def test_asset_page_shows_row_count_and_llm_cost(materialized, browser):
    run_id = materialized["run_id"]
    (rows,) = _query(materialized, "SELECT count(*) FROM annotated_sample")
    (cost,) = _query(
        materialized, "SELECT sum(cost_usd) FROM llm_calls WHERE run_id = ? AND asset_key = 'annotated_sample'", [run_id]
    )
    assert rows > 0 and cost > 0
    base = f"http://127.0.0.1:{materialized['port']}"
    text = _page_text_when(browser, f"{base}/assets/annotated_sample", ["Row count", "llm/cost_usd"],
                           "annotated_sample")
    shown_rows = re.search(r"^Row count\n([\d,]+)$", text, re.MULTILINE)
    assert shown_rows and int(shown_rows.group(1).replace(",", "")) == rows, text
    assert float(_metadata_value(text, "llm/cost_usd")) == pytest.approx(cost, rel=1e-6)


def test_asset_page_shows_a_passed_check(materialized, browser):
    base = f"http://127.0.0.1:{materialized['port']}"
    text = _page_text_when(browser, f"{base}/assets/raw_stack_plus?view=checks",
                           ["raw_stack_plus_integrity"], "raw_stack_plus_checks")
    assert re.search(r"^raw_stack_plus_integrity\nSucceeded$", text, re.MULTILINE), text


def test_cost_report_page_total_equals_the_ledger(materialized, browser):
    calls, cost = _query(materialized, "SELECT count(*), sum(cost_usd) FROM llm_calls")
    assert calls > 0 and cost > 0
    base = f"http://127.0.0.1:{materialized['port']}"
    # The report's summary table, rendered from the asset's metadata (cost_report.totals_table),
    # and the total as a number.
    text = _page_text_when(browser, f"{base}/assets/cost_report",
                           [f"calls {calls:,}", f"spend (cost_usd) ${cost:,.6f}", "total_cost_usd"], "cost_report")
    assert float(_metadata_value(text, "total_cost_usd")) == pytest.approx(cost, rel=1e-9)
    assert int(_metadata_value(text, "total_calls")) == calls


# --------------------------------------------------------------------------- nothing changed, nothing paid
# Last in the module: it launches a second run, which the tests above must not see.


def test_rematerializing_the_whole_graph_with_nothing_changed_sends_no_request(materialized, llm_double):
    """main_job launched again from the UI's GraphQL with the same corpus and settings: every
    plan depends only on its config and declared inputs, so every LLM call of every asset
    is answered from the cache, the double receives nothing, and the run costs $0."""
    from dagster_graphql import DagsterGraphQLClient

    port = materialized["port"]
    asked_before = len(llm_double.requests)
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "main_job", repository_location_name=LOCATION, run_config=run_config(materialized["data"])
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        ours = next(r for r in _graphql(port, RUNS_QUERY)["runsOrError"]["results"] if r["runId"] == run_id)
        if ours["status"] in TERMINAL:
            break
        time.sleep(2)
    assert ours["status"] == "SUCCESS", _step_failures(port, run_id)
    assert len(llm_double.requests) == asked_before, [
        _last_user_message(body)[:120] for body in llm_double.requests[asked_before:][:5]
    ]
    calls, hits, cost = _query(
        materialized,
        "SELECT count(*), count(*) FILTER (WHERE cache_hit), coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ?",
        [run_id],
    )
    assert calls > 0 and hits == calls and cost == 0


# --------------------------------------------------------------------------- a backfill of every shard
# After the re-run above: it launches the backfill's runs.

SHARD_KEYS_QUERY = """
query { assetNodeOrError(assetKey: {path: ["corpus_shards"]}) { ... on AssetNode { partitionKeys } } }
"""

LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }
"""

BACKFILL_QUERY = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
  status numPartitions runs { runId status tags { key value } } } } }
"""


def test_a_backfill_of_every_shard_launched_from_the_ui_runs_them_sixteen_per_run(materialized):
    """What the UI's "Materialize all partitions" sends for corpus_shards: the daemon splits
    the backfill by the asset's policy (BackfillPolicy.multi_run, SHARDS_PER_RUN per run),
    each run ingests its range of shards, and every shard's manifest row is rewritten by
    one of the backfill's runs."""
    from synth_assets.ingest.corpus_shards import SHARDS_PER_RUN

    port = materialized["port"]
    keys = _graphql(port, SHARD_KEYS_QUERY)["assetNodeOrError"]["partitionKeys"]
    assert len(keys) == CORPUS_FILES // FILES_PER_SHARD > SHARDS_PER_RUN  # registered by main_job's raw_stack_plus
    launched = _graphql(port, LAUNCH_BACKFILL, {"params": {
        "assetSelection": [{"path": ["corpus_shards"]}], "allPartitions": True, "title": "every shard",
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        backfill = _graphql(port, BACKFILL_QUERY, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        time.sleep(2)
    runs = backfill["runs"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (backfill, [_step_failures(port, r["runId"]) for r in runs])
    assert len(runs) == -(-len(keys) // SHARDS_PER_RUN) and all(r["status"] == "SUCCESS" for r in runs), runs
    ranges = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        start, end = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
        ranges.append(keys[keys.index(start): keys.index(end) + 1])
    assert sorted(key for part in ranges for key in part) == sorted(keys)
    assert max(len(part) for part in ranges) == SHARDS_PER_RUN
    from resources.warehouse import Warehouse

    manifest = Warehouse(path=str(materialized["warehouse"])).read_only().query(
        "SELECT shard, run_id FROM corpus_shard_manifest"
    )
    assert sorted(manifest["shard"]) == sorted(keys)
    run_of = {key: run["runId"] for run, part in zip(runs, ranges) for key in part}
    assert dict(zip(manifest["shard"], manifest["run_id"])) == run_of
