"""Stack+ at scale: ingest, dedup, grading, classifier and scoring end to end on real code.

    .venv/bin/python -m bench.scale                          # 20k and 100k documents (12-25 min on 2 shared cores)
    .venv/bin/python -m bench.scale --sizes 2000 10000       # quick
    .venv/bin/python -m bench.scale --sizes 100000 1000000   # the issue's sizes: hours, ~2.5 GB of files, and
                                                             # ~17 GiB RSS projected for today's in-memory dedup
    .venv/bin/python -m bench.scale --report bench/results/scale.json   # re-print a saved run
    .venv/bin/python -m bench.scale --sizes 100000 --baseline bench/results/scale-before.json --out ...
                                                             # side by side with a saved earlier run

Corpus: the .py files of this virtual environment's site-packages (tests excluded),
split into documents at top-level and method boundaries (at least --min-chars each; a
piece that starts inside a class gets its `class` line, so ~99% still parse), shuffled
with --seed. A size larger than the pool (~68k pieces) takes further "generations" of
every piece with each identifier renamed (`name` -> `name_v2`), reported as `renamed`:
cloned code, far from its original in MinHash terms. Then --dup-rate of the documents
are planted near duplicates: an edited copy (`bench.dedup.edited_copy`: one line
dropped, a comment line added, one identifier changed) of a random document, so every
planted pair is known, with its exact 5-gram shingle Jaccard.

Each size runs in its own process. Stages are the assets themselves (`dg.materialize`,
one call per stage, a DuckLake in a scratch folder): raw_stack_plus (python_tree
source), its blocking and warning checks, annotated_sample (phi-1's 0.3% against the
OpenAI test double, model gpt-4o-mini; the double grades with a fixed heuristic, see
`heuristic_grade`), quality_classifier (hashed n-grams only) and filtered_textbook
(phi-1's best 17% of tokens). CPU is getrusage of the process plus reaped children
(CPU seconds stretch when the shared cores are oversubscribed: the load average is
printed with each size); the double's own CPU (a stand-in for the provider) is read from
/proc and reported apart. Peak RSS is per stage: the high-water mark is reset before
each (/proc/self/clear_refs). Baselines, in memory, median of --repeats: sklearn's
HashingVectorizer alone (the classifier's settings) and the classifier's `score`, on
the first --baseline-docs documents by doc_id and on the standard library's files (the
corpus the issue's "before" figures were measured on, ~18.5k characters a file).

Figures go to --out (bench/results/scale.json, git-ignored); `python -m synth_assets.plan
--throughputs bench/results/scale.json` reads its `throughputs`.
"""

from __future__ import annotations

import argparse
import builtins
import json
import keyword
import math
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# Targets from issue 12 ("Benchmark"), on this 2-core, 24 GiB machine.
TARGET_PEAK_GIB_AT_1M = 6.0
TARGET_EXPONENT = 1.1
TARGET_SCORING_DOCS_PER_CPU_S = 500
# Measured before issue 12 (the figures): OFFSET-paged scoring, and sklearn's
# HashingVectorizer alone on this machine.
BEFORE_SCORING_DOCS_PER_S = (100, 235)
BEFORE_HASHING_VECTORIZER_DOCS_PER_S = (550, 770)

DOCS_PER_FOLDER = 1_000
SITE_PACKAGES_EXCLUDE = ("test", "tests", "__pycache__")
# A document boundary: a top-level or class-level def/class/decorator line.
_BLOCK_START = re.compile(r"(?:    )?(?:@|def |async def |class )")
# Identifiers outside strings' prefixes (a name directly before a quote is b"", f"", r"").
_IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b(?!['\"])")
_NOT_RENAMED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | {"self", "cls"}


def split_into_documents(text: str, min_chars: int) -> list[str]:
    """Consecutive blocks of a file (top-level defs/classes and methods), cut at the first
    block boundary after `min_chars`. A piece that starts inside a class begins with the
    class's `class ...:` line, so it still parses."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    class_line: str | None = None
    previous = ""
    for line in text.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():
            class_line = line if line.startswith("class ") and line.rstrip().endswith(":") else None
        at_boundary = (
            _BLOCK_START.match(line) is not None
            and (not line.startswith(" ") or class_line is not None)
            and not previous.lstrip().startswith("@")
        )
        if at_boundary and size >= min_chars:
            pieces.append("".join(current))
            current, size = [], 0
            if line.startswith("    ") and class_line is not None:
                current, size = [class_line], len(class_line)
        current.append(line)
        size += len(line)
        if line.strip():
            previous = line
    if current:
        pieces.append("".join(current))
    return pieces


def renamed_variant(text: str, generation: int) -> str:
    """Every identifier that is not a keyword or builtin gets the suffix `_v<generation>`."""
    suffix = f"_v{generation}"
    return _IDENTIFIER.sub(lambda m: m.group(0) if m.group(0) in _NOT_RENAMED else m.group(0) + suffix, text)


def document_pool(root: str, min_chars: int, seed: int) -> list[str]:
    """The site-packages chunks, shuffled with `seed` (readers' rejects left out)."""
    from synth_assets.ingest.sources import RawDocument, read_python_tree

    pool = [
        piece
        for record in read_python_tree(root, exclude_dirs=SITE_PACKAGES_EXCLUDE)
        if isinstance(record, RawDocument)
        for piece in split_into_documents(record.content, min_chars)
        if piece.strip()
    ]
    random.Random(seed).shuffle(pool)
    return pool


def shingle_jaccard(left: str, right: str) -> float:
    """Exact Jaccard of the dedup's 5-gram shingle sets (bigcode tokens)."""
    from synth_assets.common.minhash import exact_jaccard, text_shingle_hashes

    a, b = set(text_shingle_hashes(left).tolist()), set(text_shingle_hashes(right).tolist())
    return exact_jaccard(a, b) if a or b else 1.0


def write_corpus(pool: list[str], n_documents: int, dup_rate: float, seed: int, folder: Path) -> dict:
    """`n_documents` files under folder/tree (`dup_rate` of them planted edited copies, written
    last) and folder/manifest.json with the planted pairs by doc_id and their exact shingle
    Jaccard. Streams: only the copies are held in memory. Returns the manifest."""
    from bench.dedup import edited_copy
    from synth_assets.ingest.dedup import content_hash, normalise_content

    n_copies = round(n_documents * dup_rate)
    n_base = n_documents - n_copies
    rng = random.Random(seed)
    originals = set(rng.sample(range(n_base), n_copies))
    tree = folder / "tree"
    chars = 0
    copies: list[str] = []
    planted: list[dict] = []

    def write(index: int, text: str) -> None:
        nonlocal chars
        path = tree / f"{index // DOCS_PER_FOLDER:05d}" / f"doc{index:07d}.py"
        if index % DOCS_PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        chars += len(text)

    doc_id = lambda text: content_hash(normalise_content(text))  # noqa: E731
    for index in range(n_base):
        generation = index // len(pool)
        text = pool[index % len(pool)] if generation == 0 else renamed_variant(pool[index % len(pool)], generation + 1)
        write(index, text)
        if index in originals:
            copy = edited_copy(text, rng)
            copies.append(copy)
            planted.append({"copy": doc_id(copy), "original": doc_id(text), "jaccard": round(shingle_jaccard(text, copy), 4)})
    for offset, copy in enumerate(copies):
        write(n_base + offset, copy)
    manifest = {
        "documents": n_documents,
        "site_packages_chunks": min(n_base, len(pool)),
        "renamed": max(0, n_base - len(pool)),
        "planted_copies": n_copies,
        "pool_size": len(pool),
        "characters": chars,
        "tree": str(tree),
        "planted": planted,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def heuristic_grade(code: str) -> int:
    """A stand-in for the LLM's 0-5 grade, one point each: defines something, has a
    docstring, >= 10% comment lines, short (<= 1,500 characters), no line over 79
    characters. Deterministic, so the classifier has two learnable classes (on the
    site-packages chunks ~59% score >= 3, the label threshold on a remote endpoint)."""
    lines = code.splitlines() or [""]
    comments = sum(line.lstrip().startswith("#") for line in lines)
    return int(
        ("def " in code or "class " in code)
        + ('"""' in code or "'''" in code)
        + (comments / len(lines) >= 0.10)
        + (len(code) <= 1_500)
        + (max(map(len, lines)) <= 79)
    )


def grade_answer(body: dict) -> str:
    """The double's chat answer: a Grade JSON for the file in the last user message."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = str(users[-1].get("content", "")) if users else ""
    code = text.split("```python\n", 1)[-1].rsplit("\n```", 1)[0]
    return json.dumps({"rationale": "Graded by the benchmark's heuristic.", "educational_score": heuristic_grade(code)})


def serve_grading_double(latency_s: float) -> None:
    from tests.openai_double import OpenAIDouble

    double = OpenAIDouble(chat=grade_answer, latency_s=latency_s, record=False)
    double.start()
    print(double.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        double.stop()


def start_grading_double(latency_s: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scale", "--serve-double", str(latency_s)], stdout=subprocess.PIPE, text=True
    )
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise RuntimeError("the grading double did not start")
    return process, base_url


def process_cpu_s(pid: int) -> float:
    """utime + stime of a live process, from /proc (getrusage sees children only once reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reset_peak_rss() -> None:
    """Linux >= 4.0: the high-water mark (VmHWM, ru_maxrss) restarts from the current RSS,
    so each stage's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


class Stages:
    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, work, documents=None, characters=None):
        print(f"  {name} ...", flush=True)
        reset_peak_rss()
        cpu0, wall0 = cpu_s(), time.perf_counter()
        value = work()
        row = {"stage": name, "cpu_s": cpu_s() - cpu0, "wall_s": time.perf_counter() - wall0, "peak_rss_mib": peak_rss_mib()}
        row["documents"] = documents(value) if callable(documents) else documents
        row["characters"] = characters(value) if callable(characters) else characters
        self.rows.append(row)
        print(f"    {row['documents']} documents, {row['cpu_s']:.1f} CPU s, {row['wall_s']:.1f} s, "
              f"peak {row['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        return value


def median_rate(work, texts: list[str], batch_size: int, repeats: int) -> float:
    """Documents per CPU second of `work(batch)` over `texts`, median of `repeats`."""
    rates = []
    for _ in range(repeats):
        start = cpu_s()
        for first in range(0, len(texts), batch_size):
            work(texts[first : first + batch_size])
        rates.append(len(texts) / max(cpu_s() - start, 1e-9))
    return statistics.median(rates)


JACCARD_BANDS = ((0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))


def planted_recall(removed: dict[str, str], planted: list[dict], threshold: float) -> dict:
    """A planted pair is found when copy and original end in one cluster (same survivor);
    `resolved` only asks that one of the two was dropped. Also per band of the pair's
    exact shingle Jaccard: MinHash estimates it from 256 slots (standard error ~0.03), so
    pairs just above the threshold are lost at random, by design of today's dedup."""
    survivor = lambda doc_id: removed.get(doc_id, doc_id)  # noqa: E731
    is_found = [survivor(p["copy"]) == survivor(p["original"]) for p in planted]
    above = [f for p, f in zip(planted, is_found) if p["jaccard"] >= threshold]
    bands = {}
    for low, high in JACCARD_BANDS:
        in_band = [f for p, f in zip(planted, is_found) if low <= p["jaccard"] < high]
        bands[f"{low:.1f}-{min(high, 1.0):.1f}"] = {"planted": len(in_band), "found": sum(in_band)}
    return {
        "planted": len(planted),
        "found": sum(is_found),
        "resolved": sum(p["copy"] in removed or p["original"] in removed for p in planted),
        "recall": sum(is_found) / len(planted) if planted else 1.0,
        "planted_at_or_above_threshold": len(above),
        "found_at_or_above_threshold": sum(above),
        "by_jaccard": bands,
        # the reference a new dedup must not lose: the planted copies today's code finds
        "found_copies": sorted(p["copy"] for p, f in zip(planted, is_found) if f),
    }


def stdlib_texts() -> list[str]:
    """The default raw_stack_plus corpus, on which the issue measured scoring before."""
    from synth_assets.ingest.sources import RawDocument, read_python_tree, stdlib_path

    return [r.content for r in read_python_tree(stdlib_path()) if isinstance(r, RawDocument)]


def scoring_baselines(texts: list[str], model, batch_size: int, repeats: int) -> dict:
    """sklearn's HashingVectorizer alone (the classifier's settings) and the classifier's
    whole `score` (featurize + TF-IDF + forest), in memory, on the same texts."""
    from synth_assets.filtering.features import hashed_ngram_featurizer

    hashing = hashed_ngram_featurizer().named_steps["hash"]
    return {
        "documents": len(texts),
        "characters": sum(map(len, texts)),
        "repeats": repeats,
        "hashing_vectorizer_docs_per_cpu_s": median_rate(hashing.transform, texts, batch_size, repeats),
        "classifier_score_docs_per_cpu_s": median_rate(model.score, texts, batch_size, repeats),
    }


def run_size(folder: Path, latency_s: float, repeats: int, baseline_docs: int) -> dict:
    import dagster as dg

    from quality_checks.checks import all_check_specs, evaluate_spec
    from resources.compute import Compute
    from resources.llm import LLMResource
    from tests.openai_double import TEST_KEY_REF
    from resources.warehouse import Warehouse
    from synth_assets.filtering.annotated_sample import annotated_sample
    from synth_assets.filtering.filtered_textbook import FilterConfig, filtered_textbook
    from synth_assets.filtering.quality_classifier import ClassifierConfig, load_model, quality_classifier
    from synth_assets.ingest.dedup import NearDedupParams
    from synth_assets.ingest.raw_stack_plus import RawStackPlusConfig, SourceSpec, raw_stack_plus
    from synth_assets.plan import PHI1_KEEP_TOKEN_SHARE

    manifest = json.loads((folder / "manifest.json").read_text())
    load_at_start = os.getloadavg()[0]
    warehouse = Warehouse(path=str(folder / "lake"))
    double, base_url = start_grading_double(latency_s)
    llm = LLMResource(
        base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_concurrency=64, max_cost_usd=None,
        progress_interval_s=3600,
    )  # fmt: skip
    resources = {"warehouse": warehouse, "llm": llm, "compute": Compute()}
    stages = Stages()
    count = lambda table: int(warehouse.query(f'SELECT count(*) AS n FROM "{table}"')["n"][0])  # noqa: E731
    try:
        ingested = stages.run(
            "ingest+dedup",
            lambda: dg.materialize(
                [raw_stack_plus], resources=resources,
                run_config=dg.RunConfig({"raw_stack_plus": RawStackPlusConfig(sources=[SourceSpec(kind="python_tree", path=manifest["tree"])])}),
            ),  # fmt: skip
            documents=manifest["documents"],
            characters=manifest["characters"],
        )
        ingest_metadata = ingested.asset_materializations_for_node("raw_stack_plus")[0].metadata
        ingest_seconds = ingest_metadata["seconds"].value
        near_dedup = ingest_metadata["near_dedup"].value if "near_dedup" in ingest_metadata else None
        specs = [s for s in all_check_specs() if s.asset == "raw_stack_plus"]
        checks = stages.run(
            "ingest checks",
            lambda: {s.name: evaluate_spec(warehouse.read_only(), s).passed for s in specs},
            documents=lambda _: count("raw_stack_plus"),
        )
        double_cpu0 = process_cpu_s(double.pid)
        stages.run(
            "grading sample (client)",
            lambda: dg.materialize([annotated_sample], resources=resources),
            documents=lambda _: count("annotated_sample"),
        )
        double_cpu = process_cpu_s(double.pid) - double_cpu0
        labels = warehouse.query("SELECT label, count(*) AS n FROM annotated_sample GROUP BY label ORDER BY label").rows()
        stages.run(
            "quality_classifier",
            lambda: dg.materialize(
                [quality_classifier], resources=resources,
                run_config=dg.RunConfig({"quality_classifier": ClassifierConfig(feature_sets=["hashed_ngrams"], artefact_dir=str(folder / "models"))}),
            ),  # fmt: skip
            documents=lambda _: count("annotated_sample"),
        )
        kept = count("raw_stack_plus")
        kept_chars = int(warehouse.query("SELECT sum(n_chars) AS n FROM raw_stack_plus")["n"][0])
        stages.run(
            "filtered_textbook scoring",
            lambda: dg.materialize(
                [filtered_textbook], resources=resources,
                run_config=dg.RunConfig({"filtered_textbook": FilterConfig(keep_token_share=PHI1_KEEP_TOKEN_SHARE)}),
            ),  # fmt: skip
            documents=kept,
            characters=kept_chars,
        )
    finally:
        double.terminate()
        double.wait(timeout=30)

    removed = dict(warehouse.query("SELECT doc_id, near_duplicate_of FROM dedup_removed WHERE reason = 'near_duplicate'").rows())
    dedup_counts = dict(warehouse.query("SELECT reason, count(*) FROM dedup_removed GROUP BY reason").rows())
    recall = planted_recall(removed, manifest["planted"], NearDedupParams().threshold)

    print("  baselines ...", flush=True)
    batch_size = FilterConfig().batch_size
    model = load_model(warehouse.query("SELECT artefact_path FROM quality_classifier_versions")["artefact_path"][0])
    # the first documents by doc_id: a top-N over the ids only, then their content (a top-N that
    # carries the content is not spillable and fails under a DuckDB memory limit at 1M documents)
    sample = warehouse.query(
        "SELECT content FROM raw_stack_plus WHERE doc_id IN "
        f"(SELECT doc_id FROM raw_stack_plus ORDER BY doc_id LIMIT {int(baseline_docs)}) ORDER BY doc_id"
    )["content"].to_list()
    baselines = {
        "corpus": scoring_baselines(sample, model, batch_size, repeats),
        "stdlib": scoring_baselines(stdlib_texts(), model, batch_size, repeats),
    }
    return {
        "size": manifest["documents"],
        "corpus": {k: v for k, v in manifest.items() if k != "planted"},
        "stages": stages.rows,
        "ingest_seconds": ingest_seconds,
        "near_dedup": near_dedup,
        "double_cpu_s": double_cpu,
        "double_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "labels": {str(label): n for label, n in labels},
        "checks": checks,
        "dedup": {"near_duplicates": int(dedup_counts.get("near_duplicate", 0)),
                  "exact_duplicates": int(dedup_counts.get("exact_duplicate", 0)), **recall},  # fmt: skip
        "baselines": baselines,
        "peak_rss_mib": max(row["peak_rss_mib"] for row in stages.rows),
        "duckdb_memory_limit": os.environ.get("SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT") or "DuckDB default (80% of RAM)",
        # CPU seconds stretch when the 2 shared cores are oversubscribed: read rates with the load
        "load_average_1min": [load_at_start, os.getloadavg()[0]],
    }


def exponent(t1: float, t2: float, n1: int, n2: int) -> float | None:
    """The time-growth exponent log(t2/t1) / log(n2/n1)."""
    return math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 and n1 != n2 else None


def stage(result: dict, name: str) -> dict:
    return next(row for row in result["stages"] if row["stage"] == name)


def rate(row: dict) -> float:
    return row["documents"] / row["cpu_s"] if row["cpu_s"] else float("inf")


def stage_table(result: dict) -> str:
    lines = [f"{'stage':<27}{'docs':>9}{'CPU s':>9}{'wall s':>9}{'docs/CPU-s':>12}{'MB/CPU-s':>10}{'peak RSS MiB':>14}"]
    for row in result["stages"]:
        mb = f"{row['characters'] / 1e6 / row['cpu_s']:.2f}" if row["characters"] else "-"
        lines.append(f"{row['stage']:<27}{row['documents']:>9}{row['cpu_s']:>9.1f}{row['wall_s']:>9.1f}{rate(row):>12.0f}{mb:>10}{row['peak_rss_mib']:>14.0f}")
    lines.append(f"{'  double (provider stand-in)':<27}{'':>9}{result['double_cpu_s']:>9.1f}{'':>40}{result['double_peak_rss_mib']:>14.0f}")
    return "\n".join(lines)


def throughputs(results: list[dict]) -> dict:
    """What synth_assets.plan reads, from the largest size: its rates per CPU second for the
    corpus-wide stages (start-up is ~5% of them there; a marginal rate between two runs
    would carry both runs' load noise), and for the LLM client, whose few hundred calls
    are dominated by start-up, the marginal CPU per call between the two largest sizes."""
    large = results[-1]
    small = results[-2] if len(results) > 1 else None
    ingest, scoring = stage(large, "ingest+dedup"), stage(large, "filtered_textbook scoring")
    grading = stage(large, "grading sample (client)")
    per_call = grading["cpu_s"] / grading["documents"]
    if small is not None:
        fewer = stage(small, "grading sample (client)")
        if grading["documents"] > fewer["documents"] and grading["cpu_s"] > fewer["cpu_s"]:
            per_call = (grading["cpu_s"] - fewer["cpu_s"]) / (grading["documents"] - fewer["documents"])
    return {
        "measured_on_documents": large["size"],
        "ingest_dedup_docs_per_cpu_s": rate(ingest),
        "ingest_dedup_chars_per_cpu_s": ingest["characters"] / ingest["cpu_s"],
        "scoring_docs_per_cpu_s": rate(scoring),
        "scoring_chars_per_cpu_s": scoring["characters"] / scoring["cpu_s"],
        "llm_client_cpu_s_per_call": per_call,
        "ingest_dedup_peak_rss_bytes_per_doc": rss_per_document(small, large),
    }


def rss_per_document(small: dict | None, large: dict) -> float:
    """How much the ingest stage's peak RSS grows per document (marginal between sizes)."""
    big = stage(large, "ingest+dedup")
    if small is None:
        return big["peak_rss_mib"] * 2**20 / big["documents"]
    little = stage(small, "ingest+dedup")
    return (big["peak_rss_mib"] - little["peak_rss_mib"]) * 2**20 / (big["documents"] - little["documents"])


def print_size(result: dict) -> None:
    corpus = result["corpus"]
    print(f"\n== {result['size']:,} documents: {corpus['site_packages_chunks']:,} site-packages chunks, "
          f"{corpus['renamed']:,} renamed, {corpus['planted_copies']:,} planted copies; "
          f"{corpus['characters'] / 1e6:.1f} MB, {corpus['characters'] / result['size']:.0f} chars/doc; "
          f"load average {' -> '.join(f'{x:.1f}' for x in result.get('load_average_1min', []))}; "
          f"DuckDB memory limit {result.get('duckdb_memory_limit', 'DuckDB default (80% of RAM)')}")  # fmt: skip
    print(stage_table(result))
    print("ingest+dedup wall s inside the asset: " + ", ".join(f"{k} {v}" for k, v in result["ingest_seconds"].items()))
    if result.get("near_dedup"):
        print("near dedup (out of core): " + ", ".join(f"{k} {v}" for k, v in result["near_dedup"].items()))
    d = result["dedup"]
    print(f"dedup: {d['exact_duplicates']} exact + {d['near_duplicates']} near duplicates removed; planted pairs in one "
          f"cluster {d['found']}/{d['planted']} ({d['recall']:.4f}), one of the pair dropped {d['resolved']}/{d['planted']}; "
          "by exact shingle Jaccard: " + ", ".join(f"{band} {c['found']}/{c['planted']}" for band, c in d["by_jaccard"].items()))  # fmt: skip
    checks = ", ".join(f"{name} {'pass' if passed else 'FAIL'}" for name, passed in result["checks"].items())
    print(f"checks: {checks}; grader labels {result['labels']}")
    scoring = stage(result, "filtered_textbook scoring")
    print(f"scoring docs/CPU-s: pipeline (lake, all {scoring['documents']} docs) {rate(scoring):.0f}")
    for name, b in result["baselines"].items():
        print(f"  in memory on {b['documents']} {name} docs ({b['characters'] / b['documents']:.0f} chars/doc), median of "
              f"{b['repeats']}: classifier score {b['classifier_score_docs_per_cpu_s']:.0f}, HashingVectorizer alone "
              f"{b['hashing_vectorizer_docs_per_cpu_s']:.0f}")  # fmt: skip
    print(f"  before issue 12 (the issue's figures, stdlib): scoring {BEFORE_SCORING_DOCS_PER_S[0]}-{BEFORE_SCORING_DOCS_PER_S[1]} "
          f"docs/s, HashingVectorizer alone {BEFORE_HASHING_VECTORIZER_DOCS_PER_S[0]}-{BEFORE_HASHING_VECTORIZER_DOCS_PER_S[1]}")  # fmt: skip


def growth_table(results: list[dict]) -> list[dict]:
    growth = []
    for small, large in zip(results, results[1:]):
        n1, n2 = small["size"], large["size"]
        print(f"\ntime-growth exponent log(t2/t1)/log(n2/n1), {n1:,} -> {n2:,}: CPU (wall)")
        for name in [row["stage"] for row in small["stages"]] + ["end to end"]:
            rows = [x["stages"] if name == "end to end" else [stage(x, name)] for x in (small, large)]
            (c1, c2), (w1, w2) = ([sum(r[key] for r in part) for part in rows] for key in ("cpu_s", "wall_s"))
            entry = {"from": n1, "to": n2, "stage": name, "cpu": exponent(c1, c2, n1, n2), "wall": exponent(w1, w2, n1, n2)}
            growth.append(entry)
            print(f"  {name:<27}{entry['cpu']:>6.2f} ({entry['wall']:.2f})")
    return growth


def same_corpus(left: dict, right: dict) -> bool:
    keys = ("documents", "pool_size", "characters", "planted_copies")
    return all(left["corpus"].get(k) == right["corpus"].get(k) for k in keys)


def baseline_comparison(results: list[dict], baseline: dict) -> list[dict]:
    """Side by side with a saved run, per size both have: each stage's docs per CPU second and
    peak RSS (ratio = this run / baseline), and the dedup. Planted copies the baseline found
    and this run lost are listed when both ran on the same corpus (the same site-packages)."""
    before_by_size = {r["size"]: r for r in baseline["results"]}
    print(f"\nagainst the baseline ({baseline['command']}, {baseline['date']}):")
    compared = []
    for result in results:
        before = before_by_size.get(result["size"])
        if before is None:
            continue
        same = same_corpus(before, result)
        print(f"\n{result['size']:,} documents; corpus {'identical' if same else 'differs'} "
              f"(chars {before['corpus']['characters']:,} -> {result['corpus']['characters']:,}, site-packages chunks "
              f"{before['corpus']['pool_size']:,} -> {result['corpus']['pool_size']:,})")  # fmt: skip
        print(f"{'stage':<27}{'docs/CPU-s':>12}{'before':>9}{'ratio':>7}{'peak MiB':>10}{'before':>9}{'ratio':>7}")
        rows = []
        for row in result["stages"]:
            old = next((r for r in before["stages"] if r["stage"] == row["stage"]), None)
            if old is None:
                continue
            entry = {"stage": row["stage"], "docs_per_cpu_s": rate(row), "before_docs_per_cpu_s": rate(old),
                     "peak_rss_mib": row["peak_rss_mib"], "before_peak_rss_mib": old["peak_rss_mib"]}  # fmt: skip
            rows.append(entry)
            print(f"{row['stage']:<27}{rate(row):>12.0f}{rate(old):>9.0f}{rate(row) / rate(old):>7.2f}"
                  f"{row['peak_rss_mib']:>10.0f}{old['peak_rss_mib']:>9.0f}{row['peak_rss_mib'] / old['peak_rss_mib']:>7.2f}")  # fmt: skip
        d, b = result["dedup"], before["dedup"]
        lost = sorted(set(b["found_copies"]) - set(d["found_copies"])) if same else None
        print(f"dedup: exact {b['exact_duplicates']} -> {d['exact_duplicates']}, near {b['near_duplicates']} -> "
              f"{d['near_duplicates']}, planted pairs found {b['found']}/{b['planted']} -> {d['found']}/{d['planted']}; "
              + (f"planted copies found before and lost now: {len(lost)}" if same else
                 "lost copies not comparable (different corpus)"))  # fmt: skip
        compared.append({"size": result["size"], "same_corpus": same, "stages": rows, "lost_planted_copies": lost})
    return compared


def report(results: list[dict], command: str, baseline: dict | None = None) -> dict:
    for result in results:
        print_size(result)
    compared = baseline_comparison(results, baseline) if baseline else []
    growth = growth_table(results)
    largest = results[-1]
    end_to_end = [g for g in growth if g["stage"] == "end to end"]
    at_1m = [r for r in results if r["size"] >= 1_000_000]
    scoring_rate = rate(stage(largest, "filtered_textbook scoring"))
    targets = {
        "peak_rss_1m_under_6gib": (at_1m[0]["peak_rss_mib"] / 1024 < TARGET_PEAK_GIB_AT_1M) if at_1m else None,
        "exponent_at_most_1_1": (end_to_end[-1]["cpu"] <= TARGET_EXPONENT) if end_to_end else None,
        "scoring_at_least_500_docs_per_cpu_s": scoring_rate >= TARGET_SCORING_DOCS_PER_CPU_S,
        # against the baseline's found planted copies, on the same corpus only
        "dedup_loses_no_planted_copy": (
            all(not c["lost_planted_copies"] for c in comparable) if (comparable := [c for c in compared if c["same_corpus"]]) else None
        ),
    }
    print("\ntargets (issue 12):")
    if at_1m:
        print(f"  1M documents under {TARGET_PEAK_GIB_AT_1M:g} GiB peak: {at_1m[0]['peak_rss_mib'] / 1024:.2f} GiB: "
              f"{'MET' if targets['peak_rss_1m_under_6gib'] else 'NOT MET'}")  # fmt: skip
    elif len(results) > 1 and results[-1]["peak_rss_mib"] > results[-2]["peak_rss_mib"]:
        (n1, r1), (n2, r2) = ((r["size"], r["peak_rss_mib"]) for r in results[-2:])
        print(f"  1M documents under {TARGET_PEAK_GIB_AT_1M:g} GiB peak: not run; linear from {n1:,} and {n2:,}: "
              f"~{(r2 + (r2 - r1) / (n2 - n1) * (1_000_000 - n2)) / 1024:.1f} GiB")  # fmt: skip
    if end_to_end:
        print(f"  time exponent <= {TARGET_EXPONENT} (end-to-end CPU, {end_to_end[-1]['from']:,} -> {end_to_end[-1]['to']:,}): "
              f"{end_to_end[-1]['cpu']:.2f}: {'MET' if targets['exponent_at_most_1_1'] else 'NOT MET'}")  # fmt: skip
    chars_per_doc = stage(largest, "filtered_textbook scoring")["characters"] / stage(largest, "filtered_textbook scoring")["documents"]
    print(f"  scoring >= {TARGET_SCORING_DOCS_PER_CPU_S} docs/CPU-s: {scoring_rate:.0f} at {chars_per_doc:.0f} chars/doc: "
          f"{'MET' if targets['scoring_at_least_500_docs_per_cpu_s'] else 'NOT MET'} (stdlib files in memory: "
          f"{largest['baselines']['stdlib']['classifier_score_docs_per_cpu_s']:.0f})")  # fmt: skip
    d = largest["dedup"]
    if targets["dedup_loses_no_planted_copy"] is None:
        print(f"  dedup loses no planted copy that the baseline found: no baseline on the same corpus ({d['found']} of "
              f"{d['planted']} planted pairs found, saved as a reference in the JSON)")  # fmt: skip
    else:
        print(f"  dedup loses no planted copy that the baseline found: "
              f"{'MET' if targets['dedup_loses_no_planted_copy'] else 'NOT MET'}")  # fmt: skip
    return {
        "command": command,
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "load_average_at_end": os.getloadavg()},  # fmt: skip
        "results": results,
        "growth": growth,
        "targets": targets,
        "throughputs": throughputs(results),
        "baseline_comparison": compared,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="corpus sizes in documents")
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of documents that are planted edited copies")
    parser.add_argument("--min-chars", type=int, default=1_000, help="a document is cut at the first block boundary after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.01, help="seconds the grading double takes per answer")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each baseline (median reported)")
    parser.add_argument("--baseline-docs", type=int, default=20_000, help="documents the baselines run on")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new one under the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus and lake")
    parser.add_argument("--out", default="bench/results/scale.json")
    parser.add_argument(
        "--duckdb-memory-limit", default=None,
        help="DuckDB's buffer pool limit in the worker (SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT, e.g. 2GB); default DuckDB's 80%% of RAM",
    )  # fmt: skip
    parser.add_argument("--baseline", default=None, help="a saved JSON of an earlier run to print side by side")
    parser.add_argument("--report", default=None, help="re-print (and rewrite) a saved JSON from its results, running nothing")
    parser.add_argument("--serve-double", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-size", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_double is not None:
        serve_grading_double(args.serve_double)
        return 0
    if args.report is not None:
        saved = json.loads(Path(args.report).read_text())
        baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
        summary = {**report(saved["results"], saved["command"], baseline), "date": saved["date"], "machine": saved["machine"]}
        Path(args.report).write_text(json.dumps(summary, indent=2))
        return 0
    if args.run_size is not None:
        result = run_size(Path(args.run_size), args.latency, args.repeats, args.baseline_docs)
        (Path(args.run_size) / "result.json").write_text(json.dumps(result))
        return 0

    import sysconfig

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    site_packages = sysconfig.get_paths()["purelib"]
    started = time.perf_counter()
    pool = document_pool(site_packages, args.min_chars, args.seed)
    print(f"pool: {len(pool):,} documents from {site_packages} ({time.perf_counter() - started:.0f} s); cpus {os.cpu_count()}")
    results = []
    for size in sorted(args.sizes):
        folder = workdir / f"size-{size}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        manifest = write_corpus(pool, size, args.dup_rate, args.seed, folder)
        print(f"\n{size:,} documents written to {folder} ({manifest['renamed']:,} renamed, {time.perf_counter() - started:.0f} s); running ...", flush=True)
        env = dict(os.environ)
        if args.duckdb_memory_limit:
            env["SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit
        with open(folder / "worker.log", "w") as log:
            worker = subprocess.run(
                [sys.executable, "-m", "bench.scale", "--run-size", str(folder), "--latency", str(args.latency),
                 "--repeats", str(args.repeats), "--baseline-docs", str(args.baseline_docs)],
                stderr=log, env=env,
            )  # fmt: skip
        if worker.returncode != 0:
            print(f"size {size} failed; last lines of {folder / 'worker.log'}:")
            print("".join((folder / "worker.log").read_text().splitlines(keepends=True)[-30:]))
            return 1
        results.append(json.loads((folder / "result.json").read_text()))
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    summary = report(results, command.strip(), baseline)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwritten: {out}")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
