"""`corpus_change_sensor`: registers the corpus's shards as partitions and re-ingests the
shards whose files changed on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from synth_assets.ingest.corpus import default_sources, lasting_config
from synth_assets.ingest.corpus_shards import CORPUS_SHARDS_KEY
from synth_assets.ingest.shards import Shard, corpus_shard_partitions, plan_shards
from synth_assets.ingest.sources import DEFAULT_EXCLUDE_DIRS, TABLE_SUFFIXES

RAW_ASSET = dg.AssetKey("raw_stack_plus")
# What the ingest readers (synth_assets/ingest/sources.py) read: Python trees, table files of
# The Stack-style dumps, and Stack Exchange XML dumps. Anything else cannot change the corpus.
CORPUS_SUFFIXES = (".py", ".xml", *TABLE_SUFFIXES)
# More changed shards than this in one tick (a new source, a first listing) are ingested by
# one raw_stack_plus run (its shards are tasks of its engine) instead of a run per shard.
MAX_SHARD_RUNS_PER_TICK = 32
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


def _shard_digests(shards: Sequence[Shard]) -> dict[str, str]:
    return {shard.key: shard.fingerprint[:16] for shard in shards}


@dg.sensor(
    name="corpus_change_sensor",
    target=[CORPUS_SHARDS_KEY, RAW_ASSET],
    minimum_interval_seconds=CORPUS_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def corpus_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Keeps the `corpus_shards` partitions equal to the corpus on disk, and re-ingests
    what changed.

    Watches the lasting corpus sources (env SYNTH_ASSETS_CORPUS_PATHS, else [raw_stack_plus]
    sources in synth_assets.toml, else this Python's standard library: what the ingest reads
    when the launchpad names no sources) with listing fingerprints (paths, sizes and mtimes
    of the files the ingest reads, hashed per shard; no file is opened) kept in the cursor.

    Every tick registers new shards as partitions and removes those whose files are gone.
    First tick: launches nothing, unless `raw_stack_plus` was never materialized, in which
    case it requests it (it ingests every shard itself). Later ticks request a run of each
    changed shard (raw_stack_plus follows through its automation condition once they are
    in); more than MAX_SHARD_RUNS_PER_TICK changed shards, or only removed ones, request
    one raw_stack_plus run instead."""
    state = _read_cursor(context.cursor)
    paths = watched_corpus_paths()
    fingerprint = corpus_fingerprint(paths)
    for path in fingerprint.missing:
        context.log.warning(f"corpus path does not exist: {path}")
    registered = set(context.instance.get_dynamic_partitions(corpus_shard_partitions.name))
    config = lasting_config()
    shards = plan_shards(default_sources(), config.files_per_shard, config.exclude_dirs, registered, keep_paths=False)
    digests = _shard_digests(shards)
    partition_requests = []
    added = [key for key in digests if key not in registered]
    removed = sorted(registered - set(digests))
    if added:
        partition_requests.append(corpus_shard_partitions.build_add_request(added))
    if removed:
        partition_requests.append(corpus_shard_partitions.build_delete_request(removed))

    changes = int(state.get("changes", 0))
    previous = state.get("digest")
    runs: list[dg.RunRequest] = []
    reason = None
    tags = {"synth_assets/trigger": "corpus_change", "synth_assets/corpus_fingerprint": fingerprint.digest[:16]}
    if previous is None:
        if context.instance.get_latest_materialization_event(RAW_ASSET) is None:
            reason = "raw_stack_plus was never materialized"
            runs.append(dg.RunRequest(run_key=f"corpus-change-{changes + 1}-{fingerprint.digest[:12]}",
                                      asset_selection=[RAW_ASSET], tags=tags))
    elif previous != fingerprint.digest:
        before = state.get("shards", {})
        changed = [key for key, digest in digests.items() if before.get(key) != digest]
        gone = set(before) - set(digests)
        reason = (
            f"corpus changed ({state.get('files', '?')} -> {fingerprint.files} files): "
            f"{len(changed)} shard(s) new or changed, {len(gone)} gone"
        )
        if changed and len(changed) <= MAX_SHARD_RUNS_PER_TICK:
            runs.extend(
                dg.RunRequest(
                    # a counter, not only the digest: a shard that changes back must run again
                    run_key=f"corpus-shard-{changes + 1}-{key}-{digests[key]}",
                    asset_selection=[CORPUS_SHARDS_KEY],
                    partition_key=key,
                    tags=tags,
                )
                for key in changed
            )
        elif changed or gone:
            runs.append(dg.RunRequest(run_key=f"corpus-change-{changes + 1}-{fingerprint.digest[:12]}",
                                      asset_selection=[RAW_ASSET], tags=tags))
    if runs:
        changes += 1
    cursor = json.dumps({"digest": fingerprint.digest, "files": fingerprint.files, "changes": changes, "shards": digests})
    if not runs:
        skip = (
            "first tick: recorded the corpus fingerprint" if previous is None else "corpus unchanged"
        ) + f" ({fingerprint.files} files in {len(digests)} shard(s) under {len(paths)} path(s))"
        return dg.SensorResult(skip_reason=dg.SkipReason(skip), cursor=cursor,
                               dynamic_partitions_requests=partition_requests)
    context.log.info(reason)
    return dg.SensorResult(run_requests=runs, cursor=cursor, dynamic_partitions_requests=partition_requests)
