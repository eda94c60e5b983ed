"""The code location tests/test_termination.py launches real runs of: one asset that asks
the OpenAI test double many questions through the LLM resource, as a pipeline asset does.

Read from the environment of the code server (and so of its run workers):
TERMINATION_BASE_URL (the double), SYNTH_ASSETS_WAREHOUSE (the lake),
TERMINATION_PID_DIR (where each step process leaves its pid and its run worker's).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from resources.llm import ChatRequest, LLMResource
from resources.warehouse import Warehouse
from tests.openai_double import TEST_KEY_REF

N_QUESTIONS = 160
IN_FLIGHT = 4


def question(i: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"terminated question {i}"}])


@dg.asset
def slow_answers(context, llm: LLMResource, warehouse: Warehouse) -> dg.MaterializeResult:
    """Asks N_QUESTIONS questions, IN_FLIGHT at a time."""
    Path(os.environ["TERMINATION_PID_DIR"], f"{os.getpid()}-{os.getppid()}").touch()
    with llm.session(context, warehouse) as session:
        results = session.complete([question(i) for i in range(N_QUESTIONS)])
    return dg.MaterializeResult(metadata={"ok": sum(r.status == "ok" for r in results)})


defs = dg.Definitions(
    assets=[slow_answers],
    jobs=[dg.define_asset_job("slow_answers_job", [slow_answers])],
    resources={
        "llm": LLMResource(
            base_url=os.environ.get("TERMINATION_BASE_URL", "http://127.0.0.1:9/v1"), api_key=TEST_KEY_REF,
            model="gpt-4o-mini", max_concurrency=IN_FLIGHT, timeout_s=30.0, retry_base_delay_s=0.05,
        ),  # fmt: skip
        "warehouse": Warehouse(),
    },
)
