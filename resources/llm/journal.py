"""The append-only local log every answer goes into the moment it arrives.

A paid answer is written here (one JSON line, flushed to the operating system) before the
caller sees it, and stays here until the recorder has committed it to `llm_cache` /
`llm_calls`. Writing a line takes microseconds and needs no lock shared with other
processes, so it never waits on the lake; the lake write follows within a second
(`recorder.py`). A process killed outright (SIGKILL, OOM, power to the container) leaves
its log behind, and the next session on the same lake replays it before it looks anything
up, so no answer that reached this process is paid for again.

The log is local to one machine: it is replayed by the next session on the same machine
(and the same lake). A run killed on one machine and re-run on another pays again for
the answers the killed run had received but not yet committed (at most about a second's
worth, `recorder.py`). The folder is named after the machine too, so a journal root on a
shared filesystem never has one machine replay, or wait on, another machine's logs (flock
is not reliable across NFS clients).

Layout, one folder per lake and machine (`journal_dir(...)`):

    <session>.lock            held (flock) by the live session that writes the segments
    <session>.<n>.jsonl       segment n: the rows taken by the recorder's n-th flush

A segment is deleted once its rows are committed. A `.lock` whose flock can be taken
belongs to a process that is gone: its segments are orphans, replayed and then deleted.
The lock file is created under a temporary name and renamed once locked, so a replayer
never mistakes a session that is starting for a dead one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

JOURNAL_DIR_ENV = "SYNTH_ASSETS_LLM_JOURNAL_DIR"
CACHE = "cache"
LEDGER = "ledger"
_TIMESTAMP_FIELDS = ("created_at",)


def journal_dir(root: str | None, location_id: str, default_root: Path) -> Path:
    """The folder for one lake on this machine: `root` (or env SYNTH_ASSETS_LLM_JOURNAL_DIR,
    else `default_root`) / a hash of the lake's location / the host name, so a log is only
    ever replayed into the lake it was meant for, by a session on the machine that wrote it."""
    base = Path(root or os.environ.get(JOURNAL_DIR_ENV) or default_root)
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    return base / hashlib.sha256(location_id.encode()).hexdigest()[:16] / host


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _decode(row: dict) -> dict:
    for name in _TIMESTAMP_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = dt.datetime.fromisoformat(row[name])
    return row


class Journal:
    """One session's log. `append` from any one thread at a time (the recorder holds its
    lock); `rotate` / `discard_through` from the recorder's flush."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.session = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        starting = directory / f"{self.session}.lock.tmp"
        self._lock_fd = os.open(starting, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.rename(starting, self.lock_path)
        self.segment = 0
        self._file: IO[str] | None = None
        self._open_segment()

    @property
    def lock_path(self) -> Path:
        return self.directory / f"{self.session}.lock"

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{self.session}.{number:06d}.jsonl"

    def _open_segment(self) -> None:
        self._file = open(self._segment_path(self.segment), "a", encoding="utf-8")

    def append(self, table: str, row: dict) -> None:
        """One row, flushed to the OS: it survives the process being killed from here on."""
        assert self._file is not None
        self._file.write(json.dumps({"t": table, "r": row}, default=_encode, ensure_ascii=False) + "\n")
        self._file.flush()

    def rotate(self) -> int:
        """Close the current segment (its rows are about to be written) and start the next;
        returns the closed segment's number for `discard_through`."""
        assert self._file is not None
        closed = self.segment
        self._file.close()
        self.segment += 1
        self._open_segment()
        return closed

    def discard_through(self, number: int) -> None:
        """Delete segments up to `number`: their rows are committed to the lake."""
        for path in self.directory.glob(f"{self.session}.*.jsonl"):
            if _segment_number(path) <= number:
                path.unlink(missing_ok=True)

    def close(self, committed: bool) -> None:
        """End the session. With `committed` every row is in the lake and the log goes;
        otherwise it stays (unlocked) for the next session to replay."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if committed:
            self.discard_through(self.segment)
            self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)


def _segment_number(path: Path) -> int:
    try:
        return int(path.name.rsplit(".", 2)[-2])
    except (IndexError, ValueError):
        return -1


def read_segment(path: Path) -> tuple[list[dict], list[dict]]:
    """(cache rows, ledger rows) of one segment. A torn last line (the process died
    mid-write) is skipped: its answer was never returned to anyone."""
    cache_rows: list[dict] = []
    ledger_rows: list[dict] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("skipping a torn line in LLM journal %s", path)
                continue
            (cache_rows if entry.get("t") == CACHE else ledger_rows).append(_decode(entry["r"]))
    return cache_rows, ledger_rows


def replay_orphans(directory: Path, write: Callable[[list[dict], list[dict]], None]) -> tuple[int, int]:
    """Write every orphaned segment in `directory` (left by a process that died) with
    `write(cache_rows, ledger_rows)`, then delete it. `write` must be idempotent (the
    rows may already be in the lake). Returns (cache rows, ledger rows) replayed."""
    if not directory.is_dir():
        return 0, 0
    replayed = [0, 0]
    sessions = {path.name.split(".", 1)[0] for path in directory.glob("*.jsonl")}
    sessions |= {path.name[: -len(".lock")] for path in directory.glob("*.lock")}
    for session in sorted(sessions):
        lock_path = directory / f"{session}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            if (directory / f"{session}.lock.tmp").exists():
                continue  # a session still starting (no segments yet)
            fd = None  # segments without a lock: their session finished cleaning up halfway
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive
            segments = sorted(directory.glob(f"{session}.*.jsonl"), key=_segment_number)
            cache_rows: list[dict] = []
            ledger_rows: list[dict] = []
            for segment in segments:
                more_cache, more_ledger = read_segment(segment)
                cache_rows += more_cache
                ledger_rows += more_ledger
            if cache_rows or ledger_rows:
                write(cache_rows, ledger_rows)
                logger.warning(
                    "replayed %d answers and %d ledger rows that a killed LLM session left in %s",
                    len(cache_rows), len(ledger_rows), directory,
                )  # fmt: skip
            replayed[0] += len(cache_rows)
            replayed[1] += len(ledger_rows)
            for segment in segments:
                segment.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    return replayed[0], replayed[1]
