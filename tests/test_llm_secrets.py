"""Secrets: any piece of the api key is masked in error text, and the key is configured
only as a reference to an environment variable (never a literal in a run's config)."""

from __future__ import annotations

import dagster as dg
import pytest

from resources.llm import ChatRequest, LLMResource
from resources.llm.endpoint import redact_secret
from resources.llm.errors import LLMConfigError
from tests.openai_double import OpenAIDouble

KEY = "sk-proj-Q7vN2mXc9LpT4rWz8bKd1FhJ6sYa3GeU"
KEY_ENV = "SYNTH_TEST_SECRETS_KEY"
REMOTE = "https://api.example.invalid/v1"


def pieces(text: str, secret: str = KEY, size: int = 4) -> list[str]:
    """Every `size`-character piece of the secret that occurs in `text`."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1) if secret[i : i + size] in text]


@pytest.fixture(autouse=True)
def _key_in_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def test_any_four_character_piece_of_the_key_is_masked():
    openai_401 = f"Incorrect API key provided: sk-proj-{'*' * 20}{KEY[-4:]}. You can find your API key at ..."
    masked = redact_secret(openai_401, KEY)
    assert pieces(masked) == [] and "You can find your API key at" in masked
    assert redact_secret(f"key={KEY} and again {KEY[10:22]}", KEY) == "key=*** and again ***"
    assert redact_secret(f"tail ...{KEY[-4:]}!", KEY) == "tail ...***!"
    assert redact_secret("nothing of it here", KEY) == "nothing of it here"


def test_a_401_that_echoes_the_key_tail_is_redacted_in_results_and_ledger(warehouse):
    with OpenAIDouble() as server:
        server.fail_next(status=401, message=f"Incorrect API key provided: sk-proj-****...{KEY[-4:]}")
        llm = LLMResource(base_url=server.base_url, api_key=f"env:{KEY_ENV}", model="gpt-4o-mini")
        with llm.session(None, warehouse) as session:
            [result] = session.complete([ChatRequest(messages=[{"role": "user", "content": "hi"}])])
        assert server.chat_requests  # the key was really sent
    assert result.status == "error" and "Incorrect API key provided" in result.error
    assert pieces(result.error) == []
    for table in ("llm_calls", "llm_cache"):
        assert pieces(warehouse.query(f"SELECT * FROM {table}").write_csv()) == []


def test_dg_env_var_is_kept_as_a_reference_and_resolved_at_session_start(warehouse):
    llm = LLMResource(base_url=REMOTE, api_key=dg.EnvVar(KEY_ENV))
    assert llm.api_key == f"env:{KEY_ENV}"  # what Dagster stores with the run: the name only
    with OpenAIDouble() as server:
        seen = []

        @dg.asset
        def probe(context, llm: LLMResource) -> None:
            with llm.session(context, warehouse) as session:
                seen.append(session.endpoint.api_key)

        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [probe], resources={"llm": LLMResource(base_url=server.base_url, api_key=dg.EnvVar(KEY_ENV))}, instance=instance
        )
    assert result.success and seen == [KEY]
    run = instance.get_run_by_id(result.run_id)
    assert KEY not in repr(run.run_config) and pieces(repr(run)) == []


def test_a_literal_key_is_refused_for_a_remote_endpoint_without_echoing_it(warehouse):
    literal = "sk-live-Zq81Xw0Pv6Rm"
    with pytest.raises(LLMConfigError) as error:
        with LLMResource(base_url=REMOTE, api_key=literal).session(None, warehouse):
            pass
    message = str(error.value)
    assert "env:OPENAI_API_KEY" in message and pieces(message, literal) == []


def test_a_literal_typed_in_the_launchpad_fails_the_run(warehouse):
    @dg.asset
    def uses_llm(context, llm: LLMResource) -> None:
        with llm.session(context, warehouse):
            pass

    literal = "sk-live-Jc47Nb2Wd9Ku"
    result = dg.materialize(
        [uses_llm],
        resources={"llm": LLMResource(base_url=REMOTE, api_key=dg.EnvVar(KEY_ENV))},
        run_config={"resources": {"llm": {"config": {"api_key": literal}}}},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("uses_llm").error.to_string()
    assert "api_key must name an environment variable" in error and pieces(error, literal) == []


def test_a_reference_to_an_unset_variable_says_which(warehouse, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMConfigError, match=KEY_ENV):
        with LLMResource(base_url=REMOTE, api_key=f"env:{KEY_ENV}").session(None, warehouse):
            pass


def test_a_literal_key_is_refused_for_a_loopback_endpoint_too(warehouse):
    """A local server takes any placeholder, but a literal is still stored with the run's
    configuration, so it is refused there as everywhere: put the placeholder in an
    environment variable."""
    literal = "sk-local-Hq27Vd5Lx8Pe"
    with pytest.raises(LLMConfigError) as error:
        with LLMResource(base_url="http://127.0.0.1:8080/v1", api_key=literal).session(None, warehouse):
            pass
    assert pieces(str(error.value), literal) == []
