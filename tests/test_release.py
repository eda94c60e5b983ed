"""training_data_release: Parquet + JSONL per config, a card the Hub/`datasets` understands,
figures in the card that match the warehouse."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from resources.compute import Compute
from synth_assets.reports.training_data_release import (
    INSTRUCTION_RELEASE_COLUMNS,
    RELEASE_CONFIGS,
    ReleaseConfig,
    build_release,
    decontamination_summary,
    training_data_release,
)
from tests.test_reports import ledger_frame

EXERCISES = [
    ("ex-1", 'def add(a, b):\n    """Return a + b."""\n', "    return a + b\n", "gpt-4o-mini"),
    ("ex-2", 'def neg(x):\n    """Return -x."""\n', "    return -x\n", "gpt-4o-mini"),
]


def instruction_rows(ids: list[str], method: str) -> pl.DataFrame:
    return pl.DataFrame({
        "instruction_id": ids, "method": [method] * len(ids),
        "instruction": [f"Write a function number {i}." for i in ids], "input": [""] * len(ids),
        "output": [f"def f():\n    return '{i}'\n" for i in ids], "round": [1] * len(ids),
        "model": ["gpt-4o-mini"] * len(ids), "completion_tokens": [10] * len(ids),
    }, schema_overrides={"instruction_id": pl.Utf8, "method": pl.Utf8, "instruction": pl.Utf8, "input": pl.Utf8,
                         "output": pl.Utf8, "model": pl.Utf8, "completion_tokens": pl.Int64})


def judge_rows(rows: list[tuple[str, str, int | None]], threshold: float = 4.0) -> pl.DataFrame:
    """llm_judge as the judge writes it: (dataset, judged_id, score) -> kept, reason."""
    return pl.DataFrame({
        "dataset": [r[0] for r in rows], "judged_id": [r[1] for r in rows], "kind": ["instruction"] * len(rows),
        "score": [r[2] for r in rows], "rationale": ["because"] * len(rows), "threshold": [threshold] * len(rows),
        "kept": [r[2] is not None and r[2] >= threshold for r in rows],
        "reason": [None if r[2] is not None and r[2] >= threshold else f"below_threshold: score {r[2]} < {threshold:g}" for r in rows],
    }, schema_overrides={"score": pl.Int64, "reason": pl.Utf8})


# self_instruct: i1 kept and clean, i2 below the judge's threshold, i3 kept but contaminated;
# alpaca_instructions: its one row dropped by the judge (an empty config); self_qa: no rows.
JUDGED = [("synthetic_textbook", "s1", 5), ("synthetic_textbook", "s2", 4),
          ("code_exercises", "ex-1", 5), ("code_exercises", "ex-2", 4), ("code_exercises", "ex-6", 4),
          ("self_instruct", "i1", 5), ("self_instruct", "i2", 2), ("self_instruct", "i3", 5),
          ("alpaca_instructions", "a1", 1), ("evol_instruct", "e1", 4)]


def pipeline_tables(warehouse) -> None:
    """The released tables, the contamination reports, the judge and the ledger, as the
    pipeline stages write them (ARCHITECTURE.md)."""
    warehouse.write_table("filtered_textbook", pl.DataFrame({
        "doc_id": ["d1", "d2", "d3"],
        "content": ["import os\n", "def f():\n    pass\n", "x = 1\n"],
        "license": ["PSF-2.0"] * 3,
        "n_tokens": [3, 8, 4],
        "quality_score": [0.9, 0.7, 0.55],
        "classifier_version": ["clf-1"] * 3,
    }))
    warehouse.write_table("synthetic_textbook", pl.DataFrame({
        "section_id": ["s1", "s2"],
        "prompt_id": ["p1", "p2"],
        "text": ["Lists hold items.\n```python\nxs = [1]\n```", "Loops repeat."],
        "model": ["gpt-4o", "gpt-4o"],
        "prompt_version": ["v1", "v1"],
        "tokens": [120, 80],
    }))
    # clean exercises, one of which failed its tests (kept by decontaminate, left out of the release)
    warehouse.write_table("decontaminated_exercises", pl.DataFrame({
        "exercise_id": [e[0] for e in EXERCISES] + ["ex-6"],
        "exercise": [e[1] for e in EXERCISES] + ["def bad():"],
        "solution": [e[2] for e in EXERCISES] + ["    return 1 / 0"],
        "model": [e[3] for e in EXERCISES] + ["gpt-4o-mini"],
        "passed": [True, True, False],
    }))
    # as synth_assets/decontamination/contamination_report.py writes it: verdict, free-text reason, fired_signals
    warehouse.write_table("contamination_report", pl.DataFrame({
        "exercise_id": ["ex-1", "ex-2", "ex-3", "ex-4", "ex-5", "ex-6"],
        "verdict": ["clean", "clean", "contaminated", "contaminated", "contaminated", "clean"],
        "reason": ["below every threshold"] * 2 + ["ngram 0.9 >= 0.5", "ngram 1.0; minhash 0.8", "emb 0.97"]
        + ["below every threshold"],
        "fired_signals": [[], [], ["ngram"], ["ngram", "minhash"], ["embedding"], []],
    }))
    warehouse.write_table("llm_calls", ledger_frame())
    warehouse.write_table("personas", pl.DataFrame({
        "persona_id": ["p-1", "p-2"], "persona": ["a retired teacher who tutors maths", "a data engineer at a bank"],
        "source": ["catalog", "text:doc-1"], "hop": [0, 0], "chain": [["a retired teacher who tutors maths"],
                                                                   ["a data engineer at a bank"]],
    }))
    warehouse.write_table("case2code", pl.DataFrame({
        "case_id": ["c-1"], "program": ["def double(x):\n    return 2 * x\n"], "inputs": [["1", "2"]],
        "outputs": [["2", "4"]], "n_pairs": [2], "prompt": ["double(1) == 2; double(2) == 4. Write the function."],
        "template": ["pairs_then_ask"], "shown_pairs": [2],
    }))
    warehouse.write_table("self_instruct", instruction_rows(["i1", "i2", "i3"], "self_instruct"))
    warehouse.write_table("alpaca_instructions", instruction_rows(["a1"], "alpaca"))
    warehouse.write_table("self_qa", instruction_rows([], "self_qa"))
    warehouse.write_table("evol_instruct", instruction_rows(["e1"], "evol_instruct"))
    warehouse.write_table("llm_judge", judge_rows(JUDGED))
    warehouse.write_table("instructions_contamination_report", pl.DataFrame({
        "dataset": ["self_instruct"] * 3 + ["alpaca_instructions", "evol_instruct"],
        "instruction_id": ["i1", "i2", "i3", "a1", "e1"],
        "verdict": ["clean", "clean", "contaminated", "clean", "clean"],
        "reason": ["below every threshold"] * 2 + ["ngram 1.00 >= 0.5 (HumanEval/0)"] + ["below every threshold"] * 2,
    }))
    # one persona found too close to a benchmark problem: left out of the release
    warehouse.write_table("synthesis_contamination_report", pl.DataFrame({
        "item_id": ["c-1", "p-1", "p-2"],
        "source_table": ["case2code", "personas", "personas"],
        "verdict": ["clean", "clean", "contaminated"],
        "reason": ["below every threshold", "below every threshold", "embedding 0.97 >= 0.95 (HumanEval/3)"],
    }))


def read_front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, "card must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def materialize(warehouse, release_dir: Path):
    result = dg.materialize(
        [training_data_release],
        resources={"compute": Compute(), "warehouse": warehouse},
        run_config={"ops": {"training_data_release": {"config": {"release_dir": str(release_dir)}}}},
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("training_data_release")
    return event.metadata


def test_release_files_card_and_manifest(warehouse, tmp_path):
    pipeline_tables(warehouse)
    release_dir = tmp_path / "release"
    metadata = materialize(warehouse, release_dir)

    for spec in [s for s in RELEASE_CONFIGS if s.columns is None]:  # instruction configs: their own test
        expected = warehouse.query(
            f"SELECT * FROM {spec.table}" + (" WHERE passed" if spec.name == "decontaminated_exercises" else "")
            + (" WHERE persona_id <> 'p-2'" if spec.name == "personas" else "")  # contaminated: left out
        )
        parquet = pq.read_table(release_dir / spec.name / "train-00000-of-00001.parquet")
        assert parquet.num_rows == expected.height and parquet.column_names == expected.columns
        lines = (release_dir / spec.name / "train-00000-of-00001.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert len(rows) == expected.height
        assert [r[expected.columns[0]] for r in rows] == expected[expected.columns[0]].to_list()
        assert metadata[f"rows/{spec.name}"].value == expected.height

    card = (release_dir / "README.md").read_text()
    assert metadata["dataset_card"].value == card
    front = read_front_matter(card)
    empty = {"alpaca_instructions", "self_qa"}
    assert [c["config_name"] for c in front["configs"]] == [s.name for s in RELEASE_CONFIGS if s.name not in empty]
    assert front["configs"][0]["default"] is True
    for config in front["configs"]:
        (data_files,) = config["data_files"]
        assert data_files["split"] == "train"
        matched = sorted(release_dir.glob(data_files["path"]))
        assert matched == [release_dir / config["config_name"] / "train-00000-of-00001.parquet"]

    # tokens: the count column when a table has one, else regex pieces of the text
    assert metadata["tokens/filtered_textbook"].value == 15
    assert metadata["tokens/synthetic_textbook"].value == 200
    pieces = sum(len(re.findall(r"\w+|[^\w\s]", e[1] + e[2])) for e in EXERCISES)
    assert metadata["tokens/decontaminated_exercises"].value == pieces
    assert f"| decontaminated_exercises | 2 | {pieces} |" in card
    assert "| filtered_textbook | 3 | 15 | sum of `n_tokens` |" in card

    # cost from the ledger, models from the tables and the ledger
    assert "spent: $0.130000 over 7 calls (2 served from the cache)" in card
    assert "re-running everything with no cache: $0.240000" in card
    assert "1 call(s) have no known price" in card
    assert "gpt-4o, gpt-4o-mini, mystery-model" in card

    # decontamination: checked 6, removed 3; by fired signal (ex-4 fired two)
    assert "checked against HumanEval: 6 exercises" in card and "removed: 3" in card
    assert "| ngram | 2 |" in card and "| minhash | 1 |" in card and "| embedding | 1 |" in card

    # the failing exercise is left out, and the card says why
    assert metadata["left_out/decontaminated_exercises"].value == 1
    assert "1 row(s) of `decontaminated_exercises` left out: 1: solution failed its tests" in card

    manifest = warehouse.query("SELECT * FROM training_data_release ORDER BY config_name")
    assert manifest["config_name"].to_list() == [
        "alpaca_instructions", "case2code", "decontaminated_exercises", "evol_instruct", "filtered_textbook", "personas",
        "self_instruct", "self_qa", "synthetic_textbook"]
    assert manifest["rows"].to_list() == [0, 1, 2, 1, 3, 1, 1, 0, 2]
    assert manifest["rows_left_out"].to_list() == [1, 0, 1, 0, 0, 1, 2, 0, 0]
    for row in manifest.filter(pl.col("rows") > 0).iter_rows(named=True):
        assert row["parquet_sha256"] == hashlib.sha256(Path(row["parquet_path"]).read_bytes()).hexdigest()

    # a re-run over the same tables gives the same files (stable data version)
    again = materialize(warehouse, release_dir)
    assert again["data_version"].value == metadata["data_version"].value
    assert sorted(p.name for p in (release_dir / "synthetic_textbook").iterdir()) == [
        "train-00000-of-00001.jsonl", "train-00000-of-00001.parquet"]


def test_instruction_configs_are_judged_decontaminated_and_empty_ones_left_out(warehouse, tmp_path):
    pipeline_tables(warehouse)
    release_dir = tmp_path / "release"
    exported, card, _ = build_release(warehouse, ReleaseConfig(release_dir=str(release_dir)))
    by_name = {e.spec.name: e for e in exported}

    # the instruction/input/output layout, only rows the judge kept and decontamination passed
    released = pl.read_parquet(release_dir / "self_instruct" / "train-00000-of-00001.parquet")
    assert tuple(released.columns) == INSTRUCTION_RELEASE_COLUMNS
    assert released["instruction_id"].to_list() == ["i1"]
    jsonl = [json.loads(line) for line in (release_dir / "self_instruct" / "train-00000-of-00001.jsonl").read_text().splitlines()]
    assert [row["instruction"] for row in jsonl] == ["Write a function number i1."] and set(jsonl[0]) >= {"instruction", "input", "output"}
    reason = by_name["self_instruct"].left_out_reason
    assert by_name["self_instruct"].left_out == 2 and "1: not kept by `llm_judge`" in reason and "1: contaminated" in reason
    assert "2 row(s) of `self_instruct` left out: 1: not kept by `llm_judge`" in card

    # empty configs: no files, not declared (load_dataset would raise), the card says why
    front = read_front_matter(card)
    declared = {c["config_name"] for c in front["configs"]}
    assert {"self_instruct", "evol_instruct"} <= declared and not declared & {"alpaca_instructions", "self_qa"}
    assert not list((release_dir / "alpaca_instructions").glob("train-*")) and not list((release_dir / "self_qa").glob("train-*"))
    assert "corresponds to no data" in card
    assert "- `alpaca_instructions`: all 1 row(s) of `alpaca_instructions` left out: 1: not kept by `llm_judge`" in card
    assert "- `self_qa`: `self_qa` has no rows." in card
    # the card's instruction section: per-method counts and the judge's score distribution
    assert "## Instruction data" in card and "| self_instruct | 3 | 0 | 2 | 4.0 | 1 | self_instruct |" in card
    assert "| self_instruct | 4.0 | 0 | 0 | 1 | 0 | 0 | 2 | 0 |" in card

    # a lower threshold for self_instruct (the judge re-decides `kept`) releases i2 as well
    warehouse.write_table("llm_judge", judge_rows(JUDGED, threshold=2.0))
    exported, card, _ = build_release(warehouse, ReleaseConfig(release_dir=str(release_dir)))
    released = pl.read_parquet(release_dir / "self_instruct" / "train-00000-of-00001.parquet")
    assert released["instruction_id"].to_list() == ["i1", "i2"]
    # and alpaca's row is still below it: still empty, and an earlier release's files would be gone
    assert {e.spec.name: e.rows for e in exported}["alpaca_instructions"] == 0


def test_judge_gates_textbook_and_exercises(warehouse, tmp_path):
    pipeline_tables(warehouse)
    warehouse.write_table("llm_judge", judge_rows([j if j[1] != "s2" else ("synthetic_textbook", "s2", 1) for j in JUDGED]))
    exported, card, _ = build_release(warehouse, ReleaseConfig(release_dir=str(tmp_path / "release")))
    textbook = {e.spec.name: e for e in exported}["synthetic_textbook"]
    assert textbook.rows == 1 and textbook.left_out == 1 and "not kept by `llm_judge`" in textbook.left_out_reason
    released = pl.read_parquet(tmp_path / "release" / "synthetic_textbook" / "train-00000-of-00001.parquet")
    assert released["section_id"].to_list() == ["s1"]


def test_missing_input_table_fails_with_its_name(warehouse, tmp_path):
    pipeline_tables(warehouse)
    warehouse.execute("DROP TABLE decontaminated_exercises")
    with pytest.raises(dg.Failure, match="decontaminated_exercises"):
        build_release(warehouse, ReleaseConfig(release_dir=str(tmp_path / "release")))
    assert not (tmp_path / "release").exists()


def test_card_without_contamination_report_or_ledger_says_so(warehouse, tmp_path):
    pipeline_tables(warehouse)
    warehouse.execute("DROP TABLE contamination_report")
    warehouse.execute("DROP TABLE llm_calls")
    _, card, _ = build_release(warehouse, ReleaseConfig(release_dir=str(tmp_path / "release")))
    assert "`contamination_report` was not found" in card
    assert "spent: $0.000000 over 0 calls" in card and "does not exist yet" in card


def test_failed_exercises_can_be_released_on_request(warehouse, tmp_path):
    pipeline_tables(warehouse)
    exported, card, _ = build_release(
        warehouse, ReleaseConfig(release_dir=str(tmp_path / "release"), include_failed_exercises=True)
    )
    assert {e.spec.name: e.rows for e in exported}["decontaminated_exercises"] == 3
    assert "row(s) of `decontaminated_exercises` left out" not in card


def test_decontamination_summary_without_signal_list_groups_by_reason():
    report = pl.DataFrame({"exercise_id": ["a", "b", "c"], "reason": ["x", "y", "y"]})
    summary = decontamination_summary(report, released_ids={"a"})
    assert (summary["checked"], summary["removed"], summary["grouped_by"]) == (3, 2, "reason")
    assert summary["removed_by"] == {"y": 2}


def test_every_declared_config_loads_with_datasets_and_empty_ones_are_not_declared(warehouse, tmp_path, monkeypatch):
    """The release read the way users read it: `datasets.load_dataset(<release dir>, name)`,
    offline, for every config the card declares; an undeclared (empty) config is refused
    by name instead of raising "corresponds to no data"."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    pipeline_tables(warehouse)
    release_dir = tmp_path / "release"
    exported, card, _ = build_release(warehouse, ReleaseConfig(release_dir=str(release_dir)))
    declared = {c["config_name"] for c in read_front_matter(card)["configs"]}
    rows = {e.spec.name: e.rows for e in exported}
    assert declared == {name for name, n in rows.items() if n > 0}
    for name in sorted(declared):
        loaded = datasets.load_dataset(str(release_dir), name, split="train", cache_dir=str(tmp_path / "cache"))
        assert loaded.num_rows == rows[name], name
    instruction = datasets.load_dataset(str(release_dir), "self_instruct", split="train", cache_dir=str(tmp_path / "cache"))
    assert {"instruction", "input", "output"} <= set(instruction.column_names)
    with pytest.raises(ValueError, match="alpaca_instructions"):
        datasets.load_dataset(str(release_dir), "alpaca_instructions", split="train", cache_dir=str(tmp_path / "cache"))
