from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.compute import Compute
from synth_assets.common.tokens import approximate_token_count
from synth_assets.ingest.dedup import content_hash, normalise_content
from synth_assets.ingest.raw_stack_plus import (
    RawStackPlusConfig,
    SourceSpec,
    default_sources,
    document_row,
    parses_as_python,
    raw_stack_plus,
)
from synth_assets.ingest.sources import RawDocument, stdlib_path
from tests.fixtures_corpus import (
    make_posts_xml,
    make_python_tree,
    make_stack_jsonl,
    make_stack_parquet,
    near_copy,
    python_module,
)


@pytest.fixture
def corpus(tmp_path):
    tree = make_python_tree(tmp_path / "tree")
    return {
        "tree": tree,
        "parquet": make_stack_parquet(tmp_path / "stack" / "shard.parquet"),
        "jsonl": make_stack_jsonl(tmp_path / "stack.jsonl"),
        "posts": make_posts_xml(tmp_path / "so" / "Posts.xml"),
        "tree_root": tmp_path / "tree",
    }


def run_config(corpus, **overrides) -> dg.RunConfig:
    sources = [
        {"kind": "python_tree", "path": str(corpus["tree_root"]), "name": "tree", "license": "MIT"},
        {"kind": "the_stack", "path": str(corpus["parquet"]), "name": "stack_a_parquet"},
        {"kind": "the_stack", "path": str(corpus["jsonl"]), "name": "stack_b_jsonl"},
        {"kind": "stackoverflow", "path": str(corpus["posts"]), "name": "stackoverflow"},
    ]
    config = {"sources": sources, "max_file_bytes": 20_000, "batch_docs": 3, **overrides}
    return dg.RunConfig(ops={"raw_stack_plus": {"config": config}})


def materialized_metadata(result) -> dict:
    [event] = result.asset_materializations_for_node("raw_stack_plus")
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def test_document_row_counts_and_ids():
    row = document_row(RawDocument("s", "o", "x = f(a, b)\r\ny = 2   \n"), seq=0)
    assert row["content"] == "x = f(a, b)\ny = 2\n"
    assert row["doc_id"] == content_hash(row["content"])
    assert (row["n_chars"], row["n_lines"], row["n_tokens"]) == (18, 2, 11)
    assert row["parses_as_python"] is True
    assert approximate_token_count("x = f(a, b)") == 8
    assert parses_as_python("def f(:\n") is False
    assert parses_as_python("s = '\\d'\n") is True  # an invalid escape is a warning, not an error


def test_materialize_writes_deduplicated_corpus_removals_and_rejects(corpus, warehouse):
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=run_config(corpus))
    assert result.success
    tree = corpus["tree"]

    kept = warehouse.query("SELECT * FROM raw_stack_plus ORDER BY source, origin")
    assert kept.height == kept["doc_id"].n_unique() == 6
    assert sorted(kept["origin"].to_list()) == sorted(
        [
            str(tree["a"]),
            str(tree["c"]),
            str(tree["b_near"]),  # longer than b.py, so the cluster's representative
            f"https://github.com/octo/ten/blob/{'f' * 40}/src/ten.py",
            f"https://github.com/octo/eleven/blob/{'e' * 40}/lib/eleven.py",
            "https://stackoverflow.com/questions/1",
        ]
    )
    a_row = kept.filter(kept["origin"] == str(tree["a"])).row(0, named=True)
    assert a_row["content"] == normalise_content(python_module(1))
    assert a_row["doc_id"] == content_hash(a_row["content"])
    assert a_row["license"] == "MIT" and a_row["source"] == "tree" and a_row["parses_as_python"] is True
    so_row = kept.filter(kept["source"] == "stackoverflow").row(0, named=True)
    assert so_row["parses_as_python"] is False and "ys = xs[::-1]" in so_row["content"]
    assert all(n > 0 for n in kept["n_tokens"].to_list())

    removed = warehouse.query("SELECT * FROM dedup_removed ORDER BY reason, origin")
    by_origin = {r["origin"]: r for r in removed.iter_rows(named=True)}
    assert set(by_origin) == {str(tree["a_copy"]), "mirror/ten/ten.py", str(tree["b"])}
    a_copy = by_origin[str(tree["a_copy"])]
    assert (a_copy["reason"], a_copy["jaccard"], a_copy["duplicate_of_origin"]) == ("exact_duplicate", 1.0, str(tree["a"]))
    assert a_copy["near_duplicate_of"] == a_row["doc_id"]
    mirror = by_origin["mirror/ten/ten.py"]
    assert mirror["reason"] == "exact_duplicate" and mirror["source"] == "stack_b_jsonl"
    near = by_origin[str(tree["b"])]
    assert near["reason"] == "near_duplicate" and 0.7 <= near["jaccard"] < 1.0
    assert near["near_duplicate_of"] == content_hash(normalise_content(near_copy(python_module(2))))
    assert near["duplicate_of_origin"] == str(tree["b_near"])

    rejects = warehouse.query("SELECT source, origin, reason FROM ingest_rejects")
    reasons = {(r["source"], r["reason"]) for r in rejects.iter_rows(named=True)}
    assert reasons == {
        ("tree", "binary"),
        ("tree", "undecodable"),
        ("tree", "empty"),
        ("tree", "oversize"),
        ("tree", "unreadable"),
        ("tree", "not_a_file"),
        ("stack_a_parquet", "malformed_row"),
        ("stack_b_jsonl", "malformed_row"),
        ("stackoverflow", "malformed_row"),
        ("stackoverflow", "accepted_answer_missing"),
    }
    assert rejects.height == 12  # 6 tree + 1 parquet + 3 jsonl + 2 stackoverflow

    metadata = materialized_metadata(result)
    assert metadata["dagster/row_count"] == 6
    assert (metadata["kept"], metadata["exact_duplicates"], metadata["near_duplicates"]) == (6, 2, 1)
    assert metadata["documents_read"] == 6 + 3 and metadata["rejected"] == 12
    assert metadata["rejects/malformed_row"] == 5 and metadata["rejects/oversize"] == 1
    assert "| malformed_row | 5 |" in metadata["rejects_by_reason"]
    assert "| tree | 5 | 6 | 3 |" in metadata["by_source"]
    assert metadata["skipped/question_not_python"] == 1

    staging = warehouse.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '_staging%'")
    assert staging.height == 0


def test_rerun_gives_the_same_tables(corpus, warehouse):
    versions = []
    for batch_docs in (2, 500):  # batch size must not change the result
        result = dg.materialize(
            [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=run_config(corpus, batch_docs=batch_docs)
        )
        versions.append(
            (
                materialized_metadata(result)["data_version"],
                warehouse.query("SELECT * FROM dedup_removed ORDER BY ALL").rows(),
                warehouse.query("SELECT * FROM ingest_rejects ORDER BY ALL").rows(),
            )
        )
    assert versions[0] == versions[1]


def test_missing_source_path_fails_naming_the_path(tmp_path, warehouse):
    missing = tmp_path / "no" / "such" / "shards"
    config = dg.RunConfig(ops={"raw_stack_plus": RawStackPlusConfig(sources=[SourceSpec(kind="the_stack", path=str(missing))])})
    result = dg.materialize(
        [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=config, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert str(missing) in message
    assert not warehouse.table_exists("raw_stack_plus")


def test_unknown_source_kind_fails_clearly(tmp_path, warehouse):
    config = dg.RunConfig(ops={"raw_stack_plus": RawStackPlusConfig(sources=[SourceSpec(kind="csv", path=str(tmp_path))])})
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=config, raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert re.search("unknown source kind 'csv'", str(failure.step_failure_data.user_failure_data) + failure.step_failure_data.error.message)


def test_default_source_is_the_standard_library_without_tests():
    config = RawStackPlusConfig()
    [spec] = config.resolved_sources()
    assert spec == default_sources()[0]
    assert spec.path == stdlib_path() and spec.name == "stdlib"
    assert {"test", "tests", "site-packages", "idlelib", "lib2to3"} <= set(config.exclude_dirs)


@pytest.mark.slow
def test_default_corpus_is_the_stdlib(warehouse):
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    metadata = materialized_metadata(result)
    assert 450 <= metadata["kept"] <= 800
    origins = warehouse.query("SELECT origin FROM raw_stack_plus")["origin"].to_list()
    assert not any("/test/" in o or "/idlelib/" in o or "/site-packages/" in o for o in origins)


def test_exact_copy_of_a_near_duplicate_points_at_the_survivor(tmp_path, warehouse):
    """A file, its exact copy and a longer near-copy: both short copies are removed, and
    both removal rows name the surviving document, never a removed one."""
    tree = tmp_path / "tree"
    tree.mkdir()
    base = python_module(7)
    (tree / "a.py").write_text(base)
    (tree / "a_copy.py").write_text(base)
    (tree / "b.py").write_text(base + "\n\ndef extra_helper(value):\n    return value + 1\n")
    for i in range(3):
        (tree / f"unique_{i}.py").write_text(python_module(100 + i))
    config = {"sources": [{"kind": "python_tree", "path": str(tree), "name": "tree"}]}
    result = dg.materialize(
        [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse},
        run_config=dg.RunConfig(ops={"raw_stack_plus": {"config": config}}),
    )
    assert result.success
    dangling = warehouse.query(
        "SELECT * FROM dedup_removed WHERE near_duplicate_of NOT IN (SELECT doc_id FROM raw_stack_plus)"
    )
    assert dangling.height == 0, dangling
    survivor = warehouse.query("SELECT doc_id FROM raw_stack_plus WHERE origin LIKE '%b.py'").item()
    removed = warehouse.query("SELECT origin, reason, near_duplicate_of FROM dedup_removed ORDER BY origin").rows()
    assert sorted((o.rsplit("/", 1)[-1], r) for o, r, _ in removed) == [
        ("a.py", "near_duplicate"), ("a_copy.py", "exact_duplicate")
    ]
    assert {of for _, _, of in removed} == {survivor}


def test_corpus_paths_env_names_the_default_sources(tmp_path, monkeypatch):
    tree = tmp_path / "mycode"
    tree.mkdir()
    shard = tmp_path / "shard-000.parquet"
    posts = tmp_path / "Posts.xml"
    monkeypatch.setenv("SYNTH_ASSETS_CORPUS_PATHS", f"{tree}:{shard}:{posts}")
    kinds = [(s.kind, s.path) for s in default_sources()]
    assert kinds == [("python_tree", str(tree)), ("the_stack", str(shard)), ("stackoverflow", str(posts))]


# --------------------------------------------------------------------------- planted bad files


def plant_bad_files(root: Path) -> dict[str, list[Path]]:
    """A corpus with one file of every kind of damage the readers promise to survive,
    beside a good file of each kind. Returns the files per source folder."""
    stack, so, tree = root / "stack", root / "so", root / "tree"
    for folder in (stack, so, tree):
        folder.mkdir(parents=True)

    def jsonl(path: Path, rows: list) -> Path:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    module = python_module(21)
    lines = b"".join(json.dumps({"content": python_module(30 + i)}).encode() + b"\n" for i in range(6))
    packed = gzip.compress(lines)
    parquet_rows = [{"content": python_module(40 + i)} for i in range(20)]
    broken = stack / "broken_midway.parquet"
    pq.write_table(pa.Table.from_pylist(parquet_rows), broken, row_group_size=5, compression="snappy")
    data = bytearray(broken.read_bytes())
    group = pq.ParquetFile(broken).metadata.row_group(2).column(0)
    start = group.dictionary_page_offset or group.data_page_offset
    data[start + 20 : start + group.total_compressed_size - 20] = b"\xff" * (group.total_compressed_size - 40)
    broken.write_bytes(bytes(data))
    stack_files = [
        jsonl(stack / "good.jsonl", [{"content": module}]),
        jsonl(stack / "non_text_fields.jsonl", [
            {"content": python_module(22), "max_stars_repo_name": 7, "max_stars_repo_path": "x.py"},
            {"content": python_module(23), "max_stars_repo_licenses": {"spdx": "MIT"}},
        ]),  # fmt: skip
        stack / "truncated.jsonl.gz",
        stack / "not_gzip.jsonl.gz",
        broken,
        stack / "empty.parquet",
        stack / "garbage.parquet",
    ]
    (stack / "truncated.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (stack / "not_gzip.jsonl.gz").write_bytes(b"this is not gzip\n")
    (stack / "empty.parquet").write_bytes(b"")
    (stack / "garbage.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")

    question = {"Id": 1, "PostTypeId": 1, "AcceptedAnswerId": 2, "Title": "Reverse a list?", "Body": "<p>how</p>"}
    so_files = [
        jsonl(so / "list_tags.jsonl", [{**question, "Tags": ["python", "list"]}, {"Id": 2, "PostTypeId": 2, "Body": "<p>xs[::-1]</p>"}]),
        jsonl(so / "non_text_title.jsonl", [{**question, "Id": 11, "AcceptedAnswerId": 12, "Title": 42, "Tags": "<python>"}]),
        jsonl(so / "dict_tags.jsonl", [{**question, "Id": 21, "AcceptedAnswerId": 22, "Tags": {"python": True}}]),
        so / "Posts.xml",
    ]
    (so / "Posts.xml").write_text('<?xml version="1.0"?>\n<posts>\n  <row Id="31" PostTypeId="1" Title="t')

    (tree / "good.py").write_text(python_module(24))
    (tree / "binary.py").write_bytes(b"\x00\x01binary")
    (tree / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    return {"stack": stack_files, "so": so_files, "tree": [tree / "good.py", tree / "binary.py", tree / "latin1.py"]}


def test_a_corpus_of_planted_bad_files_ingests_and_every_file_is_a_row_or_a_reject(tmp_path, warehouse):
    files = plant_bad_files(tmp_path / "corpus")
    sources = [
        {"kind": "the_stack", "path": str(tmp_path / "corpus" / "stack"), "name": "stack"},
        {"kind": "stackoverflow", "path": str(tmp_path / "corpus" / "so"), "name": "so"},
        {"kind": "python_tree", "path": str(tmp_path / "corpus" / "tree"), "name": "tree"},
    ]
    run = dg.RunConfig(ops={"raw_stack_plus": {"config": {"sources": sources}}})
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=run)
    assert result.success
    documents = warehouse.query("SELECT origin, content FROM raw_stack_plus UNION ALL SELECT origin, NULL FROM dedup_removed")
    rejects = warehouse.query("SELECT origin, reason, detail FROM ingest_rejects")
    document_origins = documents["origin"].to_list()
    reject_origins = rejects["origin"].to_list()
    for path in files["stack"] + files["tree"]:
        here = [o for o in document_origins + reject_origins if o == str(path) or o.startswith(f"{path}#")]
        assert here, f"{path.name} is neither a row nor a reject"
    # StackOverflow documents are named by question: each planted file maps to its question
    assert "https://stackoverflow.com/questions/1" in document_origins  # list-valued Tags read
    for name, reason_text in (("non_text_title", "`Title` is int"), ("dict_tags", "`Tags` is dict"), ("Posts.xml", "rows read before")):
        path = next(p for p in files["so"] if p.name.startswith(name))
        details = rejects.filter(rejects["origin"].str.starts_with(str(path)))["detail"].to_list()
        assert any(reason_text in d for d in details), (name, details)
    by_file = {o.split("#", 1)[0]: d for o, d in zip(reject_origins, rejects["detail"].to_list())}
    assert "10 rows read before the break" in by_file[str(tmp_path / "corpus" / "stack" / "broken_midway.parquet")]
    kept = [o for o in document_origins if o.startswith(str(tmp_path / "corpus" / "stack" / "broken_midway.parquet"))]
    assert len(kept) == 10  # the two row groups before the damage


# --------------------------------------------------------------------------- lasting settings


def write_settings(path: Path, sources: list[dict]) -> Path:
    entries = ",\n".join("  { " + ", ".join(f'{k} = "{v}"' for k, v in source.items()) + " }" for source in sources)
    path.write_text(f"[raw_stack_plus]\nsources = [\n{entries},\n]\n")
    return path


def test_the_settings_file_names_the_corpus_every_run_reads_and_the_launchpad_overrides_one_run(
    corpus, tmp_path, warehouse, monkeypatch
):
    from synth_assets.ingest.corpus_sensor import watched_corpus_paths

    monkeypatch.delenv("SYNTH_ASSETS_CORPUS_PATHS", raising=False)
    settings = write_settings(tmp_path / "synth_assets.toml", [
        {"kind": "stackoverflow", "path": str(corpus["posts"]), "name": "so_lasting"},
    ])  # fmt: skip
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    assert watched_corpus_paths() == [str(corpus["posts"])]  # the sensor watches what runs read

    def sources_of_last_run(result) -> tuple[set[str], str]:
        metadata = materialized_metadata(result)
        return set(warehouse.query("SELECT DISTINCT source FROM raw_stack_plus")["source"]), metadata["sources_from"]

    automatic = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})  # no run config, as a sensor run
    assert sources_of_last_run(automatic) == ({"so_lasting"}, f"settings file {settings}")

    one_off = dg.RunConfig(ops={"raw_stack_plus": {"config": {"sources": [
        {"kind": "the_stack", "path": str(corpus["jsonl"]), "name": "one_off"}]}}})  # fmt: skip
    launched = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=one_off)
    assert sources_of_last_run(launched) == ({"one_off"}, "launchpad (this run only)")

    next_automatic = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    assert sources_of_last_run(next_automatic)[0] == {"so_lasting"}  # back on the lasting corpus


def test_env_corpus_paths_win_over_the_settings_file_and_a_broken_file_fails_clearly(tmp_path, warehouse, monkeypatch):
    from synth_assets.ingest.raw_stack_plus import lasting_sources

    tree = tmp_path / "tree"
    tree.mkdir()
    settings = write_settings(tmp_path / "s.toml", [{"kind": "python_tree", "path": str(tree), "name": "from_file"}])
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    monkeypatch.delenv("SYNTH_ASSETS_CORPUS_PATHS", raising=False)
    assert [s.name for s in lasting_sources()[0]] == ["from_file"]
    monkeypatch.setenv("SYNTH_ASSETS_CORPUS_PATHS", str(tree))
    assert lasting_sources()[1] == "env SYNTH_ASSETS_CORPUS_PATHS"
    monkeypatch.delenv("SYNTH_ASSETS_CORPUS_PATHS")
    settings.write_text("[raw_stack_plus]\nsources = [ { kind = \"python_tree\" } ]\n")  # no path
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, raise_on_error=False)
    assert not result.success
    assert "[raw_stack_plus] sources in" in result.failure_data_for_node("raw_stack_plus").error.to_string()
