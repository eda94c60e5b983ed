"""Prices: genai-prices for public models, the project table for local ones, None when unknown."""

from __future__ import annotations

import logging

import genai_prices
import pytest

from resources.llm.pricing import PRICE_OVERRIDES, ModelPrice, price_usd


def test_gpt_4o_mini_is_priced_from_genai_prices():
    # OpenAI list price: $0.15 / Mtok input, $0.60 / Mtok output
    assert price_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert price_usd("gpt-4o-mini", 2_000, 500) == pytest.approx(0.0003 + 0.0003)


def test_batch_rate_is_half_price():
    online = price_usd("gpt-4o-mini", 10_000, 2_000)
    assert price_usd("gpt-4o-mini", 10_000, 2_000, batch=True) == pytest.approx(online / 2)


def test_cached_prompt_tokens_are_cheaper():
    assert price_usd("gpt-4o-mini", 1_000_000, 0, cached_tokens=1_000_000) < price_usd("gpt-4o-mini", 1_000_000, 0)


def test_embedding_model_is_found_under_openai():
    assert price_usd("text-embedding-3-small", 1_000_000, 0) == pytest.approx(0.02)


def test_local_aliases_are_free():
    assert price_usd("smollm2-135m-instruct", 5_000, 5_000) == 0.0
    assert price_usd("SmolLM2-135M-Embed", 5_000, 0) == 0.0


def test_override_table_prices_self_hosted_models(monkeypatch):
    monkeypatch.setitem(PRICE_OVERRIDES, "our-vllm-coder", ModelPrice(input_per_mtok=0.1, output_per_mtok=0.4))
    assert price_usd("our-vllm-coder", 1_000_000, 1_000_000) == pytest.approx(0.5)
    assert price_usd("our-vllm-coder", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.25)


def test_unknown_model_is_none_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="resources.llm.pricing")
    assert price_usd("nobody-knows-this-model-v9", 10, 10) is None
    assert price_usd("nobody-knows-this-model-v9", 20, 20) is None
    warnings = [r for r in caplog.records if "nobody-knows-this-model-v9" in r.getMessage()]
    assert len(warnings) == 1 and "unknown" in warnings[0].getMessage()


def test_context_length_tiers_price_long_prompts_at_the_higher_rate():
    # Gemini 2.5 Pro: $1.25 / $10 per million tokens up to 200k prompt tokens, $2.50 / $15 above.
    short = price_usd("gemini-2.5-pro", 100_000, 1_000)
    long = price_usd("gemini-2.5-pro", 300_000, 1_000)
    assert short == pytest.approx(100_000 * 1.25e-6 + 1_000 * 10e-6)
    assert long == pytest.approx(300_000 * 2.50e-6 + 1_000 * 15e-6)
    assert long == pytest.approx(float(genai_prices.calc_price(
        genai_prices.Usage(input_tokens=300_000, output_tokens=1_000), model_ref="gemini-2.5-pro").total_price))
    # linear models keep the fast per-token path and the same answer
    assert price_usd("gpt-4o-mini", 300_000, 1_000) == pytest.approx(300_000 * 0.15e-6 + 1_000 * 0.6e-6)
