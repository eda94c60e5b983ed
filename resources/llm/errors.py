"""The LLM layer's exceptions.

A failed request never raises to the pipeline: it comes back as a result with status
`error`, and the exception's class name is what `llm_calls.error_class` records. Only a
configuration that cannot work raises (`LLMConfigError`), as does a closed session.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base class for LLM layer errors (configuration, local model start-up)."""


class LLMConfigError(LLMError):
    """The resource's configuration cannot work (e.g. an unknown structured output mode)."""


class UnexpectedResponse(LLMError):
    """The endpoint answered 200 with something that is not a chat completion."""


class BatchRequestError(LLMError):
    """A request failed inside an OpenAI batch (or the batch itself failed)."""


class EmbeddingShapeError(LLMError):
    """The embeddings endpoint returned a different number of vectors than inputs."""
