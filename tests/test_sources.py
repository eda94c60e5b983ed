from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth_assets.ingest.sources import (
    RawDocument,
    Reject,
    SourceNotFound,
    html_to_text,
    parse_tags,
    read_python_tree,
    read_source,
    read_stackoverflow,
    read_the_stack,
)
from tests.fixtures_corpus import (
    make_posts_xml,
    make_python_tree,
    make_stack_jsonl,
    make_stack_parquet,
    python_module,
)


def split(records):
    docs = [r for r in records if isinstance(r, RawDocument)]
    rejects = [r for r in records if isinstance(r, Reject)]
    return docs, rejects


def test_python_tree_reads_files_and_rejects_bad_input_with_reasons(tmp_path):
    paths = make_python_tree(tmp_path / "tree")
    docs, rejects = split(list(read_python_tree(tmp_path / "tree", "mine", max_bytes=20_000, license="MIT")))

    assert sorted(d.origin for d in docs) == sorted(
        str(paths[k]) for k in ("a", "b", "c", "a_copy", "b_near")
    )
    assert all(d.source == "mine" and d.license == "MIT" for d in docs)
    by_origin = {d.origin: d for d in docs}
    assert by_origin[str(paths["a"])].content == python_module(1)

    reasons = {r.origin: r.reason for r in rejects}
    assert reasons == {
        str(paths["binary"]): "binary",
        str(paths["undecodable"]): "undecodable",
        str(paths["empty"]): "empty",
        str(paths["oversize"]): "oversize",
        str(paths["dangling"]): "unreadable",
        str(paths["dir_named_py"]): "not_a_file",
    }
    assert "30000 bytes" in next(r.detail for r in rejects if r.reason == "oversize")
    # tests/ is excluded by default and README.txt is not python
    assert str(paths["excluded"]) not in by_origin and str(paths["excluded"]) not in reasons


def test_python_tree_honours_a_coding_cookie(tmp_path):
    (tmp_path / "legacy.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n")
    docs, rejects = split(list(read_python_tree(tmp_path)))
    assert rejects == [] and "café" in docs[0].content


def test_stack_parquet_maps_the_published_schema(tmp_path):
    shard = make_stack_parquet(tmp_path / "shard-0000.parquet")
    docs, rejects = split(list(read_the_stack(shard)))

    assert [d.repo for d in docs] == ["octo/ten", "octo/eleven"]
    assert docs[0].origin == f"https://github.com/octo/ten/blob/{'f' * 40}/src/ten.py"
    assert docs[1].license == "Apache-2.0, MIT"
    assert docs[0].content == python_module(10)
    assert [(r.reason, r.origin) for r in rejects] == [("malformed_row", f"{shard}#row=2")]
    assert "content" in rejects[0].detail


def test_stack_jsonl_records_malformed_lines(tmp_path):
    shard = make_stack_jsonl(tmp_path / "stack.jsonl")
    docs, rejects = split(list(read_the_stack(shard)))

    assert len(docs) == 1 and docs[0].repo == "mirror/ten" and docs[0].license == "MIT"
    assert docs[0].origin == "mirror/ten/ten.py"
    assert [(r.origin.rsplit("#", 1)[1], r.reason) for r in rejects] == [
        ("line=2", "malformed_row"),
        ("line=3", "malformed_row"),
        ("line=4", "malformed_row"),
    ]
    assert "invalid JSON" in rejects[0].detail


def test_stack_directory_reads_every_shard_and_a_corrupt_file_is_a_reject(tmp_path):
    make_stack_parquet(tmp_path / "shards" / "a.parquet")
    (tmp_path / "shards" / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    docs, rejects = split(list(read_the_stack(tmp_path / "shards")))
    assert len(docs) == 2
    assert {r.reason for r in rejects} == {"malformed_row", "malformed_file"}
    assert any(r.origin.startswith(str(tmp_path / "shards" / "b.parquet")) for r in rejects)


def test_stackoverflow_joins_python_questions_with_their_accepted_answer(tmp_path):
    posts = make_posts_xml(tmp_path / "Posts.xml")
    skipped = Counter()
    docs, rejects = split(list(read_stackoverflow(posts, skipped=skipped)))

    assert len(docs) == 1
    doc = docs[0]
    assert doc.origin == "https://stackoverflow.com/questions/1"
    assert doc.content.startswith("# How do I reverse a list in Python?\n")
    assert "`xs = [1, 2, 3]`" in doc.content and "reversed & copied" in doc.content
    assert "```\nys = xs[::-1]\nprint(ys)\n```" in doc.content  # code block kept verbatim
    assert "Use a loop" not in doc.content  # not the accepted answer
    assert "<p>" not in doc.content

    assert sorted((r.reason, r.origin.rsplit("/", 1)[-1]) for r in rejects) == [
        ("accepted_answer_missing", "7"),
        ("malformed_row", "Posts.xml#row=5"),
    ]
    assert skipped["question_not_python"] == 1


def test_stackoverflow_truncated_xml_keeps_earlier_rows_and_records_the_error(tmp_path):
    posts = make_posts_xml(tmp_path / "Posts.xml")
    text = posts.read_text()
    posts.write_text(text[: text.index('<row Id="4"')] + '<row Id="4" PostTypeId=')
    docs, rejects = split(list(read_stackoverflow(posts)))
    assert len(docs) == 1
    assert [r.reason for r in rejects] == ["malformed_xml"]


def test_stackoverflow_from_jsonl_rows(tmp_path):
    import json

    rows = [
        {"Id": 10, "PostTypeId": 1, "AcceptedAnswerId": 11, "Title": "Sort a dict", "Tags": "|python|", "Body": "<p>How?</p>"},
        {"Id": 11, "PostTypeId": 2, "ParentId": 10, "Body": "<pre><code>sorted(d.items())</code></pre>"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs, rejects = split(list(read_stackoverflow(path)))
    assert rejects == [] and "sorted(d.items())" in docs[0].content


def test_html_to_text_and_tags():
    assert html_to_text("<p>a&lt;b</p><ul><li>one</li><li>two</li></ul>") == "a<b\n\n- one\n- two"
    assert parse_tags("<python><pandas>") == ["python", "pandas"] == parse_tags("|python|pandas|")


def test_missing_path_and_unknown_kind_are_configuration_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceNotFound, match=str(missing)):
        read_source("python_tree", missing, "x")
    with pytest.raises(ValueError, match="unknown source kind"):
        read_source("csv", tmp_path, "x")


def test_directories_that_cannot_be_listed_are_recorded(tmp_path, monkeypatch):
    # chmod cannot make a directory unreadable for root, so make os.walk report the error
    (tmp_path / "ok.py").write_text("x = 1\n")
    import os as os_module

    real_walk = os_module.walk

    def walk_with_error(top, onerror=None, **kwargs):
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "locked")))
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr("synth_assets.ingest.sources.os.walk", walk_with_error)
    docs, rejects = split(list(read_python_tree(tmp_path)))
    assert len(docs) == 1
    assert [(r.origin, r.reason) for r in rejects] == [(str(tmp_path / "locked"), "unreadable")]
    assert "Permission denied" in rejects[0].detail


# --------------------------------------------------------------------------- bad data never crashes


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_stack_rows_with_non_text_repo_or_license_are_rejects_with_reasons(tmp_path):
    code = "def f():\n    return 1\n"
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"content": code, "max_stars_repo_name": 12345, "max_stars_repo_path": "a.py"},
        {"content": code + "#2\n", "max_stars_repo_licenses": {"spdx": "MIT"}},
        {"content": code + "#3\n", "max_stars_repo_licenses": ["MIT", 7]},
        {"content": code + "#4\n", "max_stars_repo_name": "o/r", "max_stars_repo_path": "b.py", "license": "MIT"},
    ])  # fmt: skip
    docs, rejects = split(list(read_the_stack(path)))
    assert [d.origin for d in docs] == ["o/r/b.py"] and docs[0].license == "MIT"
    assert [(r.origin.rsplit("#", 1)[1], r.reason) for r in rejects] == [
        ("line=1", "malformed_row"), ("line=2", "malformed_row"), ("line=3", "malformed_row")
    ]
    assert "`max_stars_repo_name` is int, not text" in rejects[0].detail
    assert "`max_stars_repo_licenses` is dict" in rejects[1].detail


def test_corrupt_and_truncated_gzip_are_rejects_keeping_earlier_lines(tmp_path):
    good = b"".join(json.dumps({"content": f"x = {i}\n"}).encode() + b"\n" for i in range(200))
    packed = gzip.compress(good)
    (tmp_path / "truncated.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 40] = b"\x00" * 40
    (tmp_path / "corrupt.jsonl.gz").write_bytes(bytes(corrupt))
    (tmp_path / "not_gzip.jsonl.gz").write_bytes(b'{"content": "x = 1"}\n')
    for name in ("truncated", "corrupt", "not_gzip"):
        docs, rejects = split(list(read_the_stack(tmp_path / f"{name}.jsonl.gz")))
        assert rejects and rejects[-1].reason == "malformed_file", name
        read = int(re.search(r"\((\d+) lines read before the break", rejects[-1].detail).group(1))
        # every line read before the break is a document or (garbled by the damage) a row reject
        assert read == len(docs) + len(rejects) - 1, name
        if name == "truncated":
            assert 0 < len(docs) < 200 and len(rejects) == 1
            assert [d.content for d in docs] == [f"x = {i}\n" for i in range(len(docs))]
        if name == "not_gzip":
            assert read == 0 and "BadGzipFile" in rejects[-1].detail


def test_a_parquet_file_broken_mid_way_reports_the_rows_read_before(tmp_path):
    path = tmp_path / "broken.parquet"
    rows = [{"content": f"def f{i}():\n    return {i} * {i}  # padding {i}\n" * 3} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10, compression="snappy")
    data = bytearray(path.read_bytes())
    last = pq.ParquetFile(path).metadata.row_group(3).column(0)
    start = last.dictionary_page_offset or last.data_page_offset
    data[start + 20 : start + last.total_compressed_size - 20] = b"\xff" * (last.total_compressed_size - 40)
    path.write_bytes(bytes(data))
    docs, rejects = split(list(read_the_stack(path)))
    assert len(docs) == 30 and [r.reason for r in rejects] == ["malformed_file"]
    assert rejects[0].origin == f"{path}#row=30" and "30 rows read before the break" in rejects[0].detail


def test_arrow_errors_that_are_not_os_errors_are_rejects(tmp_path, monkeypatch):
    import synth_assets.ingest.sources as sources

    path = make_stack_parquet(tmp_path / "shard.parquet")
    real = pq.ParquetFile

    class NestedTooLarge:
        def __init__(self, file):
            self._file = real(file)
            self.num_row_groups = self._file.num_row_groups

        def iter_batches(self, **kwargs):
            yield from self._file.iter_batches(**kwargs)
            raise pa.ArrowNotImplementedError("Nested data conversions not implemented for chunked array outputs")

    monkeypatch.setattr(sources.pq, "ParquetFile", NestedTooLarge)
    docs, rejects = split(list(read_the_stack(path)))
    broken = rejects[-1]
    assert docs and broken.reason == "malformed_file" and all(r.reason != "malformed_file" for r in rejects[:-1])
    assert broken.detail.startswith("ArrowNotImplementedError: Nested data")
    assert f"({len(docs) + len(rejects) - 1} rows read before the break" in broken.detail


def test_stackoverflow_list_tags_are_read_and_non_text_fields_are_rejects(tmp_path):
    def question(i, **fields):
        return {"Id": i, "PostTypeId": 1, "AcceptedAnswerId": i + 100, "Title": f"How to do {i}?",
                "Body": f"<p>question {i}</p>", "Tags": ["python", "list"], **fields}  # fmt: skip

    def answer(i, **fields):
        return {"Id": i + 100, "PostTypeId": 2, "ParentId": i, "Body": f"<p>answer {i}</p>", **fields}

    path = write_jsonl(tmp_path / "posts.jsonl", [
        question(1), question(2, Title=42), question(3, Body=["<p>x</p>"]), question(4, Tags={"python": 1}),
        question(5, Tags=["python", 3]), question(6, Id=10**40),
        answer(1), answer(2), answer(3), answer(4), answer(5), question(7), answer(7, Body=7),
    ])  # fmt: skip
    docs, rejects = split(list(read_stackoverflow(path)))
    assert [d.origin for d in docs] == ["https://stackoverflow.com/questions/1"]
    assert "Tags: python, list" in docs[0].content and "answer 1" in docs[0].content
    details = sorted(r.detail for r in rejects)
    assert [r.reason for r in rejects] == ["malformed_row"] * 6
    assert any("Id 10000000000000000000000000000000000000000 is out of range" in d for d in details)
    assert any("`Title` is int" in d for d in details) and any("`Body` is list" in d for d in details)
    assert any("`Tags` is dict" in d for d in details) and any("`Tags` is list" in d for d in details)
    assert any("accepted answer 107: `Body` is int" in d for d in details)
    assert parse_tags(["<python>", "pandas"]) == ["python", "pandas"]
