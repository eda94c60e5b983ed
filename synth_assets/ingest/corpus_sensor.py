"""`corpus_change_sensor`: re-ingests raw_stack_plus when the corpus files change on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from synth_assets.ingest.raw_stack_plus import default_sources
from synth_assets.ingest.sources import DEFAULT_EXCLUDE_DIRS, TABLE_SUFFIXES

RAW_ASSET = dg.AssetKey("raw_stack_plus")
# What the ingest readers (synth_assets/ingest/sources.py) read: Python trees, table files of
# The Stack-style dumps, and Stack Exchange XML dumps. Anything else cannot change the corpus.
CORPUS_SUFFIXES = (".py", ".xml", *TABLE_SUFFIXES)
# How often the daemon may evaluate the sensor. A stdlib listing (~600 files) takes ~10 ms.
CORPUS_SENSOR_INTERVAL_S = 60


def watched_corpus_paths() -> list[str]:
    """The corpus sources the sensor watches: the ones `raw_stack_plus` reads when its
    launchpad config names none (env SYNTH_ASSETS_CORPUS_PATHS, else the project settings
    file's [raw_stack_plus] sources, else the standard library)."""
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

    Watches the lasting corpus sources (env SYNTH_ASSETS_CORPUS_PATHS, else [raw_stack_plus]
    sources in synth_assets.toml, else this Python's standard library: what the ingest reads
    when the launchpad names no sources) with a listing fingerprint (paths, sizes and
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
