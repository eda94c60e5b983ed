"""Issue 12's "dedup loses no planted copy that today's code finds", measured: the pipeline's
out-of-core near dedup and the in-memory reference, side by side on one corpus.

    .venv/bin/python -m bench.dedup_reference --docs 100000    # the issue's size, a few minutes on 2 shared cores
    .venv/bin/python -m bench.dedup_reference --docs 5000      # quick
    .venv/bin/python -m bench.dedup_reference --report bench/results/dedup-reference.json   # re-print a saved run

Corpus: built exactly as bench/scale.py builds it (`document_pool`, `write_corpus`, the same
defaults --seed 0, --dup-rate 0.05, --min-chars 1000), so `--docs 100000` is the corpus
`bench.scale` measures at 100k, as long as this environment's site-packages are unchanged
(the pool size is printed; bench.scale's JSON has it as `pool_size`).

Two routes, each in its own process, one after the other (they never share the cores):

* pipeline: `raw_stack_plus` materialized with `dg.materialize` into a scratch DuckLake, the
  tree as a one-off python_tree source (as bench.scale runs it): shards read and signed,
  exact copies collapsed in SQL, near duplicates by LSH in SQL (synth_assets/ingest/near_dedup.py).
  Its `dedup_removed` and `raw_stack_plus` doc ids are read back from the lake.
* reference ("today's code", synth_assets/ingest/dedup.py): the same files through the same
  reader (`read_python_tree` with the asset's exclude_dirs and max_file_bytes), normalised and
  hashed as ingest does (`normalise_content`, `content_hash`), exact copies collapsed (one per
  doc_id, the smallest origin kept, as raw_stack_plus keeps the smallest source/origin), then
  `near_duplicates_of_texts` in memory (MinHasher signatures, greedy LSH clustering, longest
  kept) with the asset's parameters (the bigcode defaults of `NearDedupParams` unless
  synth_assets.toml sets others; printed).

Compared: documents, exact and near duplicates removed; planted pairs found by each
(`bench.scale.planted_recall`: copy and original end with the same survivor); `lost` = planted
copies the reference finds and the pipeline does not (the target: 0), and the reverse; the
removed near-duplicate sets, A the reference's and B the pipeline's (|A&B|, |A-B|, |B-A|, and
against |A|: the count difference and the symmetric difference; the issue's bar is 2%). Lost
copies are listed with their manifest shingle Jaccard, the pair's estimated Jaccard and LSH
candidacy from the signatures, and what each route did with copy and original.

Measured per route process: wall and CPU seconds of the route's work (getrusage of the
process and its reaped children; DuckDB's threads are the process's), after the imports, and
the process's peak RSS (VmHWM: interpreter and imports included; the RSS after the imports is
printed beside it). The pipeline's figures are the whole asset (reading, normalising, parse
check, token counts, signing, SQL dedup, writing its tables); the reference's are reading,
normalising and the exact and near dedup in memory (nothing written).

Figures go to --out (bench/results/dedup-reference.json, git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import date
from pathlib import Path

from resources.compute import Compute
from bench.scale import cpu_s, document_pool, peak_rss_mib, planted_recall, write_corpus

ROUTES = ("pipeline", "reference")
SOURCE_NAME = "python_tree"  # the `source` a SourceSpec without a name gets
ISSUE_AGREEMENT_BAR = 0.02  # issue 12: the near-duplicate removals within 2% of today's code


# --- what each route's process measures ------------------------------------------------


def current_rss_mib() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def measured(work):
    """(work(), its wall and CPU seconds, the process's peak RSS and its RSS before the work)."""
    rss_before = current_rss_mib()
    cpu_before, wall_before = cpu_s(), time.perf_counter()
    value = work()
    usage = {
        "wall_s": time.perf_counter() - wall_before,
        "cpu_s": cpu_s() - cpu_before,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": rss_before,
    }
    return value, usage


def one_off_config(tree: str):
    """The asset's config for the benchmark tree, with whatever synth_assets.toml adds
    (the asset itself resolves it the same way)."""
    from synth_assets.ingest.raw_stack_plus import RawStackPlusConfig, SourceSpec, lasting_config

    return lasting_config(RawStackPlusConfig(sources=[SourceSpec(kind="python_tree", path=tree)]))


def params_of(config) -> dict:
    from synth_assets.ingest.dedup import NearDedupParams

    params = config.near_params()
    return {**dataclasses.asdict(params), "bigcode_defaults": params == NearDedupParams()}


# --- route 1: the pipeline's out-of-core dedup ------------------------------------------


def pipeline_route(folder: Path) -> dict:
    import dagster as dg

    from resources.warehouse import Warehouse
    from synth_assets.ingest.raw_stack_plus import RAW_TABLE, REMOVED_TABLE, raw_stack_plus

    manifest = json.loads((folder / "manifest.json").read_text())
    shutil.rmtree(folder / "lake", ignore_errors=True)
    warehouse = Warehouse(path=str(folder / "lake"))
    config = one_off_config(manifest["tree"])
    result, usage = measured(
        lambda: dg.materialize(
            [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=dg.RunConfig({"raw_stack_plus": config})
        )
    )
    metadata = result.asset_materializations_for_node("raw_stack_plus")[0].metadata
    near_rows = warehouse.query(
        f"SELECT doc_id, near_duplicate_of, jaccard FROM {REMOVED_TABLE} WHERE reason = 'near_duplicate' ORDER BY doc_id"
    ).rows()
    exact = int(warehouse.query(f"SELECT count(*) AS n FROM {REMOVED_TABLE} WHERE reason = 'exact_duplicate'")["n"][0])
    return {
        "params": params_of(config),
        "documents_read": metadata["documents_read"].value,
        "rejected": metadata["rejected"].value,
        "exact_duplicates": exact,
        "near_duplicates": [list(row) for row in near_rows],
        "kept_doc_ids": warehouse.query(f"SELECT doc_id FROM {RAW_TABLE}")["doc_id"].to_list(),
        "usage": usage,
        "seconds_inside_asset": metadata["seconds"].value,
        "near_dedup_stats": metadata["near_dedup"].value,
    }


# --- route 2: the in-memory reference ----------------------------------------------------


def distinct_documents(tree: str, config) -> tuple[dict[str, tuple[str, str]], int, int]:
    """doc_id -> (origin, normalised content) of the tree's documents, one per doc_id (the
    smallest origin, raw_stack_plus's survivor of exact copies), with the counts of
    documents read and of rejected inputs."""
    from synth_assets.ingest.dedup import content_hash, normalise_content
    from synth_assets.ingest.sources import RawDocument, read_python_tree

    documents: dict[str, tuple[str, str]] = {}
    read = rejected = 0
    records = read_python_tree(tree, SOURCE_NAME, exclude_dirs=config.exclude_dirs, max_bytes=config.max_file_bytes)
    for record in records:
        if not isinstance(record, RawDocument):
            rejected += 1
            continue
        read += 1
        content = normalise_content(record.content)
        doc_id = content_hash(content)
        if doc_id not in documents or record.origin < documents[doc_id][0]:
            documents[doc_id] = (record.origin, content)
    return documents, read, rejected


def planted_pair_signals(planted: list[dict], documents: dict[str, tuple[str, str]], params) -> list[dict]:
    """Per planted pair (manifest order): whether both documents are in the corpus, their
    estimated Jaccard from the MinHash signatures both routes compute, and whether LSH makes
    them candidates (a whole band equal, the banding both routes use)."""
    from synth_assets.common.minhash import MinHasher, lsh_bands, paired_estimated_jaccards

    present = [p["copy"] in documents and p["original"] in documents for p in planted]
    pairs = [p for p, both in zip(planted, present) if both]
    hasher = MinHasher(params)
    copies = hasher.signatures(documents[p["copy"]][1] for p in pairs)
    originals = hasher.signatures(documents[p["original"]][1] for p in pairs)
    bands, rows = lsh_bands(min(params.lsh_threshold, params.threshold), params.num_perm)
    width = bands * rows
    same_band = (copies[:, :width].reshape(-1, bands, rows) == originals[:, :width].reshape(-1, bands, rows)).all(axis=2)
    estimated = paired_estimated_jaccards(copies, originals)
    signals = iter(zip(estimated.tolist(), same_band.any(axis=1).tolist()))
    result = []
    for both in present:
        jaccard, candidate = next(signals) if both else (None, None)
        result.append({"in_corpus": both, "estimated_jaccard": jaccard, "lsh_candidate": candidate})
    return result


def reference_route(folder: Path) -> dict:
    from synth_assets.ingest.dedup import near_duplicates_of_texts

    manifest = json.loads((folder / "manifest.json").read_text())
    config = one_off_config(manifest["tree"])
    params = config.near_params()
    seconds: dict[str, float] = {}

    def work():
        started = time.perf_counter()
        documents, read, rejected = distinct_documents(manifest["tree"], config)
        seconds["read_and_normalise"] = time.perf_counter() - started
        started = time.perf_counter()
        doc_ids = sorted(documents)
        near = near_duplicates_of_texts(doc_ids, [documents[doc_id][1] for doc_id in doc_ids], params)
        seconds["near_dedup"] = time.perf_counter() - started
        return documents, read, rejected, near

    (documents, read, rejected, near), usage = measured(work)
    return {
        "params": params_of(config),
        "documents_read": read,
        "rejected": rejected,
        "exact_duplicates": read - len(documents),
        "near_duplicates": [[n.doc_id, n.near_duplicate_of, n.jaccard] for n in sorted(near, key=lambda n: n.doc_id)],
        "doc_ids": sorted(documents),
        "usage": usage,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        # after the measurement: diagnostics for the planted pairs
        "planted_pair_signals": planted_pair_signals(manifest["planted"], documents, params),
    }


def run_route(route: str, folder: Path) -> dict:
    """One route in its own process (its peak RSS is its own); its JSON comes back."""
    print(f"  {route} ...", flush=True)
    started = time.perf_counter()
    with open(folder / f"{route}.log", "w") as log:
        worker = subprocess.run(
            [sys.executable, "-m", "bench.dedup_reference", "--route", route, "--folder", str(folder)], stderr=log
        )
    if worker.returncode != 0:
        tail = "".join((folder / f"{route}.log").read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"the {route} route failed; last lines of {folder / f'{route}.log'}:\n{tail}")
    outcome = json.loads((folder / f"{route}.json").read_text())
    usage = outcome["usage"]
    print(f"    {usage['wall_s']:.1f} s, {usage['cpu_s']:.1f} CPU s, peak {usage['peak_rss_mib']:.0f} MiB "
          f"(process {time.perf_counter() - started:.0f} s with start-up)", flush=True)  # fmt: skip
    return outcome


# --- the comparison ----------------------------------------------------------------------


def fate(doc_id: str, near: dict[str, tuple[str, float]], present: set[str]) -> str:
    """What a route did with one document."""
    if doc_id not in present:
        return "not in the corpus (rejected, or read back with other content)"
    if doc_id in near:
        survivor, jaccard = near[doc_id]
        return f"dropped as a near duplicate of {survivor} (estimated J {jaccard:.3f})"
    return "kept"


def removed_sets_agreement(reference: dict[str, str], pipeline: dict[str, str]) -> dict:
    """A = the reference's removed near duplicates, B = the pipeline's."""
    a, b = set(reference), set(pipeline)
    both = a & b
    denominator = max(len(a), 1)
    return {
        "reference": len(a),
        "pipeline": len(b),
        "both": len(both),
        "reference_only": len(a - b),
        "pipeline_only": len(b - a),
        "same_survivor_in_both": sum(reference[d] == pipeline[d] for d in both),
        "count_difference_relative": (len(b) - len(a)) / denominator,
        "symmetric_difference_relative": len(a ^ b) / denominator,
        "within_issue_bar": len(a ^ b) <= ISSUE_AGREEMENT_BAR * len(a),
    }


def pair_examples(copies: list[str], manifest: dict, routes: dict[str, dict], limit: int) -> list[dict]:
    """Each planted pair of `copies` (up to `limit`): its Jaccards and each route's doings."""
    index = {p["copy"]: i for i, p in enumerate(manifest["planted"])}
    near = {route: {d: (of, j) for d, of, j in outcome["near_duplicates"]} for route, outcome in routes.items()}
    present = {
        "reference": set(routes["reference"]["doc_ids"]),
        "pipeline": set(routes["pipeline"]["kept_doc_ids"]) | set(near["pipeline"]),
    }
    examples = []
    for copy in copies[:limit]:
        pair = manifest["planted"][index[copy]]
        signals = routes["reference"]["planted_pair_signals"][index[copy]]
        examples.append({
            "copy": copy,
            "original": pair["original"],
            "exact_shingle_jaccard": pair["jaccard"],
            "estimated_jaccard": signals["estimated_jaccard"],
            "lsh_candidate": signals["lsh_candidate"],
            **{f"{route}_{role}": fate(pair[role], near[route], present[route])
               for route in ROUTES for role in ("copy", "original")},
        })  # fmt: skip
    return examples


def compare(manifest: dict, routes: dict[str, dict], examples: int) -> dict:
    threshold = routes["reference"]["params"]["threshold"]
    removed = {route: {d: of for d, of, _ in outcome["near_duplicates"]} for route, outcome in routes.items()}
    recall = {route: planted_recall(removed[route], manifest["planted"], threshold) for route in ROUTES}
    found = {route: set(recall[route]["found_copies"]) for route in ROUTES}
    lost = sorted(found["reference"] - found["pipeline"])
    only_pipeline = sorted(found["pipeline"] - found["reference"])
    pipeline_documents = set(routes["pipeline"]["kept_doc_ids"]) | set(removed["pipeline"])
    return {
        "same_documents": pipeline_documents == set(routes["reference"]["doc_ids"]),
        "same_params": routes["pipeline"]["params"] == routes["reference"]["params"],
        "recall": recall,
        "lost": lost,
        "found_only_by_pipeline": only_pipeline,
        "near_duplicate_agreement": removed_sets_agreement(removed["reference"], removed["pipeline"]),
        "lost_examples": pair_examples(lost, manifest, routes, examples),
        "found_only_by_pipeline_examples": pair_examples(only_pipeline, manifest, routes, examples),
        "planted_pairs_not_in_corpus": sum(not s["in_corpus"] for s in routes["reference"]["planted_pair_signals"]),
    }


# --- the report ---------------------------------------------------------------------------


def route_summary(outcome: dict, recall: dict) -> dict:
    """A route's figures for the saved JSON (without its per-document lists)."""
    lists = ("near_duplicates", "kept_doc_ids", "doc_ids", "planted_pair_signals")
    return {
        **{k: v for k, v in outcome.items() if k not in lists},
        "near_duplicates": len(outcome["near_duplicates"]),
        "planted_found": recall["found"],
        "planted_found_at_or_above_threshold": recall["found_at_or_above_threshold"],
    }


def print_examples(title: str, examples: list[dict], total: int) -> None:
    if not total:
        return
    print(f"\n{title} ({len(examples)} of {total}):")
    for e in examples:
        estimated = "-" if e["estimated_jaccard"] is None else f"{e['estimated_jaccard']:.3f}"
        print(f"  copy {e['copy']} of {e['original']}: exact shingle J {e['exact_shingle_jaccard']}, estimated J "
              f"{estimated}, LSH candidate {e['lsh_candidate']}")  # fmt: skip
        for route in ("reference", "pipeline"):
            print(f"    {route:<10} copy: {e[f'{route}_copy']}; original: {e[f'{route}_original']}")


def print_report(summary: dict) -> None:
    corpus, routes, c = summary["corpus"], summary["routes"], summary["comparison"]
    print(f"\n== {corpus['documents']:,} documents: {corpus['site_packages_chunks']:,} site-packages chunks (pool "
          f"{corpus['pool_size']:,}), {corpus['renamed']:,} renamed, {corpus['planted_copies']:,} planted copies; "
          f"{corpus['characters'] / 1e6:.1f} MB; seed {summary['seed']}, dup rate {summary['dup_rate']}, "
          f"min chars {summary['min_chars']}; load average {' -> '.join(f'{x:.1f}' for x in summary['load_average_1min'])}")  # fmt: skip
    params = routes["reference"]["params"]
    print(f"params: {params['ngram_size']}-gram shingles, {params['num_perm']} permutations, threshold {params['threshold']}, "
          f"LSH tuned for {params['lsh_threshold']}, seed {params['seed']} ({'bigcode defaults' if params['bigcode_defaults'] else 'NOT the defaults'}); "
          f"same in both routes: {c['same_params']}; same distinct documents in both: {c['same_documents']}")  # fmt: skip
    print(f"\n{'route':<11}{'read':>8}{'rejected':>9}{'exact':>7}{'near':>7}{'planted found':>15}{'(>= thr)':>10}"
          f"{'wall s':>8}{'CPU s':>8}{'peak RSS MiB':>14}{'after imports':>15}")  # fmt: skip
    for route in ("reference", "pipeline"):
        r, u, recall = routes[route], routes[route]["usage"], c["recall"][route]
        print(f"{route:<11}{r['documents_read']:>8}{r['rejected']:>9}{r['exact_duplicates']:>7}{r['near_duplicates']:>7}"
              f"{recall['found']:>9}/{recall['planted']:<5}{recall['found_at_or_above_threshold']:>10}"
              f"{u['wall_s']:>8.1f}{u['cpu_s']:>8.1f}{u['peak_rss_mib']:>14.0f}{u['rss_after_imports_mib']:>15.0f}")  # fmt: skip
    print("measured: each route in its own process, one after the other; wall and CPU (getrusage, process + reaped "
          "children) of the route's work after its imports; peak RSS = the process's VmHWM (interpreter and imports "
          "included). pipeline = the whole raw_stack_plus materialization (read, normalise, parse check, sign, SQL dedup, "
          "write the lake); reference = read, normalise, exact + near dedup in memory.")  # fmt: skip
    print(f"  pipeline seconds inside the asset: {routes['pipeline']['seconds_inside_asset']}; near dedup: "
          f"{routes['pipeline']['near_dedup_stats']}")  # fmt: skip
    print(f"  reference seconds: {routes['reference']['seconds']}")
    for route in ("reference", "pipeline"):
        bands = c["recall"][route]["by_jaccard"]
        print(f"  {route} planted pairs found by exact shingle Jaccard: "
              + ", ".join(f"{band} {b['found']}/{b['planted']}" for band, b in bands.items()))  # fmt: skip
    if c["planted_pairs_not_in_corpus"]:
        print(f"  planted pairs with a document not in the corpus (neither route can find them): {c['planted_pairs_not_in_corpus']}")
    a = c["near_duplicate_agreement"]
    print(f"\nremoved near duplicates, A = reference ({a['reference']}), B = pipeline ({a['pipeline']}): |A&B| {a['both']} "
          f"(same survivor {a['same_survivor_in_both']}), |A-B| {a['reference_only']}, |B-A| {a['pipeline_only']}; "
          f"against |A|: count {a['count_difference_relative']:+.2%}, symmetric difference "
          f"{a['symmetric_difference_relative']:.2%} (issue bar {ISSUE_AGREEMENT_BAR:.0%}: "
          f"{'MET' if a['within_issue_bar'] else 'NOT MET'})")  # fmt: skip
    print(f"planted copies the reference finds and the pipeline loses: {len(c['lost'])} "
          f"({'MET' if not c['lost'] else 'NOT MET'}: the target is 0); found only by the pipeline: "
          f"{len(c['found_only_by_pipeline'])}")  # fmt: skip
    print_examples("lost", c["lost_examples"], len(c["lost"]))
    print_examples("found only by the pipeline", c["found_only_by_pipeline_examples"], len(c["found_only_by_pipeline"]))


def run(args: argparse.Namespace, command: str) -> dict:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dedup-reference-"))
    folder = workdir / f"docs-{args.docs}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    site_packages = sysconfig.get_paths()["purelib"]
    started = time.perf_counter()
    pool = document_pool(site_packages, args.min_chars, args.seed)
    manifest = write_corpus(pool, args.docs, args.dup_rate, args.seed, folder)
    del pool
    print(f"corpus: {args.docs:,} documents (pool {manifest['pool_size']:,} from {site_packages}) written to {folder} "
          f"in {time.perf_counter() - started:.0f} s; cpus {os.cpu_count()}; running ...", flush=True)  # fmt: skip
    load_at_start = os.getloadavg()[0]
    routes = {route: run_route(route, folder) for route in ROUTES}
    comparison = compare(manifest, routes, args.examples)
    summary = {
        "command": command,
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "seed": args.seed,
        "dup_rate": args.dup_rate,
        "min_chars": args.min_chars,
        "load_average_1min": [load_at_start, os.getloadavg()[0]],
        "corpus": {k: v for k, v in manifest.items() if k not in ("planted", "tree")},
        "routes": {route: route_summary(routes[route], comparison["recall"][route]) for route in ROUTES},
        "comparison": comparison,
        "targets": {
            "dedup_loses_no_planted_copy": not comparison["lost"],
            "near_duplicates_within_2_percent": comparison["near_duplicate_agreement"]["within_issue_bar"],
        },
    }
    if not args.keep:
        shutil.rmtree(folder if args.workdir else workdir, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="corpus size in documents")
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of documents that are planted edited copies")
    parser.add_argument("--min-chars", type=int, default=1_000, help="a document is cut at the first block boundary after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=5, help="lost (and pipeline-only) pairs listed")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new one under the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus, the lake and each route's JSON")
    parser.add_argument("--out", default="bench/results/dedup-reference.json")
    parser.add_argument("--report", default=None, help="re-print a saved JSON, running nothing")
    parser.add_argument("--route", choices=ROUTES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.route is not None:
        folder = Path(args.folder)
        outcome = pipeline_route(folder) if args.route == "pipeline" else reference_route(folder)
        (folder / f"{args.route}.json").write_text(json.dumps(outcome))
        return 0
    if args.report is not None:
        print_report(json.loads(Path(args.report).read_text()))
        return 0
    command = "python -m bench.dedup_reference " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = run(args, command.strip())
    print_report(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
