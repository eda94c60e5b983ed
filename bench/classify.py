"""Benchmark: documents/second to featurize and score a corpus with each quality-classifier
feature set, side by side, and the share of time spent featurizing versus predicting.

    .venv/bin/python bench/classify.py                      # stdlib corpus, 40 docs embedded
    .venv/bin/python bench/classify.py --embed-limit 100    # more documents through the local model
    .venv/bin/python bench/classify.py --warehouse data/warehouse.duckdb   # raw_stack_plus if present

Corpus: raw_stack_plus from --warehouse if that table exists, else the .py files of the
running interpreter's standard library (tests excluded). The forest is fitted on a proxy
label (the file opens with a docstring and at least 5% of its lines are comments): the
benchmark measures speed, not quality, so any two-class label will do.

Hashed n-grams run over the whole corpus. Embeddings go through the LLM layer
(`LLMResource()`: the bundled SmolLM2-135M unless OPENAI_* env vars point elsewhere) on
the first --embed-limit documents, truncated to --embed-max-chars like the classifier,
in a fresh scratch warehouse so the first pass is cold; a second pass shows the cached rate.
"""

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.warehouse import Warehouse  # noqa: E402
from synth_assets.filtering.quality_classifier import ClassifierConfig, random_forest  # noqa: E402
from synth_assets.filtering.features import HashedNgramSettings, embed_texts, failed_rows, hashed_ngram_featurizer  # noqa: E402
from synth_assets.common.tables import markdown_table  # noqa: E402

BATCH = 256  # filtered_textbook's default batch size


def stdlib_corpus() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "site-packages" in rel.parts or any("test" in part for part in rel.parts):
            continue
        texts.append(path.read_text(errors="replace"))
    return texts


def load_corpus(warehouse_path: str | None) -> tuple[list[str], str]:
    if warehouse_path and Path(warehouse_path).exists():
        warehouse = Warehouse(path=warehouse_path)
        if warehouse.table_exists("raw_stack_plus"):
            return warehouse.query("SELECT content FROM raw_stack_plus ORDER BY doc_id")["content"].to_list(), "raw_stack_plus"
    return stdlib_corpus(), "stdlib"


def proxy_label(text: str) -> bool:
    lines = text.splitlines() or [""]
    comments = sum(line.lstrip().startswith("#") for line in lines)
    return text.lstrip().startswith(('"""', "'''", 'r"""')) and comments / len(lines) >= 0.05


def balanced_training_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    k = min(n // 2, len(pos), len(neg))
    return np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)])


def bench_hashed(texts: list[str], labels: np.ndarray, train_idx: np.ndarray, config: ClassifierConfig) -> dict:
    featurizer = hashed_ngram_featurizer(HashedNgramSettings(n_features=config.hashed_n_features))
    forest = random_forest(config)
    train = [texts[i] for i in train_idx]
    forest.fit(featurizer.fit_transform(train), labels[train_idx])
    featurize_s = predict_s = 0.0
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        t0 = time.perf_counter()
        features = featurizer.transform(batch)
        t1 = time.perf_counter()
        forest.predict_proba(features)
        predict_s += time.perf_counter() - t1
        featurize_s += t1 - t0
    return timing_row("hashed_ngrams", len(texts), featurize_s, predict_s)


def bench_embeddings(texts: list[str], labels: np.ndarray, config: ClassifierConfig, embed_max_chars: int) -> tuple[dict, dict, dict]:
    import dagster as dg

    from resources.llm import LLMResource

    with tempfile.TemporaryDirectory() as scratch:
        warehouse = Warehouse(path=str(Path(scratch) / "bench.duckdb"))
        llm = LLMResource()
        context = dg.build_asset_context()
        with llm.session(context, warehouse) as session:
            t0 = time.perf_counter()
            vectors = embed_texts(session, texts, embed_max_chars)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            embed_texts(session, texts, embed_max_chars)
            warm_s = time.perf_counter() - t0
            llm_meta = session.metadata()
            model = session.embedding_model
    ok = ~failed_rows(vectors)
    usable = np.flatnonzero(ok)
    train_idx = usable[balanced_training_subset(labels[usable], len(usable))]
    forest = random_forest(config)
    forest.fit(vectors[train_idx], labels[train_idx])
    t0 = time.perf_counter()
    forest.predict_proba(vectors[ok])
    predict_s = time.perf_counter() - t0
    cold = timing_row(f"embeddings ({model}, cold)", len(texts), cold_s, predict_s)
    warm = timing_row(f"embeddings ({model}, cached)", len(texts), warm_s, predict_s)
    return cold, warm, {"failed": int((~ok).sum()), "dim": int(vectors.shape[1]), **llm_meta}


def timing_row(name: str, n: int, featurize_s: float, predict_s: float) -> dict:
    total = featurize_s + predict_s
    return {
        "feature_set": name,
        "documents": n,
        "featurize_s": round(featurize_s, 3),
        "predict_s": round(predict_s, 3),
        "docs_per_s": round(n / total, 1) if total else float("inf"),
        "featurize_share": round(featurize_s / total, 3) if total else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", default=None, help="read raw_stack_plus from this DuckDB file if present")
    parser.add_argument("--embed-limit", type=int, default=40, help="documents embedded through the LLM layer (0 = skip)")
    parser.add_argument("--embed-max-chars", type=int, default=ClassifierConfig().embed_max_chars)
    parser.add_argument("--train", type=int, default=200, help="documents the bench forest is fitted on")
    parser.add_argument("--out", default="bench/results/classify.json")
    args = parser.parse_args(argv)

    texts, corpus_name = load_corpus(args.warehouse)
    labels = np.array([proxy_label(t) for t in texts])
    config = ClassifierConfig()
    print(f"corpus: {corpus_name}, {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f}M characters, "
          f"proxy-positive share {labels.mean():.2f}; forest: {config.n_estimators} trees")
    rows = [bench_hashed(texts, labels, balanced_training_subset(labels, args.train), config)]
    extra = {}
    if args.embed_limit > 0:
        subset = texts[: args.embed_limit]
        cold, warm, extra = bench_embeddings(subset, labels[: args.embed_limit], config, args.embed_max_chars)
        rows += [cold, warm]
    print(markdown_table([list(r.values()) for r in rows], list(rows[0].keys())))
    if extra:
        print("embeddings:", {k: extra[k] for k in ("failed", "dim", "llm/calls", "llm/cache_hits", "llm/prompt_tokens") if k in extra})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"corpus": corpus_name, "rows": rows, "embeddings": extra}, indent=2, default=str))


if __name__ == "__main__":
    main()
