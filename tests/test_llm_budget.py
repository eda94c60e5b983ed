"""A budget that always binds: an unpriced model cannot run under one on a remote endpoint,
a price override makes it priceable, reservations price max_tokens at the output rate,
and an answer without usage is charged its reservation."""

from __future__ import annotations

import dagster as dg
import pytest

from resources.llm import ChatRequest, LLMResource
from resources.llm.errors import LLMConfigError
from resources.llm.pricing import price_usd
from tests.openai_double import OpenAIDouble, chat_usage, TEST_KEY_REF

# A fine-tune that genai-prices cannot price (OpenAI's own "ft:gpt-4o-mini:..." ids it prices
# at the fine-tuned rate: see the last test).
FINE_TUNED = "acme-coder-ft-7b"


def make_llm(server: OpenAIDouble, **overrides) -> LLMResource:
    settings = dict(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                    embedding_model="text-embedding-3-small", max_concurrency=1, retry_base_delay_s=0.01)  # fmt: skip
    settings.update(overrides)
    return LLMResource(**settings)


def ask(i: int, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"budget question {i}"}], **kw)


def test_an_unpriced_model_with_a_budget_is_a_configuration_error_before_any_call(warehouse):
    with OpenAIDouble() as server:
        with pytest.raises(LLMConfigError) as error:
            with make_llm(server, model=FINE_TUNED, max_cost_usd=5.0).session(None, warehouse) as session:
                session.complete([ask(1)])
        assert server.paths == []  # not one request
    message = str(error.value)
    assert FINE_TUNED in message and "price_overrides" in message and "max_cost_usd" in message


def test_the_error_fails_the_materialization_with_its_message(warehouse):
    @dg.asset
    def graded(context, llm: LLMResource) -> None:
        with llm.session(context, warehouse) as session:
            session.complete([ask(1)])

    with OpenAIDouble() as server:
        result = dg.materialize([graded], resources={"llm": make_llm(server, model=FINE_TUNED)}, raise_on_error=False)
        assert server.paths == []
    assert not result.success
    assert FINE_TUNED in str(result.failure_data_for_node("graded").error)


def test_a_price_override_prices_the_model_and_the_budget_binds(warehouse):
    price = {"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 12.0}
    with OpenAIDouble() as server:
        llm = make_llm(server, model=FINE_TUNED, price_overrides={FINE_TUNED: price}, max_cost_usd=1.0)
        with llm.session(None, warehouse) as session:
            [result] = session.complete([ask(1)])
        usage = chat_usage(server.chat_requests[0], result.text)
    expected = (usage["prompt_tokens"] * 3.0 + usage["completion_tokens"] * 12.0) / 1e6
    assert result.status == "ok" and result.cost_usd == pytest.approx(expected)
    assert warehouse.query("SELECT cost_usd FROM llm_calls")["cost_usd"].to_list() == [pytest.approx(expected)]


def test_no_budget_or_the_local_model_needs_no_price(warehouse):
    with OpenAIDouble() as server:
        with make_llm(server, model=FINE_TUNED, max_cost_usd=None).session(None, warehouse) as session:
            [result] = session.complete([ask(1)])
    assert result.status == "ok" and result.cost_usd is None


def test_the_reservation_prices_max_tokens_at_the_output_rate(warehouse):
    # 10,000 completion tokens cost $0.006 at gpt-4o-mini's output rate ($0.60/Mtok) but
    # only $0.0015 at its input rate: a $0.004 budget must refuse the request.
    assert price_usd("gpt-4o-mini", 0, 10_000) == pytest.approx(0.006)
    with OpenAIDouble() as server:
        with pytest.raises(dg.Failure):
            with make_llm(server, max_cost_usd=0.004).session(None, warehouse) as session:
                [refused] = session.complete([ask(1, max_tokens=10_000)])
        assert refused.status == "budget_exceeded" and server.chat_requests == []
        with make_llm(server, max_cost_usd=0.004).session(None, warehouse) as session:
            [sent] = session.complete([ask(1, max_tokens=5_000)])  # $0.003 at most: fits
    assert sent.status == "ok"


def test_answers_without_usage_are_charged_their_reservation(warehouse):
    # Each request may cost up to 1000 x $0.60/Mtok + its prompt ~ $0.0006: a $0.002 budget
    # allows about three before it is spent, even though no answer reports its cost.
    with OpenAIDouble(omit_usage=True) as server:
        with pytest.raises(dg.Failure):
            with make_llm(server, max_cost_usd=0.002).session(None, warehouse) as session:
                results = session.complete([ask(i, max_tokens=1000) for i in range(10)])
        sent = len(server.chat_requests)
    assert 2 <= sent <= 4
    assert [r.status for r in results].count("budget_exceeded") == 10 - sent
    assert all(r.cost_usd is None for r in results if r.status == "ok")


def test_openai_fine_tunes_are_priced_at_the_fine_tuned_rate(warehouse):
    # OpenAI bills fine-tuned gpt-4o-mini at $0.30 / $1.20 per Mtok, twice the base model.
    name = "ft:gpt-4o-mini-2024-07-18:acme:grader:9xYz"
    assert price_usd(name, 1_000_000, 1_000_000) == pytest.approx(1.5)
    with OpenAIDouble() as server:
        with make_llm(server, model=name, max_cost_usd=1.0).session(None, warehouse) as session:
            [result] = session.complete([ask(1)])
        usage = chat_usage(server.chat_requests[0], result.text)
    assert result.cost_usd == pytest.approx((usage["prompt_tokens"] * 0.30 + usage["completion_tokens"] * 1.20) / 1e6)
