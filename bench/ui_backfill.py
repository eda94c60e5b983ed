"""A backfill of thousands of shards, launched from the UI: a real `dagster dev`, the UI's
"Materialize all partitions" of `corpus_shards`, split by the asset's backfill policy
(`BackfillPolicy.multi_run(SHARDS_PER_RUN)`, 16 shards a run) into runs the daemon launches.

    .venv/bin/python -m bench.ui_backfill --shards 2000              # ~125 runs
    .venv/bin/python -m bench.ui_backfill --shards 40                # quick: 3 runs
    .venv/bin/python -m bench.ui_backfill --shards 2000 --keep       # keep the scratch folder

What it runs, in a scratch folder (removed after a passing run unless --keep; kept and
printed after a failing one):

* a corpus of --shards JSONL files in The Stack's schema (`content`, `max_stars_repo_path`,
  `max_stars_repo_name`, `max_stars_repo_licenses`, ...), each holding 2-5 real snippets:
  top-level functions and classes of this interpreter's standard library (~3,500 of them,
  so a corpus of more than ~1,000 files repeats some in other shards). The corpus is
  one `the_stack` source in a settings file (`[raw_stack_plus] sources`), so each file is
  one shard, `the_stack:<file>` (env SYNTH_ASSETS_CORPUS_PATHS names a folder as a
  python_tree source, so it is left unset here);
* DAGSTER_HOME with the project's dagster_home/dagster.yaml, a lake path, and the
  self-starting sensors stopped (`tests.test_ui._stop_sensors`);
* the shards registered as `corpus_shard` partitions by one tick of `corpus_change_sensor`
  (dagster's sensor testing API against the instance; its partition requests applied with
  `register_shards`, as the daemon would apply them);
* `dagster dev` on a free port (env as in tests/test_ui.py, without the LLM settings:
  corpus_shards calls no model), then the UI's `launchPartitionBackfill` mutation with
  `allPartitions: true`, and the backfill polled until it ends (--timeout-min, progress
  every ~30 s). `dagster dev`'s process group is killed at the end, whatever happened.

It prints and checks: the backfill's status; the number of runs (ceil(shards / 16)), all
SUCCESS; every shard in exactly one run's partition-range tags, at most 16 a run; every
shard's `corpus_shard_manifest` row (the lake read read-only) carrying the run id of the run
whose range holds it; no run but the backfill's. Figures: wall time from launch to the
backfill's end, runs and shards per minute, median and max run duration (the runs'
startTime/endTime over GraphQL), time from launch to the first run created and started,
and the ERROR lines of the `dagster dev` log. Exits 1 if a check fails.

Figures go to --out (bench/results/ui-backfill.json, git-ignored).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth_assets.ingest.sources import RawDocument, read_python_tree, stdlib_path  # noqa: E402
from tests.test_ui import (  # noqa: E402
    BACKFILL_QUERY,
    LAUNCH_BACKFILL,
    SENSORS,
    SHARD_KEYS_QUERY,
    _free_port,
    _graphql,
    _start_dagster_dev,
    _stop_dagster_dev,
    _stop_sensors,
    _wait_for_code_location,
)

SOURCE_NAME = "the_stack"
SNIPPET_CHARS = (200, 4000)  # a snippet's length in characters, min and max
DOCS_PER_FILE = (2, 5)
POLL_S = 5
PROGRESS_S = 30
DONE_STATUSES = ("COMPLETED", "COMPLETED_SUCCESS")
# Environment that must not reach the runs: another lake, a model server, a Ray cluster, a corpus.
DROPPED_ENV = (
    "SYNTH_ASSETS_CATALOG", "SYNTH_ASSETS_DATA_PATH", "SYNTH_ASSETS_LOCAL_MODEL_URL", "SYNTH_ASSETS_CORPUS_PATHS",
    "SYNTH_ASSETS_CHAT_MODEL", "SYNTH_ASSETS_EMBEDDING_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "RAY_ADDRESS",
)

PROGRESS_QUERY = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions runs { status } }
  ... on PythonError { message } } }
"""

RUN_TIMES_QUERY = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
  status timestamp endTimestamp runs { runId status creationTime startTime endTime } } } }
"""

ALL_RUNS_QUERY = """
query { runsOrError { ... on Runs { results { runId } } } }
"""


# --------------------------------------------------------------------------- the scratch corpus


def stdlib_snippets() -> list[tuple[str, str]]:
    """(relative path, source) of every top-level function and class of a snippet's length
    in the standard library, read as the pipeline reads it (its default exclusions)."""
    root = Path(stdlib_path())
    snippets = []
    for record in read_python_tree(root):
        if not isinstance(record, RawDocument):
            continue
        try:
            tree = ast.parse(record.content)
        except (SyntaxError, ValueError):
            continue
        rel = Path(record.origin).relative_to(root)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                segment = ast.get_source_segment(record.content, node)
                if segment and SNIPPET_CHARS[0] <= len(segment) <= SNIPPET_CHARS[1]:
                    snippets.append((f"Lib/{rel.as_posix()}", segment + "\n"))
    return snippets


def stack_row(rel_path: str, content: str, index: int) -> dict:
    """One row in The Stack's published schema (bigcode/the-stack-dedup)."""
    return {
        "content": content,
        "max_stars_repo_path": rel_path,
        "max_stars_repo_name": "python/cpython",
        "max_stars_repo_head_hexsha": f"{index:040x}",
        "max_stars_repo_licenses": ["PSF-2.0"],
        "max_stars_count": 1,
        "ext": "py",
        "lang": "Python",
        "size": len(content.encode()),
    }


def write_corpus(folder: Path, shards: int, seed: int = 0) -> tuple[int, int]:
    """`shards` JSONL files of 2-5 snippets each, snippets taken in a shuffled round;
    returns (files, documents)."""
    snippets = stdlib_snippets()
    rng = random.Random(seed)
    rng.shuffle(snippets)
    folder.mkdir(parents=True)
    width = max(5, len(str(shards)))
    taken = 0
    for number in range(shards):
        rows = []
        for _ in range(rng.randint(*DOCS_PER_FILE)):
            rel_path, content = snippets[taken % len(snippets)]
            rows.append(stack_row(rel_path, content, taken))
            taken += 1
        with (folder / f"train-{number:0{width}d}.jsonl").open("w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    return shards, taken


def write_settings(path: Path, corpus: Path) -> None:
    path.write_text(
        "[raw_stack_plus]\n"
        f"sources = [{{ kind = \"the_stack\", path = {json.dumps(str(corpus))}, name = \"{SOURCE_NAME}\" }}]\n"
    )


def scratch_env(home: Path, settings: Path, lake: Path) -> dict:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNTH_ASSETS_SETTINGS": str(settings),
        "SYNTH_ASSETS_WAREHOUSE": str(lake),
    }
    for name in DROPPED_ENV:
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------- registering the shards


def register_with_the_sensor(home: Path) -> list[str]:
    """One tick of corpus_change_sensor against the instance; its partition requests applied
    with register_shards (what the daemon does with a tick's requests). Returns the keys
    registered. Needs this process's environment to be the scratch one."""
    import dagster as dg

    from synth_assets.ingest.corpus_sensor import corpus_change_sensor
    from synth_assets.ingest.corpus_shards import register_shards, registered_shards
    from synth_assets.ingest.shards import corpus_shard_partitions

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = corpus_change_sensor(dg.build_sensor_context(instance=instance))
        for request in result.dynamic_partitions_requests or []:
            assert request.partitions_def_name == corpus_shard_partitions.name, request
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                register_shards(instance, list(request.partition_keys))
            else:  # shards whose files are gone (none in a fresh scratch corpus)
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        return registered_shards(instance)


# --------------------------------------------------------------------------- dagster dev


def log_errors(log: Path, limit: int = 8) -> tuple[int, list[str]]:
    """The number of ERROR/Traceback lines of the dagster dev log, and the first distinct ones."""
    lines = [line.rstrip() for line in log.read_text(errors="replace").splitlines()
             if " - ERROR - " in line or line.startswith("Traceback")]
    distinct = list(dict.fromkeys(line[line.find(" - ") + 3:] if " - " in line else line for line in lines))
    return len(lines), distinct[:limit]


# --------------------------------------------------------------------------- the backfill


def launch_backfill(port: int) -> tuple[str, float, float]:
    """The UI's "Materialize all partitions" of corpus_shards: (backfill id, launch epoch,
    seconds the mutation took)."""
    launched_at = time.time()
    launched = _graphql(port, LAUNCH_BACKFILL, {"params": {
        "assetSelection": [{"path": ["corpus_shards"]}], "allPartitions": True, "title": "every shard (bench)",
    }})["launchPartitionBackfill"]
    took = time.time() - launched_at
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill failed: {launched}")
    return launched["backfillId"], launched_at, took


def progress_line(backfill: dict, expected_runs: int, elapsed: float) -> str:
    statuses = Counter(run["status"] for run in backfill["runs"])
    finished = sum(statuses[s] for s in ("SUCCESS", "FAILURE", "CANCELED"))
    rate = finished / (elapsed / 60) if elapsed > 0 else 0.0
    others = ", ".join(f"{k.lower()} {v}" for k, v in sorted(statuses.items()) if k != "SUCCESS")
    return (f"[{elapsed / 60:5.1f} min] backfill {backfill['status']}: runs finished {finished}/{expected_runs} "
            f"(launched {len(backfill['runs'])}, success {statuses['SUCCESS']}{', ' + others if others else ''}), "
            f"{rate:.1f} runs/min")


def wait_for_backfill(port: int, backfill_id: str, launched_at: float, expected_runs: int,
                      timeout_s: float, proc: subprocess.Popen) -> tuple[dict, float]:
    """Poll until the backfill leaves REQUESTED/CANCELING/FAILING; (backfill, seen-done epoch)."""
    deadline = time.monotonic() + timeout_s
    last_print = 0.0
    backfill: dict = {"status": "REQUESTED", "runs": []}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode} during the backfill")
        try:
            answer = _graphql(port, PROGRESS_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        except OSError as exc:  # the webserver busy past the request timeout: ask again
            print(f"  (poll failed: {exc})", flush=True)
            time.sleep(POLL_S)
            continue
        if answer.get("__typename") != "PartitionBackfill":
            raise RuntimeError(f"backfill {backfill_id}: {answer}")
        backfill = answer
        now = time.time()
        done = backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING")
        if done or time.monotonic() - last_print >= PROGRESS_S:
            print(progress_line(backfill, expected_runs, now - launched_at), flush=True)
            last_print = time.monotonic()
        if done:
            return backfill, now
        time.sleep(POLL_S)
    raise TimeoutError(f"backfill {backfill_id} still {backfill['status']} after {timeout_s / 60:.0f} min")


# --------------------------------------------------------------------------- checks and figures


def run_ranges(runs: list[dict], keys: list[str]) -> list[list[str]]:
    """Each run's shards, from its partition-range tags, in the partition order."""
    position = {key: index for index, key in enumerate(keys)}
    ranges = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
        if start is None or end is None:
            single = tags.get("dagster/partition")
            ranges.append([single] if single else [])
            continue
        ranges.append(keys[position[start]: position[end] + 1])
    return ranges


def manifest_run_ids(lake: Path) -> dict[str, str]:
    from resources.warehouse import Warehouse

    frame = Warehouse(path=str(lake)).read_only().query("SELECT shard, run_id FROM corpus_shard_manifest")
    return dict(zip(frame["shard"], frame["run_id"]))


def check_backfill(backfill: dict, keys: list[str], shards_per_run: int, manifest: dict[str, str],
                   all_run_ids: list[str], shards_wanted: int) -> dict[str, tuple[bool, str]]:
    """name -> (passed, detail) for every check."""
    runs = backfill["runs"]
    expected_runs = math.ceil(len(keys) / shards_per_run)
    statuses = Counter(run["status"] for run in runs)
    ranges = run_ranges(runs, keys)
    covered = Counter(key for part in ranges for key in part)
    twice = [key for key, n in covered.items() if n > 1]
    missing = [key for key in keys if key not in covered]
    sizes = [len(part) for part in ranges]
    run_of = {key: run["runId"] for run, part in zip(runs, ranges) for key in part}
    wrong_manifest = [key for key in keys if manifest.get(key) != run_of.get(key)]
    extra_manifest = sorted(set(manifest) - set(keys))
    backfill_ids = {run["runId"] for run in runs}
    return {
        "every shard registered": (len(keys) == shards_wanted, f"{len(keys)} partitions for {shards_wanted} files"),
        "backfill completed": (backfill["status"] in DONE_STATUSES, backfill["status"]),
        "runs == ceil(shards/16)": (len(runs) == expected_runs, f"{len(runs)} runs, expected {expected_runs}"),
        "every run SUCCESS": (bool(runs) and statuses["SUCCESS"] == len(runs), dict(statuses).__repr__()),
        "every shard in exactly one run": (not twice and not missing,
                                           f"{len(missing)} shards in no run, {len(twice)} in several"),
        f"at most {shards_per_run} shards a run": (bool(sizes) and max(sizes) <= shards_per_run,
                                                   f"sizes {min(sizes, default=0)}..{max(sizes, default=0)}"),
        "manifest run id = the run holding the shard": (
            not wrong_manifest and not extra_manifest,
            f"{len(manifest)} manifest rows, {len(wrong_manifest)} wrong or missing, {len(extra_manifest)} unknown"
            + (f" (first: {wrong_manifest[0]} -> {manifest.get(wrong_manifest[0])})" if wrong_manifest else ""),
        ),
        "no run but the backfill's": (set(all_run_ids) == backfill_ids,
                                      f"{len(all_run_ids)} runs in the instance, {len(backfill_ids)} of the backfill"),
    }


def timing_figures(times: dict, launched_at: float, seen_done_at: float, shards: int, launch_took: float) -> dict:
    """Wall time, rates and run durations from the backfill's and its runs' timestamps."""
    runs = times["runs"]
    durations = [r["endTime"] - r["startTime"] for r in runs if r.get("startTime") and r.get("endTime")]
    starts = [r["startTime"] for r in runs if r.get("startTime")]
    created = [r["creationTime"] for r in runs if r.get("creationTime")]
    ends = [r["endTime"] for r in runs if r.get("endTime")]
    end = times.get("endTimestamp") or seen_done_at
    wall = end - launched_at
    return {
        "wall_s": round(wall, 1),
        "wall_source": "backfill endTimestamp" if times.get("endTimestamp") else "first poll seeing it done",
        "last_run_end_s": round(max(ends) - launched_at, 1) if ends else None,
        "launch_mutation_s": round(launch_took, 2),
        "first_run_created_s": round(min(created) - launched_at, 1) if created else None,
        "first_run_started_s": round(min(starts) - launched_at, 1) if starts else None,
        "runs_per_min": round(len(runs) / (wall / 60), 2) if wall > 0 else None,
        "shards_per_min": round(shards / (wall / 60), 1) if wall > 0 else None,
        "run_duration_median_s": round(statistics.median(durations), 1) if durations else None,
        "run_duration_max_s": round(max(durations), 1) if durations else None,
        "run_duration_min_s": round(min(durations), 1) if durations else None,
        "queue_wait_median_s": round(statistics.median(
            r["startTime"] - r["creationTime"] for r in runs if r.get("startTime") and r.get("creationTime")), 1)
        if starts else None,
    }


def print_report(result: dict) -> None:
    print("\n== corpus_shards backfill from the UI ==")
    for name in ("shards", "documents", "shards_per_run", "backfill_id", "status", "runs"):
        print(f"  {name:28s} {result.get(name)}")
    for name, value in result["timing"].items():
        print(f"  {name:28s} {value}")
    print(f"  {'dagster dev log ERROR lines':28s} {result['log_errors']}")
    for line in result["log_error_samples"]:
        print(f"      {line[:200]}")
    print("\n== checks ==")
    for name, check in result["checks"].items():
        print(f"  {'PASS' if check['passed'] else 'FAIL'}  {name}: {check['detail']}")
    print(f"\nall checks passed: {result['passed']}")


# --------------------------------------------------------------------------- main


def prepare_scratch(folder: Path, shards: int) -> dict:
    home, data, corpus = folder / "dagster_home", folder / "data", folder / "corpus"
    home.mkdir(parents=True)
    data.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    settings = home / "synth_assets.toml"
    files, documents = write_corpus(corpus, shards)
    write_settings(settings, corpus)
    return {"home": home, "data": data, "lake": data / "lake", "settings": settings, "corpus": corpus,
            "files": files, "documents": documents}


def run_backfill(scratch: dict, args: argparse.Namespace, result: dict) -> None:
    """Everything from `dagster dev` starting to the figures, into `result`."""
    from synth_assets.ingest.corpus_shards import SHARDS_PER_RUN

    env = scratch_env(scratch["home"], scratch["settings"], scratch["lake"])
    os.environ.clear()
    os.environ.update(env)  # the sensor tick reads the scratch settings in this process
    t0 = time.monotonic()
    _stop_sensors(env, scratch["home"])
    print(f"stopped {', '.join(SENSORS)} ({time.monotonic() - t0:.0f}s)", flush=True)
    t0 = time.monotonic()
    registered = register_with_the_sensor(scratch["home"])
    result["register_s"] = round(time.monotonic() - t0, 1)
    print(f"registered {len(registered)} shards with one corpus_change_sensor tick ({result['register_s']}s)", flush=True)

    port = _free_port()
    log = scratch["home"] / "dagster_dev.log"
    result["dagster_dev_log"] = str(log)
    proc = _start_dagster_dev(env, scratch["data"], log, port)
    try:
        t0 = time.monotonic()
        _wait_for_code_location(port, proc, log)
        result["startup_s"] = round(time.monotonic() - t0, 1)
        print(f"dagster dev on port {port}, code location loaded in {result['startup_s']}s", flush=True)
        keys = _graphql(port, SHARD_KEYS_QUERY)["assetNodeOrError"]["partitionKeys"]
        expected_runs = math.ceil(len(keys) / SHARDS_PER_RUN)
        backfill_id, launched_at, launch_took = launch_backfill(port)
        print(f"launched backfill {backfill_id} of {len(keys)} shards (mutation {launch_took:.1f}s), "
              f"expecting {expected_runs} runs", flush=True)
        result.update(backfill_id=backfill_id, shards_per_run=SHARDS_PER_RUN, expected_runs=expected_runs)
        _, seen_done_at = wait_for_backfill(port, backfill_id, launched_at, expected_runs,
                                            args.timeout_min * 60, proc)
        backfill = _graphql(port, BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        times = _graphql(port, RUN_TIMES_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        all_run_ids = [r["runId"] for r in _graphql(port, ALL_RUNS_QUERY)["runsOrError"]["results"]]
    finally:
        _stop_dagster_dev(proc)
        result["log_errors"], result["log_error_samples"] = log_errors(log)
    checks = check_backfill(backfill, keys, SHARDS_PER_RUN, manifest_run_ids(scratch["lake"]), all_run_ids,
                            args.shards)
    result.update(
        status=backfill["status"],
        runs=len(backfill["runs"]),
        timing=timing_figures(times, launched_at, seen_done_at, len(keys), launch_took),
        checks={name: {"passed": passed, "detail": detail} for name, (passed, detail) in checks.items()},
        passed=all(passed for passed, _ in checks.values()),
    )


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"figures written to {out}")


def _exit_on_sigterm(signum, frame):  # so `finally` kills dagster dev when this script is killed
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2000, help="corpus files, one shard each")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="give up on the backfill after this long")
    parser.add_argument("--out", default="bench/results/ui-backfill.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    folder = Path(tempfile.mkdtemp(prefix="ui-backfill-"))
    started = time.monotonic()
    scratch = prepare_scratch(folder, args.shards)
    print(f"scratch folder {folder}: {scratch['files']} JSONL files, {scratch['documents']} documents", flush=True)
    result: dict = {"command": " ".join([Path(sys.executable).name, "-m", "bench.ui_backfill", *(argv or sys.argv[1:])]),
                    "shards": scratch["files"], "documents": scratch["documents"], "scratch": str(folder),
                    "passed": False, "log_errors": 0, "log_error_samples": []}
    try:
        run_backfill(scratch, args, result)
    except Exception as exc:  # noqa: BLE001 -- reported, written and exited on like a failed check
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"\nFAILED: {result['error']}", flush=True)
    result["bench_total_s"] = round(time.monotonic() - started, 1)
    if "timing" in result:
        print_report(result)
    write_result(result, Path(args.out))
    if result["passed"] and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"scratch folder kept: {folder}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
