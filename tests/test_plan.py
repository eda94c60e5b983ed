"""synth_assets.plan: the phi-1 projection's arithmetic, priced by genai-prices."""

from __future__ import annotations

import json
from dataclasses import replace

import genai_prices
import pytest

from synth_assets.plan import (
    PHI1_TOKENS_PER_FILE,
    PlanSettings,
    UnknownModelPrice,
    main,
    plan,
)

THROUGHPUTS = {
    "ingest_dedup_chars_per_cpu_s": 2e6,
    "scoring_chars_per_cpu_s": 4e6,
    "llm_client_cpu_s_per_call": 0.01,
    "ingest_dedup_peak_rss_bytes_per_doc": 16_384.0,
}
LLM_STAGES = ("grading sample", "textbook generation", "exercise generation")


def settings(tokens: float = 35e9, model: str = "gpt-4o-mini", workers: int = 64) -> PlanSettings:
    return PlanSettings(
        tokens=tokens, workers=workers, model=model, grader_model=model, textbook_tokens=1e9 * tokens / 35e9,
        exercise_tokens=180e6 * tokens / 35e9, throughputs=THROUGHPUTS, llm_in_flight=16 * workers,
    )  # fmt: skip


def by_stage(stages):
    return {s.stage: s for s in stages}


def test_phi1_pool_gives_phi1_sizes():
    stages = by_stage(plan(settings()))
    assert stages["ingest/dedup"].documents == 35_000_000 == 35e9 / PHI1_TOKENS_PER_FILE
    # phi-1 section 2.1: ~0.3% of the files graded (~100k); section 2.2: ~1B + ~180M tokens generated
    assert stages["grading sample"].llm_calls == 105_000
    assert stages["textbook generation"].output_tokens == pytest.approx(1e9, rel=1e-3)
    assert stages["exercise generation"].output_tokens == pytest.approx(180e6, rel=1e-3)
    assert stages["ingest/dedup"].llm_calls == stages["classifier scoring"].llm_calls == 0
    assert stages["ingest/dedup"].dollars == stages["classifier scoring"].dollars == 0


def test_calls_and_tokens_scale_with_the_pool():
    small, large = by_stage(plan(settings(35e9))), by_stage(plan(settings(70e9)))
    for name in small:
        assert large[name].documents == pytest.approx(2 * small[name].documents, abs=2)
        assert large[name].llm_calls == pytest.approx(2 * small[name].llm_calls, abs=2)
        assert large[name].input_tokens == pytest.approx(2 * small[name].input_tokens, rel=1e-4)
        assert large[name].output_tokens == pytest.approx(2 * small[name].output_tokens, rel=1e-4)
        assert large[name].dollars == pytest.approx(2 * small[name].dollars, rel=1e-4)
    assert small["grading sample"].llm_calls > 0 and small["textbook generation"].output_tokens > 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "gpt-3.5-turbo"])
def test_dollars_equal_genai_prices_for_the_same_tokens(model):
    for stage in plan(settings(model=model)):
        if stage.stage not in LLM_STAGES:
            continue
        usage = genai_prices.Usage(input_tokens=stage.input_tokens, output_tokens=stage.output_tokens)
        expected = float(genai_prices.calc_price(usage, model_ref=model, provider_id="openai").total_price)
        assert stage.dollars == pytest.approx(expected, rel=1e-9)
        assert stage.model == model


def test_cpu_stage_wall_time_follows_throughput_and_workers():
    base = by_stage(plan(settings(workers=64)))["ingest/dedup"]
    # 35B tokens x 4 characters / 2M characters per CPU second = 70,000 CPU s
    assert base.cpu_hours == pytest.approx(35e9 * 4 / 2e6 / 3600)
    assert base.wall_hours == pytest.approx(base.cpu_hours / 64)
    faster = replace(settings(workers=64), throughputs={**THROUGHPUTS, "ingest_dedup_chars_per_cpu_s": 4e6})
    assert by_stage(plan(faster))["ingest/dedup"].wall_hours == pytest.approx(base.wall_hours / 2)


def test_unknown_model_is_an_error_naming_it(tmp_path, capsys):
    with pytest.raises(UnknownModelPrice, match="no-such-model-x1"):
        plan(settings(model="no-such-model-x1"))
    result = tmp_path / "scale.json"
    result.write_text(json.dumps({"throughputs": THROUGHPUTS}))
    with pytest.raises(SystemExit) as exited:
        main(["--model", "no-such-model-x1", "--compare", "--throughputs", str(result)])
    assert exited.value.code == 2
    assert "no-such-model-x1" in capsys.readouterr().err


def test_main_reads_a_bench_result_and_prints_every_stage(tmp_path, capsys):
    result = tmp_path / "scale.json"
    result.write_text(json.dumps({"throughputs": THROUGHPUTS}))
    assert main(["--tokens", "35e9", "--workers", "64", "--throughputs", str(result), "--compare", "gpt-4"]) == 0
    out = capsys.readouterr().out
    for name in ("ingest/dedup", *LLM_STAGES, "classifier scoring", "seed article", "$3,000", "gpt-4 $"):
        assert name in out
