"""LLM grading and generation as batches of prompts on a Ray cluster
(`resources/llm/batches.py`). Through annotated_sample: the same table as in-process,
every distinct request paid once across runs that share a lake, the ledger rows of worker
calls stamped with the run and asset, the cost metadata counting the workers' calls, and a
budget that stops workers failing the step as in-process. Through synthetic_textbook's
iterative mode (summaries, then sentences, then sections, then re-asked sections: four
rounds of batches in one step): the same tables as in-process, each request paid once,
and one budget over all the rounds."""

from __future__ import annotations

import json
import os
from collections import Counter

import dagster as dg
import polars as pl
import pytest

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource
from resources.llm.batches import on_cluster, plan_batches
from resources.warehouse import Warehouse
from synth_assets.filtering.annotated_sample import AnnotateConfig, annotated_sample
from synth_assets.settings import lasting_compute
from synth_assets.synthesis.synthetic_textbook import SyntheticTextbookConfig, synthetic_textbook
from synth_assets.synthesis.textbook_prompts import TextbookPromptsConfig, textbook_prompts
from tests.openai_double import TEST_KEY_REF, OpenAIDouble  # sets the key variable before Ray starts its workers
from tests.test_annotate import GARBAGE_MARKER, JUNK, TUTORIAL, grading_responder
from tests.test_classify import raw_stack_plus_rows
from tests.test_textbook import iterative_responder

pytestmark = pytest.mark.timeout(300)

N_DOCS = 12
BATCH_SIZE = 4  # three Ray tasks


def corpus() -> pl.DataFrame:
    texts = [TUTORIAL.format(i=i) for i in range(6)] + [JUNK.format(i=i) for i in range(5)]
    texts.append(f"# {GARBAGE_MARKER}\nz=1\n")  # a malformed answer, retried once as a new sample
    return raw_stack_plus_rows(texts)


def grade(warehouse: Warehouse, llm: LLMResource, monkeypatch, on_ray: bool, **config) -> dg.ExecuteInProcessResult:
    if on_ray:
        monkeypatch.setenv("RAY_ADDRESS", "local")  # the module's cluster is already running: joined, not started
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = dict(min_docs=N_DOCS, max_docs=N_DOCS, label_threshold=3, batch_size=BATCH_SIZE) | config
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [annotated_sample],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"annotated_sample": AnnotateConfig(**settings)}),
            raise_on_error=False,
            instance=instance,
        )
        result.log_messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result


def batches_ran_in(result: dg.ExecuteInProcessResult) -> tuple[int, set[int]]:
    """(batches, worker pids) from the driver's log line."""
    (line,) = [m for m in result.log_messages if "worker processes:" in m]
    batches = int(line.split("LLM: ")[1].split(" batches")[0])
    return batches, {int(worker.rsplit(":", 1)[1]) for worker in line.split("worker processes: ")[1].split(", ")}


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.asset_materializations_for_node("annotated_sample")
    return {key: value.value for key, value in event.metadata.items()}


def ledger(warehouse: Warehouse, run_id: str) -> pl.DataFrame:
    return warehouse.read_only().query(
        "SELECT run_id, asset_key, partition, status, cache_hit, cost_usd, prompt_tokens, completion_tokens "
        "FROM llm_calls WHERE run_id = ?",
        [run_id],
    )


def request_identity(body: dict) -> str:
    """What makes two chat requests the same call: the messages and the sample's seed."""
    return json.dumps([body["messages"], body.get("seed"), body.get("max_tokens")], sort_keys=True)


LLM_BLOCK = ("llm/calls", "llm/prompt_tokens", "llm/completion_tokens", "llm/cost_usd", "llm/failed", "llm/cost_known")


def test_grading_on_ray_equals_in_process_and_pays_each_request_once(tmp_path, local_cluster, monkeypatch):
    shared = Warehouse(path=str(tmp_path / "shared"))
    fresh = Warehouse(path=str(tmp_path / "fresh"))
    for warehouse in (shared, fresh):
        warehouse.write_table("raw_stack_plus", corpus())
    with OpenAIDouble(chat=grading_responder) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini")
        in_process = grade(shared, llm, monkeypatch, on_ray=False)
        paid_in_process = list(server.answered)
        on_ray_cached = grade(shared, llm, monkeypatch, on_ray=True)  # the same lake: every answer is cached
        answered_across_both = list(server.answered)
        on_ray_paid = grade(fresh, llm, monkeypatch, on_ray=True)  # a new lake: the workers pay
        paid_on_ray = server.answered[len(answered_across_both) :]
    for result in (in_process, on_ray_cached, on_ray_paid):
        assert result.success
    meta = {"in-process": metadata(in_process), "cached": metadata(on_ray_cached), "paid": metadata(on_ray_paid)}
    assert meta["in-process"]["compute"] == "in-process"
    assert meta["cached"]["compute"] == "ray" and meta["paid"]["compute"] == "ray"
    assert not any("worker processes:" in m for m in in_process.log_messages)
    for result in (on_ray_cached, on_ray_paid):  # three tasks, in Ray's worker processes
        batches, pids = batches_ran_in(result)
        assert batches == N_DOCS // BATCH_SIZE and pids and os.getpid() not in pids

    # the same table, cell for cell, whether graded in-process or as three Ray tasks
    tables = {
        name: warehouse.read_only().query("SELECT * FROM annotated_sample ORDER BY doc_id")
        for name, warehouse in (("in-process", shared), ("fresh", fresh))
    }
    assert tables["in-process"].height == N_DOCS and (tables["in-process"]["status"] == "error").sum() == 1
    assert tables["fresh"].equals(tables["in-process"])
    # (the shared lake's table was rewritten by the cached Ray run: still equal to the in-process grades)

    # every distinct request was answered once across the two runs on the shared lake
    asked = Counter(request_identity(body) for body in answered_across_both)
    assert len(asked) == N_DOCS + 1 and max(asked.values()) == 1  # 12 gradings + the malformed one's retry
    assert len(answered_across_both) == len(paid_in_process)  # the Ray run asked nothing
    # and the Ray run on a new lake asked each of them once, from its workers
    assert Counter(request_identity(body) for body in paid_on_ray) == asked

    # the ledger rows written on the workers carry the run and the asset
    cached_rows = ledger(shared, on_ray_cached.run_id)
    paid_rows = ledger(fresh, on_ray_paid.run_id)
    for rows in (cached_rows, paid_rows):
        assert rows.height == N_DOCS + 1
        assert set(rows["run_id"]) == {rows["run_id"][0]} and set(rows["asset_key"]) == {"annotated_sample"}
        assert rows["partition"].null_count() == rows.height
    assert cached_rows["cache_hit"].all() and not paid_rows["cache_hit"].any()

    # the cost block counts the workers' calls: the paid Ray run reports what the
    # in-process run reported, and what its ledger rows add up to
    for key in LLM_BLOCK:
        assert meta["paid"][key] == meta["in-process"][key], key
    assert meta["paid"]["llm/cost_usd"] > 0 and meta["paid"]["llm/cache_hits"] == 0
    assert meta["paid"]["llm/cost_usd"] == pytest.approx(paid_rows["cost_usd"].sum(), abs=1e-8)
    assert meta["cached"]["llm/calls"] == meta["cached"]["llm/cache_hits"] == N_DOCS + 1
    assert meta["cached"]["llm/cost_usd"] == 0 and meta["cached"]["llm/saved_usd"] > 0


def test_a_budget_reached_on_the_workers_fails_the_step_with_the_whole_materializations_figures(
    tmp_path, local_cluster, monkeypatch
):
    warehouse = Warehouse(path=str(tmp_path / "lake"))
    warehouse.write_table("raw_stack_plus", corpus())
    # a grading reserves ~$0.0001 (its prompt plus 80 completion tokens at gpt-4o-mini's
    # prices): $0.0004 across the cluster admits a few of the 12, wherever they run
    budget = 0.0004
    with OpenAIDouble(chat=grading_responder) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_cost_usd=budget)
        result = grade(warehouse, llm, monkeypatch, on_ray=True)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "LLM budget reached" in str(failure.error)
    rows = ledger(warehouse, result.run_id)
    paid = rows.filter(pl.col("status") == "ok")
    stopped = (rows["status"] == "budget_exceeded").sum()
    assert 1 <= paid.height < N_DOCS and stopped >= 1
    assert paid["cost_usd"].sum() <= budget  # one budget for the materialization, not one per task
    failure_metadata = {key: value.value for key, value in failure.user_failure_data.metadata.items()}
    assert failure_metadata["llm/budget_exceeded"] == stopped
    assert failure_metadata["llm/calls"] == rows.height


def test_equal_requests_share_a_batch_and_batches_keep_request_order():
    def ask(text: str, row_id: str) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": text}], row_id=row_id)

    requests = [ask("a", "1"), ask("b", "2"), ask("a", "3"), ask("c", "4"), ask("d", "5"), ask("b", "6"), ask("e", "7")]
    plan = plan_batches(requests, batch_size=2)
    assert sorted(p for batch in plan for p in batch) == list(range(len(requests)))
    assert all(batch == sorted(batch) for batch in plan)
    batch_of = {p: i for i, batch in enumerate(plan) for p in batch}
    assert batch_of[0] == batch_of[2] and batch_of[1] == batch_of[5]  # "a" twice, "b" twice: one batch each
    assert plan == [[0, 2], [1, 5], [3, 4], [6]]
    assert plan_batches(requests, batch_size=100) == [list(range(len(requests)))]


N_PLANS = 8


def write_textbook(warehouse: Warehouse, llm: LLMResource, monkeypatch, on_ray: bool) -> dg.ExecuteInProcessResult:
    """textbook_prompts, then synthetic_textbook in iterative mode with a second sample for
    sections without code; only synthetic_textbook calls the LLM."""
    if on_ray:
        monkeypatch.setenv("RAY_ADDRESS", "local")
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [textbook_prompts, synthetic_textbook],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({
                "textbook_prompts": TextbookPromptsConfig(n_prompts=N_PLANS, seed=4),
                "synthetic_textbook": SyntheticTextbookConfig(max_tokens=120, generation_mode="iterative", max_samples=2),
            }),
            raise_on_error=False,
            instance=instance,
        )
        result.log_messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result


def textbook_llm(server: OpenAIDouble, **settings) -> LLMResource:
    settings = {"cluster_batch_size": 3} | settings
    return LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                       embedding_model="text-embedding-3-small", max_retries=0, **settings)


def test_textbook_generation_on_ray_equals_in_process_round_by_round(tmp_path, local_cluster, monkeypatch):
    lakes = {"in-process": Warehouse(path=str(tmp_path / "in_process")), "ray": Warehouse(path=str(tmp_path / "ray"))}
    with OpenAIDouble(chat=iterative_responder) as server:
        llm = textbook_llm(server)
        in_process = write_textbook(lakes["in-process"], llm, monkeypatch, on_ray=False)
        paid_in_process = list(server.answered)
        on_ray = write_textbook(lakes["ray"], llm, monkeypatch, on_ray=True)  # a new lake: the workers pay
        paid_on_ray = server.answered[len(paid_in_process):]
    assert in_process.success and on_ray.success
    (event,) = on_ray.asset_materializations_for_node("synthetic_textbook")
    meta = {key: value.value for key, value in event.metadata.items()}
    (event,) = in_process.asset_materializations_for_node("synthetic_textbook")
    meta_in_process = {key: value.value for key, value in event.metadata.items()}
    assert meta["compute"] == "ray" and meta_in_process["compute"] == "in-process"

    # summaries, sentences, sections and the re-asked sections: each round went out as
    # batches of 3 requests, run in Ray's worker processes
    rounds = [m for m in on_ray.log_messages if "worker processes:" in m]
    assert len(rounds) == 4
    assert not any("worker processes:" in m for m in in_process.log_messages)
    for line in rounds:
        pids = {int(worker.rsplit(":", 1)[1]) for worker in line.split("worker processes: ")[1].split(", ")}
        assert pids and os.getpid() not in pids
    summaries = int(rounds[0].split("LLM: ")[1].split(" batches")[0])
    assert summaries == -(-N_PLANS // 3)

    # the same rows, cell for cell, and the same rejects with their reasons
    for table, order in (("synthetic_textbook", "prompt_id"), ("synthetic_textbook_rejects", "prompt_id, reason, sample_index")):
        frames = {name: lake.read_only().query(f"SELECT * FROM {table} ORDER BY {order}") for name, lake in lakes.items()}
        assert frames["ray"].equals(frames["in-process"]), table
    sections = lakes["ray"].read_only().query("SELECT * FROM synthetic_textbook")
    rejects = lakes["ray"].read_only().query("SELECT reason FROM synthetic_textbook_rejects")
    assert sections.height > 0 and {"summary_llm_error", "no_code_block"} <= set(rejects["reason"])

    # every request paid once, from the workers, the same requests as in-process
    asked = Counter(request_identity(body) for body in paid_on_ray)
    assert max(asked.values()) == 1 and asked == Counter(request_identity(body) for body in paid_in_process)
    # the cost block counts every round's worker calls
    for key in LLM_BLOCK:
        assert meta[key] == meta_in_process[key], key
    rows = ledger(lakes["ray"], on_ray.run_id)
    assert rows.height == len(paid_on_ray) and set(rows["asset_key"]) == {"synthetic_textbook"}
    assert meta["llm/cost_usd"] == pytest.approx(rows["cost_usd"].sum(), abs=1e-8)


ROUND_SIZE = 8
ANSWER_WORDS = 100  # the double counts a word as a completion token


@dg.asset
def two_rounds(context, warehouse: Warehouse, llm: LLMResource, compute: Compute) -> None:
    """A generation step in two rounds of calls, as synthetic_textbook's iterative mode makes them."""
    with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
        for round_number in range(2):
            session.complete([
                ChatRequest(messages=[{"role": "user", "content": f"round {round_number}, request {i}"}],
                            max_tokens=ANSWER_WORDS, row_id=f"{round_number}-{i}")
                for i in range(ROUND_SIZE)
            ])


@pytest.mark.parametrize("driver_on_cluster", [False, True], ids=["step-connects-for-batches", "step-on-cluster"])
def test_one_budget_holds_over_every_round_of_a_generation_step(tmp_path, local_cluster, monkeypatch, driver_on_cluster):
    """The materialization's budget actor lives until the step is done with it: the second
    round's workers spend what the first round left, not a fresh budget, and the actor is
    gone after the step. The answers are as long as their max_tokens, so a reservation is
    what the call costs; the budget fits one round (plus the requests in flight) and not two.

    Two ways a step meets the cluster: it connects only to send its batches (RAY_ADDRESS:
    the driver's own session keeps a process budget, the actor goes when the step leaves
    `on_cluster`), or its process is on the cluster for the whole step (a dagster-ray
    `ray_cluster`: the driver's session shares the actor and removes it when it closes)."""
    monkeypatch.setenv("RAY_ADDRESS", "local")
    if not driver_on_cluster:  # this test process is connected already, by the module's cluster
        monkeypatch.setattr("resources.llm.session.on_ray_cluster", lambda: False)
    warehouse = Warehouse(path=str(tmp_path / "lake"))
    with OpenAIDouble(chat=lambda body: " ".join(["word"] * ANSWER_WORDS)) as server:
        settings = dict(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_retries=0,
                        cluster_batch_size=1, max_concurrency=1)
        llm = LLMResource(**settings)
        with dg.instance_for_test() as instance:
            priced = dg.materialize([two_rounds], resources={"compute": Compute(), "warehouse": Warehouse(path=str(tmp_path / "priced")),
                                                             "llm": llm}, instance=instance)
            full = ledger(Warehouse(path=str(tmp_path / "priced")), priced.run_id)
            assert full.height == 2 * ROUND_SIZE and (full["status"] == "ok").all()
            one_round = full["cost_usd"].sum() / 2
            budget = 1.5 * one_round
            result = dg.materialize([two_rounds], resources={"compute": Compute(), "warehouse": warehouse,
                                                             "llm": LLMResource(**settings, max_cost_usd=budget)},
                                    instance=instance, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "LLM budget reached" in str(failure.error)
    rows = ledger(warehouse, result.run_id)
    paid = rows.filter(pl.col("status") == "ok")
    assert ROUND_SIZE < paid.height < 2 * ROUND_SIZE  # the first round whole, the second in part
    assert paid["cost_usd"].sum() <= budget  # over both rounds, not per round
    assert (rows["status"] == "budget_exceeded").sum() == 2 * ROUND_SIZE - paid.height
    # and the step's budget actor went with the step (a detached actor would outlive the run)
    import ray

    from resources.llm.cluster_limits import BUDGET_PREFIX, NAMESPACE

    with pytest.raises(ValueError):
        ray.get_actor(f"{BUDGET_PREFIX}{result.run_id}/two_rounds/-", namespace=NAMESPACE)
