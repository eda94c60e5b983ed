"""Automation: when assets re-run by themselves, and the sensors and schedules behind it.

- `on_upstream_change()`: the automation condition every downstream asset declares.
- `automation_sensor`: evaluates those conditions (running by default, every 30 s).
- `corpus_change_sensor`: re-ingests raw_stack_plus when the corpus files change on disk.
- `daily_cost_report_schedule`: the cost report every day at 06:00 UTC (`cost_report_job`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from synth_assets.ingest import CORPUS_PATHS_ENV, default_sources
from synth_assets.sources import DEFAULT_EXCLUDE_DIRS, TABLE_SUFFIXES


def on_upstream_change() -> dg.AutomationCondition:
    """Re-materialize when an upstream asset has new data or this asset's code version
    changed (prompt and model changes bump `code_version`), but only once every
    upstream blocking check has passed, and never while a run of it is in flight."""
    return (
        dg.AutomationCondition.eager()
        | (
            dg.AutomationCondition.code_version_changed().since_last_handled()
            & ~dg.AutomationCondition.in_progress()
        )
    ) & dg.AutomationCondition.all_deps_blocking_checks_passed()


# ---------------------------------------------------------------- sensors, schedules, jobs

RAW_ASSET = dg.AssetKey("raw_stack_plus")
COST_REPORT_ASSET = dg.AssetKey("cost_report")
# What the ingest readers (synth_assets/sources.py) read: Python trees, table files of
# The Stack-style dumps, and Stack Exchange XML dumps. Anything else cannot change the corpus.
CORPUS_SUFFIXES = (".py", ".xml", *TABLE_SUFFIXES)
# How often the daemon may evaluate the sensors. A stdlib listing (~600 files) takes ~10 ms.
AUTOMATION_SENSOR_INTERVAL_S = 30
CORPUS_SENSOR_INTERVAL_S = 60


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_SENSOR_INTERVAL_S,
    description="Evaluates every asset's automation condition (on_upstream_change) and launches "
    "the runs it asks for. Running by default.",
)


def watched_corpus_paths() -> list[str]:
    """The corpus sources the sensor watches: the ones `raw_stack_plus` reads when its
    launchpad config names none (env SYNTH_ASSETS_CORPUS_PATHS, else the standard library)."""
    return [source.path for source in default_sources()]


@dataclass(frozen=True)
class CorpusFingerprint:
    """A hash of (path, size, mtime) of every corpus file, with the counts behind it."""

    digest: str
    files: int
    missing: tuple[str, ...] = ()


def _corpus_files(root: str, suffixes: tuple[str, ...], exclude_dirs: set[str]) -> Iterable[str]:
    if not os.path.isdir(root):
        yield root
        return
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        for name in sorted(filenames):
            if name.endswith(suffixes):
                yield os.path.join(directory, name)


def corpus_fingerprint(
    paths: Sequence[str],
    suffixes: tuple[str, ...] = CORPUS_SUFFIXES,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
) -> CorpusFingerprint:
    """A cheap listing fingerprint: sha256 over (path, size, mtime_ns) of every file the ingest
    would read (same suffixes, same pruned directory names). Reads no file contents, so a new,
    removed, resized or touched file changes it; anything else (e.g. __pycache__) does not.
    A missing path is part of the fingerprint too, so its appearance counts as a change."""
    digest = hashlib.sha256()
    files = 0
    missing: list[str] = []
    excluded = set(exclude_dirs)
    for root in paths:
        if not os.path.lexists(root):
            missing.append(root)
            digest.update(f"missing\t{root}\n".encode("utf-8", "surrogateescape"))
            continue
        for path in _corpus_files(root, suffixes, excluded):
            try:
                info = os.stat(path)
            except OSError:
                digest.update(f"unreadable\t{path}\n".encode("utf-8", "surrogateescape"))
                continue
            files += 1
            digest.update(f"{path}\t{info.st_size}\t{info.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return CorpusFingerprint(digest.hexdigest(), files, tuple(missing))


def _read_cursor(cursor: str | None) -> dict:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    return state if isinstance(state, dict) else {}


@dg.sensor(
    name="corpus_change_sensor",
    target=[RAW_ASSET],
    minimum_interval_seconds=CORPUS_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def corpus_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Re-ingests `raw_stack_plus` when the corpus changes on disk.

    Watches the paths in env SYNTH_ASSETS_CORPUS_PATHS (os.pathsep-separated; default: this
    Python's standard library, the ingest default) with a listing fingerprint (paths, sizes and
    mtimes of the files the ingest reads, hashed; no file is opened) kept in the cursor.

    First tick: records the fingerprint and launches nothing, unless `raw_stack_plus` was never
    materialized, in which case it requests the first ingest. Later ticks request a run only
    when the fingerprint changed. Downstream assets then follow through their automation
    conditions (the LLM cache makes unchanged documents free to re-annotate)."""
    state = _read_cursor(context.cursor)
    paths = watched_corpus_paths()
    fingerprint = corpus_fingerprint(paths)
    for path in fingerprint.missing:
        context.log.warning(f"corpus path does not exist: {path}")
    changes = int(state.get("changes", 0))
    previous = state.get("digest")
    request = None
    if previous is None:
        if context.instance.get_latest_materialization_event(RAW_ASSET) is None:
            request = "raw_stack_plus was never materialized"
    elif previous != fingerprint.digest:
        request = f"corpus changed ({state.get('files', '?')} -> {fingerprint.files} files)"
    if request is not None:
        changes += 1
    cursor = json.dumps({"digest": fingerprint.digest, "files": fingerprint.files, "changes": changes})
    if request is None:
        reason = (
            "first tick: recorded the corpus fingerprint" if previous is None else "corpus unchanged"
        ) + f" ({fingerprint.files} files under {len(paths)} path(s))"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    context.log.info(request)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # a counter, not the digest: a corpus that changes back must run again
                run_key=f"corpus-change-{changes}-{fingerprint.digest[:12]}",
                asset_selection=[RAW_ASSET],
                tags={"synth_assets/trigger": "corpus_change", "synth_assets/corpus_fingerprint": fingerprint.digest[:16]},
            )
        ],
        cursor=cursor,
    )


cost_report_job = dg.define_asset_job(
    "cost_report_job",
    selection=dg.AssetSelection.assets(COST_REPORT_ASSET),
    description="Rebuild the LLM cost report (and the lineage views) from the llm_calls ledger.",
)

daily_cost_report_schedule = dg.ScheduleDefinition(
    name="daily_cost_report_schedule",
    job=cost_report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 06:00 UTC: the cost report, so yesterday's spend is on the desk "
    "in the morning even when no asset re-ran. Reads only DuckDB; costs nothing.",
)

all_sensors = [automation_sensor, corpus_change_sensor]
all_schedules = [daily_cost_report_schedule]
all_jobs = [cost_report_job]


def on_code_change() -> dg.AutomationCondition:
    """For root assets that call the LLM (plans and exercises have no upstream asset):
    re-materialize when their code version changed (a new prompt or model bumps it),
    never merely because they are missing, so starting the UI does not spend money."""
    return (
        dg.AutomationCondition.code_version_changed().since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("code_version_changed")
