"""Near-dedup speed: our vectorised MinHash vs the plain datasketch route, side by side.

Corpus: the running interpreter's standard library (the default `raw_stack_plus`
source) plus lightly edited copies of some files, so there are known near
duplicates. Both routes start from the raw text, use the same tokens (bigcode
split), the same 5-gram shingles, 256 permutations, threshold 0.7, the same
`MinHashLSH` (candidates at 0.6, verified at 0.7) and the same greedy clustering;
only the signature computation differs:

* baseline: one `datasketch.MinHash(num_perm=256)` per document, `update_batch`
  with the encoded shingles (default sha1 hashing);
* ours: `synth_assets.common.minhash.MinHasher`, the MinHash every near-duplicate
  question in the pipeline shares (xxh32 token hashes, vectorised shingle hashes and
  datasketch's affine32 permutations over blocks of documents).

Throughput is documents per CPU second (process time, plus children: there are
none), median over --repeats. Peak memory is measured in a separate, untimed run
of each route under tracemalloc.

    .venv/bin/python bench/dedup.py              # full stdlib (~600 files + copies)
    .venv/bin/python bench/dedup.py --limit 150  # quick
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth_assets.ingest.dedup import (  # noqa: E402
    MinHasher,
    NearDedupParams,
    baseline_minhash,
    cluster_near_duplicates,
    has_shingles,
)
from synth_assets.ingest.sources import RawDocument, read_python_tree, stdlib_path  # noqa: E402

SIGN_BATCH = 512  # documents signed together, as in the asset's batches


def edited_copy(text: str, rng: random.Random) -> str:
    """A small edit: a comment line, one line dropped, one identifier renamed on one line."""
    lines = text.split("\n")
    if len(lines) > 4:
        del lines[rng.randrange(1, len(lines) - 1)]
    lines.insert(rng.randrange(0, len(lines)), "# edited copy for the dedup benchmark")
    target = rng.randrange(0, len(lines))
    lines[target] = lines[target].replace("self", "this", 1)
    return "\n".join(lines)


def build_corpus(limit: int | None, copy_every: int, seed: int) -> tuple[list[str], list[str], dict[str, str]]:
    """(doc ids, texts, planted copy id -> original id)."""
    originals = [r.content for r in read_python_tree(stdlib_path()) if isinstance(r, RawDocument)]
    originals = originals[:limit] if limit else originals
    rng = random.Random(seed)
    ids = [f"orig-{i:04d}" for i in range(len(originals))]
    texts = list(originals)
    planted = {}
    for i in range(0, len(originals), copy_every):
        copy_id = f"copy-{i:04d}"
        ids.append(copy_id)
        texts.append(edited_copy(originals[i], rng))
        planted[copy_id] = ids[i]
    return ids, texts, planted


def run_baseline(ids, texts, params):
    sketches = [baseline_minhash(t, params) for t in texts]
    return cluster_near_duplicates(ids, sketches, [len(t) for t in texts], params)


def run_ours(ids, texts, params):
    hasher = MinHasher(params)
    sketches = []
    for start in range(0, len(texts), SIGN_BATCH):
        for signature in hasher.signatures(texts[start : start + SIGN_BATCH]):
            sketches.append(hasher.lean_minhash(signature) if has_shingles(signature) else None)
    return cluster_near_duplicates(ids, sketches, [len(t) for t in texts], params)


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(route, ids, texts, params):
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    removed = route(ids, texts, params)
    return cpu_seconds() - start_cpu, time.perf_counter() - start_wall, removed


def peak_bytes(route, ids, texts, params) -> int:
    tracemalloc.start()
    route(ids, texts, params)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def planted_recall(removed, planted) -> float:
    """Share of planted (copy, original) pairs that ended in one cluster."""
    representative = {d.doc_id: d.near_duplicate_of for d in removed}
    found = sum(representative.get(c, c) == representative.get(o, o) for c, o in planted.items())
    return found / len(planted) if planted else 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N stdlib files")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per route (median reported)")
    parser.add_argument("--copy-every", type=int, default=3, help="add an edited copy of every Nth file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument(
        "--noise-seeds",
        type=int,
        nargs="*",
        default=[],
        help="also count duplicates (untimed) with these MinHash seeds, to show how much the "
        "counts move with the permutations alone (the noise floor for the 2%% target)",
    )
    args = parser.parse_args(argv)

    params = NearDedupParams()
    ids, texts, planted = build_corpus(args.limit, args.copy_every, args.seed)
    megabytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    print(f"corpus: {len(texts)} documents ({len(planted)} planted edited copies), {megabytes:.1f} MB")
    print(f"params: ngram={params.ngram_size} num_perm={params.num_perm} threshold={params.threshold}")

    routes = {"datasketch baseline": run_baseline, "synth_assets.ingest.dedup": run_ours}
    cpu = {name: [] for name in routes}
    wall = {name: [] for name in routes}
    removed = {}
    for _ in range(args.repeats):
        for name, route in routes.items():
            cpu_s, wall_s, result = timed(route, ids, texts, params)
            cpu[name].append(cpu_s)
            wall[name].append(wall_s)
            removed[name] = result
    peaks = {} if args.no_memory else {name: peak_bytes(route, ids, texts, params) for name, route in routes.items()}

    print()
    header = f"{'route':<22}{'CPU s (median)':>16}{'wall s':>10}{'docs/CPU s':>13}{'peak MiB':>10}{'near dups':>11}{'planted recall':>16}"
    print(header)
    print("-" * len(header))
    rate = {}
    for name in routes:
        median_cpu = statistics.median(cpu[name])
        rate[name] = len(texts) / median_cpu
        peak = f"{peaks[name] / 2**20:.1f}" if peaks else "-"
        print(
            f"{name:<22}{median_cpu:>16.3f}{statistics.median(wall[name]):>10.3f}{rate[name]:>13.0f}"
            f"{peak:>10}{len(removed[name]):>11}{planted_recall(removed[name], planted):>16.3f}"
        )

    base, ours = (removed[name] for name in routes)
    base_ids, our_ids = {d.doc_id for d in base}, {d.doc_id for d in ours}
    speedup = rate["synth_assets.ingest.dedup"] / rate["datasketch baseline"]
    count_diff = abs(len(our_ids) - len(base_ids)) / max(len(base_ids), 1)
    print()
    print(f"speedup (docs per CPU second): {speedup:.2f}x   target >= 3x: {'PASS' if speedup >= 3 else 'FAIL'}")
    print(
        f"duplicate count difference: {count_diff:.2%}   target <= 2%: {'PASS' if count_diff <= 0.02 else 'FAIL'}"
    )
    print(
        f"removed-set agreement: {len(base_ids & our_ids)} in both, {len(base_ids - our_ids)} only baseline, "
        f"{len(our_ids - base_ids)} only ours (Jaccard of sets "
        f"{len(base_ids & our_ids) / max(len(base_ids | our_ids), 1):.3f})"
    )
    if args.noise_seeds:
        print()
        print(f"{'minhash seed':<14}{'baseline dups':>15}{'our dups':>10}{'difference':>12}")
        for seed in args.noise_seeds:
            seeded = NearDedupParams(seed=seed)
            base_n, our_n = len(run_baseline(ids, texts, seeded)), len(run_ours(ids, texts, seeded))
            print(f"{seed:<14}{base_n:>15}{our_n:>10}{abs(our_n - base_n) / max(base_n, 1):>12.2%}")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
