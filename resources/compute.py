"""Where the embarrassingly parallel work runs: in this process (the embedded default), or
on a Ray cluster when one is named.

    compute = Compute()                                   # in-process
    compute = Compute(ray_address="ray://head:10001")     # (in a step: or env RAY_ADDRESS, see lasting_compute)
    compute = Compute(ray_address="local", num_cpus=2)    # a local cluster, for tests/benchmarks
    with compute.engine() as engine:
        for summary in engine.map(score_shard, shards):  # results as they finish
            ...

The work items are small descriptions (a shard's id, a batch's key range, the lake's
location) and the results small summaries (row counts, seconds): each task reads its
input from the DuckLake and writes its output there itself, so nothing large passes
through the driver. A task whose worker dies is retried by Ray (`max_task_retries`);
work that writes to the lake must therefore be idempotent per item (replace the item's
rows, never append blindly), and LLM work is, because answers are cached before use.

Who connects to the cluster: either this resource itself (`ray_address`: `ray.init` when a
step opens its engine, `ray.shutdown` when it closes it), or a dagster-ray resource nested in
it (`ray_cluster`), which Dagster sets up with the resource, before the step (before the run,
under the in-process executor), and tears down after it, as dagster-ray does for any asset:

    Compute(ray_cluster=LocalRay(ray_init_options={"num_cpus": 2}))     # a local cluster per step
    Compute(ray_cluster=KubeRayInteractiveJob(...))                      # a KubeRay cluster per step

dagster-ray's resources own the cluster's lifecycle (create, wait, `ray.init`, delete per
its `lifecycle` policy); this resource owns what runs on it. Why dagster-ray's resources
and not its `ray_executor` / `RayRunLauncher`: those put a whole Dagster step or run on the
cluster as one Ray job, while our parallelism is inside a step (thousands of shards or
prompt batches per materialization), where Ray tasks are the unit. The in-process default
needs no Ray at all: `ray` is imported only when an address or a cluster resource is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from resources.warehouse.lake import THREADS_ENV_VAR

RAY_ADDRESS_ENV = "RAY_ADDRESS"
LOCAL = "local"

Item = TypeVar("Item")
Result = TypeVar("Result")


class InProcessEngine:
    """Runs each item in this process, in order: the embedded default."""

    name = "in-process"
    workers = 1

    def map(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        for item in items:
            yield fn(item)


class RayEngine:
    """Runs each item as a Ray task on the connected cluster, at most `max_in_flight` at a
    time (so a million items never sit in the object store at once), and yields results
    as tasks finish (not in submission order)."""

    name = "ray"

    def __init__(self, max_task_retries: int, max_in_flight: int | None, num_cpus_per_task: float) -> None:
        import ray

        self._ray = ray
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus_per_task, 0.01)))
        self.max_in_flight = max_in_flight or 2 * self.workers
        self.max_task_retries = max_task_retries
        self.num_cpus_per_task = num_cpus_per_task

    def map(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        ray = self._ray
        remote = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_task_retries)(run_task)
        threads = max(1, math.ceil(self.num_cpus_per_task))
        pending: list[Any] = []
        for item in items:
            if len(pending) >= self.max_in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
            pending.append(remote.remote(fn, item, threads))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


def run_task(fn: Callable[[Item], Result], item: Item, threads: int) -> Result:
    """A Ray task: `fn(item)` with DuckDB held to the CPUs the task reserved (a worker's
    DuckDB would otherwise start a thread per core of the node, and tasks that Ray packs
    side by side would oversubscribe it). A value set in the workers' environment wins."""
    os.environ.setdefault(THREADS_ENV_VAR, str(threads))
    return fn(item)


class Compute(dg.ConfigurableResource):
    """The engine for parallel work inside a step. Unset: in-process, no Ray needed."""

    ray_address: str | None = Field(
        default=None,
        description=f"A Ray cluster to run shards and batches on: 'ray://head:10001' (client mode), 'auto' "
        f"(the cluster this machine belongs to, after `ray start`), or '{LOCAL}' (start a local cluster for "
        f"this process, for tests and benchmarks). Unset: env {RAY_ADDRESS_ENV}, else `ray_address` under "
        f"[compute] in the settings file (`synth_assets.settings.lasting_compute`), else in-process.",
    )
    ray_cluster: RayResource | None = Field(
        default=None,
        description="A dagster-ray resource (LocalRay, KubeRayCluster, KubeRayInteractiveJob) that creates and "
        "connects the cluster for each step and deletes it after, per its lifecycle policy. Set either this "
        "or ray_address; with this set, the steps' tasks go to the cluster it connected.",
    )
    num_cpus: int | None = Field(
        default=None, description=f"CPUs of a '{LOCAL}' cluster (default: every core). Ignored for a remote cluster."
    )
    num_cpus_per_task: float = Field(default=1.0, description="CPUs Ray reserves for each task.")
    max_task_retries: int = Field(
        default=3, description="How often Ray re-runs a task whose worker died (tasks are idempotent per item)."
    )
    max_in_flight: int | None = Field(
        default=None, description="Tasks submitted but not finished at once (default: twice the workers)."
    )

    @property
    def distributed(self) -> bool:
        return self.ray_cluster is not None or bool(self.ray_address)

    @contextmanager
    def engine(self) -> Iterator[InProcessEngine | RayEngine]:
        if not self.distributed:
            yield InProcessEngine()
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            if self.ray_cluster is not None:
                raise RuntimeError(
                    f"the compute resource's ray_cluster ({self.ray_cluster.display_name}) has not connected this "
                    "process to its cluster: dagster-ray connects it when Dagster sets the resource up for a step, "
                    "unless its lifecycle says connect=False (our steps need the connection: leave it True); "
                    "outside a Dagster step, name the cluster with ray_address instead"
                )
            self._connect(ray)
        try:
            yield RayEngine(self.max_task_retries, self.max_in_flight, self.num_cpus_per_task)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        if self.ray_address == LOCAL:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=self.ray_address, log_to_driver=False)


class TaskContext:
    """What a task on a worker needs of its step's Dagster context, picklable: the ids the
    LLM ledger stamps on every call (so the cost report counts a worker's calls under the
    materialization that asked for them) and that scope its cluster-wide budget.

        task_context = TaskContext.of(context)      # in the asset, on the driver
        with llm.session(task_context, warehouse):  # in the task, on any worker
    """

    log = None  # a worker logs to its own logger

    def __init__(self, run_id: str | None, asset_key: dg.AssetKey | None, partition_key: str | None = None) -> None:
        self.run_id = run_id
        self.asset_key = asset_key
        self.partition_key = partition_key

    @property
    def has_partition_key(self) -> bool:
        return self.partition_key is not None

    @classmethod
    def of(cls, context: Any) -> TaskContext:
        asset_key = getattr(context, "asset_key", None)
        partition = context.partition_key if getattr(context, "has_partition_key", False) else None
        return cls(context.run_id, asset_key, partition)
