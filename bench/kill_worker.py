"""Issue 13's own check: a `ray start` cluster, the project pointed at it with RAY_ADDRESS,
raw_stack_plus and annotated_sample materialized by `dagster asset materialize`, one Ray
worker SIGKILLed while the gradings run; then how many requests the test server answered
more than once (0 expected: answers already journalled come from the cache, answers in
flight at the kill from the relay actor, resources/llm/relay.py).

    .venv/bin/python -m bench.kill_worker        # ~1.5 minutes

It runs `ray stop --force` before and after: it stops any Ray cluster on this machine."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.openai_double import OpenAIDouble

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "sk-test-not-a-secret"  # the double takes any key; workers and the relay read it from their env
PACKAGES = ("email", "json", "asyncio", "logging", "concurrent")  # of the standard library: ~74 documents


def ray_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env)


def run(scratch: Path, latency_s: float, kill_after: int) -> dict:
    (scratch / "home").mkdir()
    (scratch / "synth_assets.toml").write_text(
        "[raw_stack_plus]\nfiles_per_shard = 40\n\n[annotated_sample]\nmin_docs = 96\nmax_docs = 96\nbatch_size = 8\n"
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    started = ray_cli("start", "--head", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                      env={**os.environ, "OPENAI_API_KEY": KEY})
    if started.returncode != 0:
        raise RuntimeError(f"ray start failed: {started.stderr[-500:]}")
    with OpenAIDouble(latency_s=latency_s) as server:
        env = {
            **os.environ, "RAY_ADDRESS": "auto", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY,
            "SYNTH_ASSETS_CHAT_MODEL": "gpt-4o-mini", "SYNTH_ASSETS_WAREHOUSE": str(scratch / "lake"),
            "SYNTH_ASSETS_CORPUS_PATHS": os.pathsep.join(str(stdlib / name) for name in PACKAGES),
            "SYNTH_ASSETS_SETTINGS": str(scratch / "synth_assets.toml"), "DAGSTER_HOME": str(scratch / "home"),
        }  # fmt: skip
        began = time.time()
        with open(scratch / "dagster.log", "w") as log:
            dagster = subprocess.Popen(
                [str(BIN / "dagster"), "asset", "materialize", "-m", "synth_assets.definitions",
                 "--select", "raw_stack_plus,annotated_sample"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
            killed = None
            while dagster.poll() is None:
                time.sleep(0.2)
                if killed is None and len(server.answered) >= kill_after:
                    workers = subprocess.run(["pgrep", "-f", "ray::run_task"], capture_output=True, text=True).stdout.split()
                    if workers:
                        killed = {"pid": int(workers[0]), "after_answers": len(server.answered),
                                  "at_s": round(time.time() - began, 1)}
                        os.kill(killed["pid"], signal.SIGKILL)
        asked = Counter(json.dumps(body.get("messages"), sort_keys=True) for body in server.answered if "messages" in body)
    return {
        "dagster_exit": dagster.returncode, "wall_s": round(time.time() - began, 1), "killed": killed,
        "answers": sum(asked.values()), "distinct_requests": len(asked),
        "answered_more_than_once": sum(1 for n in asked.values() if n > 1), "log": str(scratch / "dagster.log"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the double takes per answer")
    parser.add_argument("--kill-after", type=int, default=30, help="answers before a worker is killed")
    args = parser.parse_args(argv)
    ray_cli("stop", "--force")
    try:
        result = run(Path(tempfile.mkdtemp(prefix="bench-kill-worker-")), args.latency, args.kill_after)
    finally:
        ray_cli("stop", "--force")
    print(json.dumps(result, indent=2))
    ok = result["dagster_exit"] == 0 and result["killed"] is not None and result["answered_more_than_once"] == 0
    print("PASS" if ok else "FAIL", "- a worker killed mid-run; requests answered more than once:",
          result["answered_more_than_once"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
