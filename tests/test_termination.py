"""A run terminated from the UI, or SIGKILLed, then re-run: no answer is paid twice beyond
the requests in flight when it stopped.

Real parts end to end: a Dagster instance in a temporary DAGSTER_HOME with the default run
coordinator and run launcher, a code server subprocess for tests/termination_location.py,
run workers and step processes started by it, the LLM resource speaking HTTP to the slow
OpenAI double, and a DuckLake. Termination goes through `run_coordinator.cancel_run`, which
is what the UI's Terminate button (GraphQL `terminateRun`) calls; the kill is a SIGKILL of
the step process that holds the LLM session and of its run worker. The double's log of
answered requests is the bill.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._cli.job import _create_run
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from resources.warehouse import Warehouse
from tests import termination_location as location
from tests.openai_double import OpenAIDouble

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parent.parent
LATENCY_S = 0.2  # 160 questions, 4 at a time: about 8 s of answers
STOP_AFTER = 20  # answers received before the run is stopped
RUN_TIMEOUT_S = 90


@pytest.fixture
def launcher(tmp_path, monkeypatch) -> Iterator[tuple[dg.DagsterInstance, WorkspaceProcessContext, OpenAIDouble, Path]]:
    """(instance, workspace with its code server, the double, the pid folder)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The default coordinator launches at once; `dagster dev` queues runs for its daemon
    # (QueuedRunCoordinator), whose cancel_run of a started run is the same terminate call.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    pids = tmp_path / "pids"
    pids.mkdir()
    with OpenAIDouble(latency_s=LATENCY_S) as server:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("TERMINATION_BASE_URL", server.base_url)
        monkeypatch.setenv("TERMINATION_PID_DIR", str(pids))
        monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(tmp_path / "lake"))
        monkeypatch.setenv("PYTHONPATH", str(REPO))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            target = PythonFileTarget(
                python_file=location.__file__, attribute="defs", working_directory=str(REPO), location_name="termination"
            )
            with WorkspaceProcessContext(instance, target) as workspace:
                yield instance, workspace, server, pids


def launch(instance: dg.DagsterInstance, workspace: WorkspaceProcessContext) -> str:
    """Submit a run of the job as the UI's Launch button does (run coordinator -> launcher)."""
    request = workspace.create_request_context()
    code_location = request.get_code_location("termination")
    [repository] = code_location.get_repositories().values()
    remote_job = repository.get_full_job("slow_answers_job")
    run = _create_run(
        instance=instance, code_location=code_location, remote_repo=repository, remote_job=remote_job,
        run_config={}, tags=None, op_selection=None, run_id=None,
    )  # fmt: skip
    instance.submit_run(run.run_id, request)
    return run.run_id


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def answers_flow(instance: dg.DagsterInstance, run_id: str, server: OpenAIDouble) -> None:
    """Wait until STOP_AFTER answers arrived; fail with the run's log if it ended first."""

    def flowing() -> bool:
        if instance.get_run_by_id(run_id).is_finished:
            raise AssertionError(f"run ended before it was stopped:\n{run_log(instance, run_id)}")
        return len(server.answered) >= STOP_AFTER

    wait_for(flowing, RUN_TIMEOUT_S, f"answers to flow; run log:\n{run_log(instance, run_id)}")


def run_log(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(
        f"{entry.dagster_event.event_type_value if entry.dagster_event else ''} {entry.message[:300]}"
        for entry in instance.all_logs(run_id)
    )[-4000:]


def finished(instance: dg.DagsterInstance, run_id: str) -> DagsterRunStatus:
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, RUN_TIMEOUT_S, f"run {run_id} to finish")
    return instance.get_run_by_id(run_id).status


def rerun_and_count(instance, workspace, server: OpenAIDouble, answered_at_stop: int) -> None:
    """Re-run to success; every question answered, none twice beyond those in flight."""
    rerun = launch(instance, workspace)
    assert finished(instance, rerun) == DagsterRunStatus.SUCCESS, run_log(instance, rerun)
    answered = Counter(body["messages"][-1]["content"] for body in server.answered)
    assert set(answered) == {f"terminated question {i}" for i in range(location.N_QUESTIONS)}
    twice = [q for q, n in answered.items() if n > 1]
    print(f"answered when stopped: {answered_at_stop}; answered twice after the re-run: {len(twice)}")
    assert len(twice) <= location.IN_FLIGHT, f"{len(twice)} answers paid twice: {sorted(twice)}"
    assert answered_at_stop < location.N_QUESTIONS  # the first run really stopped mid-way
    cache = Warehouse(path=os.environ["SYNTH_ASSETS_WAREHOUSE"]).query("SELECT count(DISTINCT cache_key) AS n FROM llm_cache")
    assert cache["n"][0] == location.N_QUESTIONS


def test_a_run_terminated_from_the_ui_then_rerun_pays_only_for_requests_in_flight(launcher):
    instance, workspace, server, _ = launcher
    run_id = launch(instance, workspace)
    answers_flow(instance, run_id, server)
    assert instance.run_coordinator.cancel_run(run_id)  # GraphQL terminateRun -> run_launcher.terminate
    assert finished(instance, run_id) == DagsterRunStatus.CANCELED, run_log(instance, run_id)
    answered_at_stop = len(server.answered)
    drained = Warehouse(path=os.environ["SYNTH_ASSETS_WAREHOUSE"]).query("SELECT count(*) AS n FROM llm_cache")["n"][0]
    # every answer received before the step stopped is in the lake, with no later run needed
    assert answered_at_stop - location.IN_FLIGHT <= drained <= answered_at_stop
    rerun_and_count(instance, workspace, server, answered_at_stop)


def test_a_run_killed_with_sigkill_then_rerun_pays_only_for_requests_in_flight(launcher):
    instance, workspace, server, pids = launcher
    run_id = launch(instance, workspace)
    answers_flow(instance, run_id, server)
    [name] = os.listdir(pids)
    step_pid, run_worker_pid = (int(part) for part in name.split("-"))
    os.kill(step_pid, signal.SIGKILL)
    os.kill(run_worker_pid, signal.SIGKILL)
    time.sleep(LATENCY_S * 2)  # the requests the kill cut off reach the double
    answered_at_stop = len(server.answered)
    assert not instance.get_run_by_id(run_id).is_finished or instance.get_run_by_id(run_id).status != DagsterRunStatus.SUCCESS
    rerun_and_count(instance, workspace, server, answered_at_stop)
