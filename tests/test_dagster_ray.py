"""The `compute` resource with a dagster-ray resource nested in it (`ray_cluster`): Dagster
sets the cluster up before the step (dagster-ray's `LocalRay` here: `ray.init` of a fresh
local cluster; `KubeRayInteractiveJob` / `KubeRayCluster` on Kubernetes) and tears it down
after, while the step's shards and prompt batches go to it as Ray tasks. The tables are the
in-process run's, and nothing of the cluster outlives the step."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from resources.compute import Compute
from resources.warehouse import Warehouse

ray = pytest.importorskip("ray")
dagster_ray = pytest.importorskip("dagster_ray")

pytestmark = pytest.mark.timeout(300)


def local_ray_compute() -> Compute:
    """What a user writes in the definitions to run every step on a per-step local cluster."""
    return Compute(ray_cluster=dagster_ray.LocalRay(
        ray_init_options={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}))


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    """Every line of the run's log, the resources' own messages included."""
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


@pytest.fixture
def no_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # a module before this one left its cluster up
        ray.shutdown()


def test_the_partitioned_branch_on_a_dagster_ray_cluster_equals_the_in_process_run(tmp_path, monkeypatch, no_cluster):
    from synth_assets.ingest.raw_stack_plus import raw_stack_plus
    from tests.test_compute import ingested_tables
    from tests.test_corpus_shards import settings, write_tree

    tree = tmp_path / "tree"
    write_tree(tree, 24, copies=4)
    monkeypatch.setenv("SYNTH_ASSETS_CORPUS_PATHS", str(tree))
    settings(tmp_path, monkeypatch, files_per_shard=10)
    tables, logs = {}, {}
    for mode, compute in (("in-process", Compute()), ("ray", local_ray_compute())):
        warehouse = Warehouse(path=str(tmp_path / mode))
        with dg.instance_for_test() as instance:
            result = dg.materialize([raw_stack_plus], resources={"compute": compute, "warehouse": warehouse},
                                    instance=instance)
            logs[mode] = run_log(instance, result)
        assert result.success
        metadata = result.asset_materializations_for_node("raw_stack_plus")[0].metadata
        assert metadata["compute"].value == mode and metadata["shards_ingested_here"].value == 4
        assert not ray.is_initialized()  # dagster-ray disconnected and deleted its cluster after the step
        tables[mode] = ingested_tables(warehouse)
    assert any("Connected to LocalRay" in line for line in logs["ray"])
    assert any('Deleted LocalRay according to cleanup policy "always"' in line for line in logs["ray"])
    assert not any("LocalRay" in line for line in logs["in-process"])
    assert tables["ray"][0].height == 4 and tables["ray"][3].height >= 8
    for ray_table, local_table in zip(tables["ray"], tables["in-process"]):
        assert ray_table.equals(local_table)


def test_generation_batches_go_to_the_dagster_ray_cluster_and_are_accounted_to_the_step(tmp_path, no_cluster):
    from synth_assets.instructions.self_instruct import SelfInstructConfig, self_instruct
    from tests.instruction_doubles import self_instruct_responder
    from tests.openai_double import OpenAIDouble
    from tests.test_instructions_self_instruct import llm_for

    config = SelfInstructConfig(rounds=2, requests_per_round=6, sandbox_timeout_s=2.0)
    rows, calls, workers = {}, {}, {}
    for mode, compute in (("in-process", Compute()), ("ray", local_ray_compute())):
        warehouse = Warehouse(path=str(tmp_path / mode))
        with OpenAIDouble(chat=self_instruct_responder) as server, dg.instance_for_test() as instance:
            result = dg.materialize([self_instruct], resources={"compute": compute, "warehouse": warehouse,
                                                                "llm": llm_for(server)},
                                    run_config=dg.RunConfig({"self_instruct": config}), instance=instance)
            calls[mode] = len(server.chat_requests)
            workers[mode] = [line.split("worker processes: ")[1].split(", ") for line in run_log(instance, result)
                             if line.startswith("LLM: ") and "worker processes: " in line]
        assert result.success
        (event,) = result.asset_materializations_for_node("self_instruct")
        assert event.metadata["compute"].value == mode
        assert not ray.is_initialized()
        ledger = warehouse.query("SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM llm_calls "
                                 "WHERE asset_key = 'self_instruct'")
        assert ledger["runs"][0] == 1 and ledger["n"][0] == calls[mode]  # every call in the step's ledger, once
        rows[mode] = warehouse.query("SELECT instruction_id, instruction, round FROM self_instruct ORDER BY instruction_id")
    assert calls["ray"] == calls["in-process"]
    # each round's batches ran in Ray worker processes, not in the step's
    assert workers["in-process"] == [] and len(workers["ray"]) >= 2
    assert all(int(worker.rsplit(":", 1)[1]) != os.getpid() for line in workers["ray"] for worker in line)
    assert rows["ray"].height == 4 and rows["ray"].equals(rows["in-process"])


def test_a_cluster_resource_that_did_not_connect_the_step_is_a_clear_error(no_cluster):
    """`lifecycle.connect=False` (or a ray_cluster used outside a Dagster step): the engine
    does not `ray.init` around dagster-ray (which would skip its env vars, runtime env and a
    KubeRay job's bookkeeping) but says what to change, and starts nothing."""
    compute = Compute(ray_cluster=dagster_ray.LocalRay(lifecycle=dagster_ray.Lifecycle(connect=False)))
    with pytest.raises(RuntimeError, match="ray_cluster \\(LocalRay\\) has not connected.*connect=False"):
        with compute.engine():
            pass
    assert not ray.is_initialized()
