"""The seed pool Self-Instruct starts from, shipped with the project, plus (optionally)
the decontaminated exercises as extra seeds.

`seeds/seed_tasks.jsonl` holds 43 coding tasks written for this project in Self-Instruct's
seed format (`{"id", "name", "instruction", "instances": [{"input", "output"}],
"is_classification"}`; Self-Instruct shipped 175 general tasks, 25 of them
classification). Ten of ours are classification tasks (finite labels: "Yes"/"No", a
complexity class, an exception name) so the output-first path has examples. Every
output that carries `assert`s runs (tests/test_instructions_seeds.py executes them).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SEED_FILE = Path(__file__).parent / "seeds" / "seed_tasks.jsonl"
EXERCISE_SEED_TABLE = "decontaminated_exercises"


@dataclass(frozen=True)
class SeedTask:
    task_id: str
    instruction: str
    input: str
    output: str
    is_classification: bool
    source: str  # "seed" (shipped) or "exercise:<exercise_id>"


@lru_cache(maxsize=2)
def load_seed_tasks(path: str | None = None) -> tuple[SeedTask, ...]:
    """The shipped seed tasks (first instance of each), in file order."""
    tasks = []
    for line in Path(path or SEED_FILE).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        instance = record["instances"][0]
        tasks.append(
            SeedTask(record["id"], record["instruction"], instance["input"], instance["output"],
                     bool(record["is_classification"]), "seed")
        )
    return tuple(tasks)


def exercise_seed_tasks(lake, n_tasks: int) -> list[SeedTask]:
    """Up to `n_tasks` decontaminated exercises as seeds ("Write a Python function `name`:
    <docstring's first line>", the function as output), taken in exercise_id order from
    the table when it exists. Read opportunistically, not a declared dependency: new
    exercises should not by themselves set off paid instruction generation."""
    if n_tasks <= 0 or not lake.table_exists(EXERCISE_SEED_TABLE):
        return []
    frame = lake.query(
        f"SELECT exercise_id, function_name, exercise, source FROM {EXERCISE_SEED_TABLE} "
        f"WHERE passed IS TRUE ORDER BY exercise_id LIMIT {int(n_tasks)}"
    )
    tasks = []
    for row in frame.iter_rows(named=True):
        doc = _docstring(row["exercise"] or "")
        if doc:
            instruction = f"Write a Python function {row['function_name']}: {doc}"
            tasks.append(SeedTask(f"exercise_{row['exercise_id']}", instruction, "", row["source"], False,
                                  f"exercise:{row['exercise_id']}"))
    return tasks


def _docstring(exercise: str) -> str | None:
    try:
        tree = ast.parse(exercise + ("\n    pass\n" if exercise.rstrip().endswith('"""') else ""))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            return doc.strip().splitlines()[0] if doc and doc.strip() else None
    return None
