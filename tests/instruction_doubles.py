"""Chat responders for the OpenAI test double that play the instruction methods' model:
they read which prompt arrived (by its JSON schema and text) and answer deterministically.
The Self-Instruct responder plants near-duplicates that the ROUGE-L filter must remove."""

from __future__ import annotations

import hashlib
import json
import random
import re

CODE_OUTPUT = "```python\ndef add_one(x):\n    return x + 1\n\nassert add_one(1) == 2\n```"
FAILING_CODE_OUTPUT = "```python\ndef add_two(x):\n    return x + 1\n\nassert add_two(1) == 3\n```"


BASE_SEED = 1234  # LLMResource.seed's default
GENERATED = re.compile(r"^Implement (?:\w+ ){5}helper returning \w+ values$")


def schema_properties(body: dict) -> list[str]:
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    return list((schema.get("properties") or {}).keys())


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def rng_for(text: str) -> random.Random:
    return random.Random(hashlib.sha256(text.encode()).hexdigest())


def fresh_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(3)) for _ in range(n)]


def unique_instruction(rng: random.Random, classification: bool = False) -> str:
    words = fresh_words(rng, 6)
    if classification:
        return f"Classify whether the {words[0]} {words[1]} {words[2]} is {words[3]} or {words[4]}"
    return f"Implement {' '.join(words[:5])} helper returning {words[5]} values"


def near_duplicate(instruction: str) -> str:
    """One word changed: ROUGE-L with the original stays well above 0.7 for 6+ words."""
    words = instruction.rstrip(".").split()
    words[-1] = "quickly" if words[-1] != "quickly" else "slowly"
    return " ".join(words)


def self_instruct_responder(body: dict) -> str:
    properties = schema_properties(body)
    text = user_text(body)
    rng = rng_for(text)
    if properties == ["instruction"]:
        # One task per call; what it plants depends on the call's position in its round
        # (the request's seed is the resource's base seed + sample_index = position).
        shown = re.findall(r"^Task \d+: (.+)$", text, flags=re.MULTILINE)
        generated = [t for t in shown if GENERATED.match(t)]  # this double's tasks, not seeds
        position = body["seed"] - BASE_SEED
        round_key = len(generated)  # 0 in round 1, 2 afterwards: a different fresh task per round
        planted = [
            unique_instruction(rng_for(f"{round_key}:{position}")),
            near_duplicate(shown[0]),  # near-duplicate of a pool task shown in the prompt
            "Draw an image of a binary tree using turtle",
            "Sort a list.",
            unique_instruction(rng_for(f"{round_key}:{position}"), classification=True),
            # round 1: near-duplicate of the task position 0 wrote a moment ago (same round);
            # later rounds: of a generated task from an earlier round
            near_duplicate(generated[0] if generated else unique_instruction(rng_for(f"{round_key}:{position - 5}"))),
        ]
        return json.dumps({"instruction": planted[position % len(planted)]})
    if properties == ["is_classification"]:
        task = re.findall(r"^Task: (.+)$", text, flags=re.MULTILINE)[-1]
        return json.dumps({"is_classification": task.startswith("Classify")})
    if properties == ["output", "input"]:
        return json.dumps({"output": "Yes", "input": "a sample to classify"})
    if properties == ["input", "output"]:
        task = re.findall(r"^Task: (.+)$", text, flags=re.MULTILINE)[-1]
        kind = int(hashlib.sha256(task.encode()).hexdigest(), 16) % 3
        return json.dumps({"input": "", "output": [CODE_OUTPUT, FAILING_CODE_OUTPUT, "The answer is 42."][kind]})
    raise AssertionError(f"unexpected prompt: {properties} {text[:200]}")


def alpaca_responder(body: dict) -> str:
    """One task per call about the prompt's topic; a share planted as near-duplicates of the
    first example shown, and one with an empty output."""
    text = user_text(body)
    assert schema_properties(body) == ["instruction", "input", "output"], schema_properties(body)
    topic, subtopic = re.search(r"The task is about (.+?) \((.+?)\) and written for", text).groups()
    example = re.search(r"^1\. Instruction: (.+)$", text, flags=re.MULTILINE).group(1)
    digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    rng = rng_for(text)
    if digest % 4 == 0:
        return json.dumps({"instruction": near_duplicate(example), "input": "", "output": "Done."})
    if digest % 4 == 1:
        return json.dumps({"instruction": f"Explain {subtopic} in {topic} for {' '.join(fresh_words(rng, 3))}", "input": "", "output": ""})
    return json.dumps({
        "instruction": f"Write a function about {subtopic} ({topic}) named {' '.join(fresh_words(rng, 4))}",
        "input": "<noinput>", "output": CODE_OUTPUT,
    })


def self_qa_responder(body: dict) -> str:
    text = user_text(body)
    rng = rng_for(text)
    if schema_properties(body) == ["questions"]:
        module = re.search(r'"""(\w+)', text).group(1)
        fresh = f"What does the {module} module provide for {' '.join(fresh_words(rng, 3))} users"
        return json.dumps({"questions": [
            fresh,
            near_duplicate(fresh),
            "What does this code return when called twice",
            f"How would you test the {module} helpers with {' '.join(fresh_words(rng, 3))}",
            f"Why does {module} define {' '.join(fresh_words(rng, 4))} constants",
        ]})
    question = re.search(r"based on the content above: (.+)\n", text).group(1)
    if question.startswith("How would you test"):
        return "According to the text, you cannot."
    return f"It provides helpers; for example:\n{CODE_OUTPUT}"


def evol_responder(body: dict) -> str:
    """Evolutions whose fate depends on a hash of the given prompt: copied prompt words,
    unchanged, refused response, judged Equal, or a real evolution."""
    text = user_text(body)
    properties = schema_properties(body)
    if properties == ["prompt"]:
        given = re.search(r"#(?:The )?Given Prompt#:\n(.+?)\nGive JSON", text, flags=re.DOTALL).group(1)
        fate = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5
        words = " ".join(fresh_words(rng_for(text), 2))
        evolved = [
            f"#Rewritten Prompt#: {given}", given, f"{given} REFUSE {words}", f"{given} SAMEWISE {words}",
            f"{given} and also handle {words} inputs",
        ][fate]
        return json.dumps({"prompt": evolved})
    if properties == ["judgement"]:
        second = re.search(r"The Second Prompt: (.+)\nYour Judgement", text, flags=re.DOTALL).group(1)
        return json.dumps({"judgement": "Equal" if "SAMEWISE" in second else "Not Equal"})
    if "REFUSE" in text:
        return "Sorry, I cannot help with that."
    return f"Here is a solution:\n{CODE_OUTPUT}"


def judge_responder(body: dict) -> str:
    """Scores what a judge could see: tested code 5, code 4, prose 2."""
    assert schema_properties(body) == ["rationale", "score"], schema_properties(body)
    response = re.search(r"Response: (.+?)\n\nPlease rate", user_text(body), flags=re.DOTALL).group(1)
    score = 5 if "assert" in response else 4 if "def " in response else 2
    return json.dumps({"score": score, "rationale": f"scored {score}: {'tested code' if score == 5 else 'code' if score == 4 else 'prose only'}"})
