"""How a textbook section is asked for: `direct` (one call with the reconstructed
extract prompt) or `iterative` (TinyStories-Instruct, Eldan & Li 2023 section 4.2:
the LLM writes a summary, then a sentence the section must contain, then the section
from the prompt, the summary and the sentence). Every intermediate is kept for the row;
a plan whose summary or sentence failed gets no final call and a reject reason.

phi-1's sections always carry code, so a section without a closed code block is asked
again as a new (cached) sample, up to `max_samples` answers; the answers it replaced
are kept for the rejects table with their reason (the bundled 135M model closes a code
block in about half of its sections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from resources.llm import ChatRequest, ChatResult
from synth_assets.synthesis.prompt_plans import TextbookPrompt
from synth_assets.synthesis.textbook_extract import (
    code_blocks,
    direct_messages,
    final_messages,
    first_sentence,
    sentence_messages,
    summary_messages,
)

GENERATION_MODES = ("direct", "iterative")


@dataclass
class Intermediates:
    """What the iterative steps produced for one plan (empty in direct mode)."""

    generation_mode: str = "direct"
    summary: str | None = None
    required_sentence: str | None = None
    summary_cache_key: str | None = None
    sentence_cache_key: str | None = None
    prompt_tokens: int = 0  # of the intermediate calls
    completion_tokens: int = 0
    rejected: dict = field(default_factory=dict)  # {reason, error, raw_text, cache_key} when a step failed
    sample_index: int = 0  # which answer of the section the row is
    superseded: list[ChatResult] = field(default_factory=list)  # earlier answers without code, in order

    def columns(self) -> dict:
        return {"generation_mode": self.generation_mode, "summary": self.summary,
                "required_sentence": self.required_sentence, "summary_cache_key": self.summary_cache_key,
                "sentence_cache_key": self.sentence_cache_key}


@dataclass(frozen=True)
class Lengths:
    section: int  # completion cap of the section
    summary: int = 80
    sentence: int = 48


def _request(messages: list[dict], plan: TextbookPrompt, max_tokens: int, temperature: float | None,
             sample_index: int = 0) -> ChatRequest:
    return ChatRequest(messages=messages, temperature=temperature, max_tokens=max_tokens, row_id=plan.prompt_id,
                       sample_index=sample_index)


def has_code(result: ChatResult) -> bool:
    return bool(code_blocks(result.text or ""))


def sections_with_code(
    session, plans: list[TextbookPrompt], positions: list[int], messages_of, steps: list[Intermediates],
    lengths: Lengths, temperature: float | None, max_samples: int,
) -> dict[int, ChatResult]:
    """The section of every plan at `positions`: answers without a closed code block are
    asked again as the next sample, up to `max_samples` answers; the last answer is the
    section and the ones it replaced go to `steps[i].superseded`."""
    results: dict[int, ChatResult] = {}
    pending = list(positions)
    for sample_index in range(max_samples):
        if not pending:
            break
        answers = session.complete([
            _request(messages_of(i), plans[i], lengths.section, temperature, sample_index) for i in pending
        ])
        again = []
        for i, answer in zip(pending, answers, strict=True):
            if i in results:
                steps[i].superseded.append(results[i])
            results[i], steps[i].sample_index = answer, sample_index
            if answer.ok and not has_code(answer):
                again.append(i)
        pending = again
    return results


def _step(intermediates: Intermediates, result: ChatResult, step: str, text: str) -> bool:
    """Account one intermediate answer; False (and the reject reason) when it is unusable."""
    intermediates.prompt_tokens += result.prompt_tokens or 0
    intermediates.completion_tokens += result.completion_tokens or 0
    if result.status != "ok":
        intermediates.rejected = {"reason": f"{step}_llm_{result.status}", "error": result.error,
                                  "raw_text": result.text or "", "cache_key": result.cache_key}
        return False
    if not text:
        intermediates.rejected = {"reason": f"empty_{step}", "error": None, "raw_text": result.text or "",
                                  "cache_key": result.cache_key}
        return False
    return True


def generate_sections(
    session, plans: list[TextbookPrompt], mode: str, lengths: Lengths, temperature: float | None = None,
    max_samples: int = 1,
) -> tuple[list[Intermediates], list[ChatResult | None]]:
    """(intermediates per plan, the section's result per plan; None when an
    intermediate step failed), in plan order."""
    if mode not in GENERATION_MODES:
        raise ValueError(f"generation_mode must be one of {', '.join(GENERATION_MODES)}, not {mode!r}")
    if mode == "direct":
        steps = [Intermediates() for _ in plans]
        found = sections_with_code(session, plans, list(range(len(plans))), lambda i: direct_messages(plans[i]),
                                   steps, lengths, temperature, max_samples)
        return steps, [found[i] for i in range(len(plans))]
    steps = [Intermediates(generation_mode="iterative") for _ in plans]
    summaries = session.complete([_request(summary_messages(p), p, lengths.summary, temperature) for p in plans])
    alive = []
    for index, result in enumerate(summaries):
        summary = " ".join((result.text or "").split())
        steps[index].summary, steps[index].summary_cache_key = summary or None, result.cache_key
        if _step(steps[index], result, "summary", summary):
            alive.append(index)
    sentences = session.complete(
        [_request(sentence_messages(plans[i], steps[i].summary), plans[i], lengths.sentence, temperature) for i in alive]
    )
    ready = []
    for index, result in zip(alive, sentences, strict=True):
        sentence = first_sentence(result.text or "")
        steps[index].required_sentence, steps[index].sentence_cache_key = sentence or None, result.cache_key
        if _step(steps[index], result, "sentence", sentence):
            ready.append(index)
    finals = sections_with_code(
        session, plans, ready, lambda i: final_messages(plans[i], steps[i].summary, steps[i].required_sentence),
        steps, lengths, temperature, max_samples,
    )
    return steps, [finals.get(i) for i in range(len(plans))]
