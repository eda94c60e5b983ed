"""A throwaway PostgreSQL server on 127.0.0.1 for the catalog tests.

`SYNTH_ASSETS_TEST_POSTGRES` (a libpq string) points at a server someone else started;
otherwise one is made with Debian's `initdb`/`pg_ctl` in a temporary folder (as the
`postgres` user when running as root, since PostgreSQL refuses to run as root) and stopped
afterwards. `PostgresUnavailable` says why none could be had; tests skip with that reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "SYNTH_ASSETS_TEST_POSTGRES"


class PostgresUnavailable(RuntimeError):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise PostgresUnavailable(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a libpq connection string (host, port, user, dbname) for a scratch database."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    folder = tempfile.mkdtemp(prefix="synth-assets-pg-")
    if os.getuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable("running as root and there is no `postgres` user to run the server as") from exc
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as, user = ["runuser", "-u", "postgres", "--"], "postgres"
    data = os.path.join(folder, "data")
    port = _free_port()
    log = os.path.join(folder, "server.log")
    try:
        init = subprocess.run(
            [*run_as, initdb, "-D", data, "--auth=trust", "-U", user, "--no-sync"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if init.returncode:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
        start = subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "-o",
             f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if start.returncode:
            raise PostgresUnavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]}")
        created = subprocess.run(
            [_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "lake"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode:
            raise PostgresUnavailable(f"createdb failed: {created.stderr.strip()[-300:]}")
        yield f"dbname=lake host=127.0.0.1 port={port} user={user}"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60)
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)
