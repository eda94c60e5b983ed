"""The outside world: the DuckDB warehouse and the LLM endpoint (with its local model server).

Assets never open a connection or an HTTP client themselves; they ask these resources.
"""

from resources.warehouse import Warehouse

__all__ = ["Warehouse"]
from resources.llm import ChatRequest, ChatResult, LLMResource, StructuredResult  # noqa: E402

__all__ += ["LLMResource", "ChatRequest", "ChatResult", "StructuredResult"]
