"""quality_classifier: CV metrics against a majority baseline on a separable corpus,
the feature-set rule, clear errors for too few labels, versioned joblib artefacts."""

import hashlib
import json
import random

import dagster as dg
import numpy as np
import polars as pl
import pytest

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.filtering.quality_classifier import (
    BASELINE,
    VERSIONS_TABLE,
    ClassifierConfig,
    CVResult,
    InsufficientLabels,
    choose_feature_set,
    classifier_version,
    label_requirement_error,
    load_model,
    quality_classifier,
    save_model,
    threshold_sweep,
    train_quality_model,
    training_data_hash,
)
from synth_assets.filtering.features import EMBEDDINGS, HASHED_NGRAMS, code_tokens
from tests.openai_double import OpenAIDouble, hashed_bag_of_words, TEST_KEY_REF

NOUNS = ["apple", "invoice", "student", "planet", "ticket", "recipe", "sensor", "library", "garden", "rocket"]
VERBS = ["count", "sort", "filter", "average", "collect", "find", "group", "clean"]


def tutorial_doc(i: int) -> str:
    """Docstring-rich, commented, textbook-like code."""
    rng = random.Random(i)
    noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
    return f'''"""Lesson {i}: how to {verb} a list of {noun}s.

This example explains, step by step, how a for loop and an if statement work.
"""


def {verb}_{noun}s_{i}(items):
    """Return the {noun}s we want to keep.

    Args:
        items: a list of numbers describing each {noun}.
    """
    # Start with an empty list and add each item that passes the test.
    result = []
    for item in items:
        # Keep only the items larger than {i % 7}.
        if item > {i % 7}:
            result.append(item)
    return result


if __name__ == "__main__":
    # Try it out with a small example.
    print({verb}_{noun}s_{i}([1, 2, 3, {i}]))
'''


def junk_doc(i: int) -> str:
    """Minified, uncommented, generated-looking code."""
    rng = random.Random(10_000 + i)
    names = ["".join(rng.choice("qzxjkvw") for _ in range(3)) for _ in range(4)]
    a, b, c, d = names
    return (
        f"{a}=lambda _{i}:[_{i}^{rng.randint(1, 99)}for _ in range({i})];{b}={a}({rng.randint(0, 9)});"
        f"{c}={{k:v for k,v in zip({b},{b}[1:])}};{d}=[{c}.get(x,0)|{i}for x in {b}];exec('{a}0=1')\n"
        f"__all__=[{a!r},{b!r}];{a}1,{b}1=0x{rng.randint(16, 255):x},0o{rng.randint(8, 63):o}\n"
    )


def doc_id(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def labelled_corpus(n_good: int = 20, n_bad: int = 20) -> tuple[list[str], list[str], np.ndarray]:
    texts = [tutorial_doc(i) for i in range(n_good)] + [junk_doc(i) for i in range(n_bad)]
    labels = np.array([True] * n_good + [False] * n_bad)
    return [doc_id(t) for t in texts], texts, labels


def bag_of_words_embed(texts: list[str]) -> np.ndarray:
    return np.array([hashed_bag_of_words(t) for t in texts], dtype=np.float32)


def raw_stack_plus_rows(texts: list[str], source: str = "synthetic") -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "doc_id": doc_id(t),
                "source": source,
                "origin": f"{source}/{doc_id(t)}.py",
                "repo": source,
                "license": "MIT",
                "content": t,
                "n_chars": len(t),
                "n_lines": t.count("\n") + 1,
                "n_tokens": len(code_tokens(t)),
                "parses_as_python": True,
                "shard": f"{source}:part-{int(doc_id(t)[:8], 16) % 3}",  # three corpus shards
            }
            for t in texts
        ]
    )


def annotation_rows(doc_ids: list[str], labels: list[bool | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "doc_id": d,
                "source": "synthetic",
                "educational_score": None if label is None else (4 if label else 1),
                "rationale": None if label is None else "test",
                "label": label,
                "model": "gpt-4o-mini",
                "prompt_version": "test",
                "cache_key": f"k{d}",
                "status": "error" if label is None else "ok",
                "error": "invalid JSON" if label is None else None,
                "raw_response": "?",
            }
            for d, label in zip(doc_ids, labels, strict=True)
        ],
        schema_overrides={"educational_score": pl.Int64, "label": pl.Boolean, "error": pl.String, "rationale": pl.String},
    )


# -------------------------------------------------------------------------- plain


def test_code_tokens_split_identifiers_numbers_and_punctuation():
    assert code_tokens("def f(x_1): return x_1 + 2.5  # hi") == [
        "def", "f", "(", "x_1", ")", ":", "return", "x_1", "+", "2.5", "#", "hi",
    ]


def test_label_requirement_messages_name_the_settings():
    assert label_requirement_error(10, 10, 0, folds=5, per_fold=2) is None
    single = label_requirement_error(0, 37, 3, folds=5, per_fold=2)
    assert "single class" in single and "label_threshold" in single and "negative" in single
    assert "max_docs" in single
    few = label_requirement_error(4, 36, 0, folds=5, per_fold=2)
    # 6 more positives needed at a 10% positive share -> 60 more annotations
    assert "60 more annotations" in few and "max_docs" in few and "cv_folds" in few


def test_hashed_ngrams_beat_baseline_on_separable_corpus():
    ids, texts, labels = labelled_corpus()
    config = ClassifierConfig(feature_sets=[HASHED_NGRAMS], n_estimators=50, hashed_n_features=2**14)
    outcome = train_quality_model(ids, texts, labels, config, embed=None, embedding_model=None)
    assert outcome.chosen == HASHED_NGRAMS
    assert set(outcome.results) == {HASHED_NGRAMS, BASELINE}
    hashed, baseline = outcome.results[HASHED_NGRAMS], outcome.results[BASELINE]
    assert len(hashed.folds) == 5 and set(hashed.folds[0]) == {"precision", "recall", "f1", "roc_auc"}
    assert hashed.mean("f1") >= 0.9 and hashed.mean("roc_auc") >= 0.95
    assert baseline.mean("roc_auc") == pytest.approx(0.5)
    assert outcome.beats_baseline
    scores = outcome.model.score([tutorial_doc(99), junk_doc(99)])
    assert scores[0] > 0.5 > scores[1]
    sweep = outcome.sweep
    assert [r["threshold"] for r in sweep] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    shares = [r["kept_share"] for r in sweep]
    assert shares == sorted(shares, reverse=True)


def test_single_class_labels_raise_with_the_setting_to_change():
    ids, texts, _ = labelled_corpus(10, 10)
    with pytest.raises(InsufficientLabels, match="label_threshold"):
        train_quality_model(ids, texts, np.zeros(20, dtype=bool), ClassifierConfig(), embed=None, embedding_model=None)


def _cv(name: str, f1: float) -> CVResult:
    folds = [{"precision": f1, "recall": f1, "f1": f1, "roc_auc": f1}]
    return CVResult(name=name, folds=folds, out_of_fold=np.zeros(1), labels=np.zeros(1, dtype=bool))


def test_feature_set_rule_prefers_cheaper_within_margin():
    assert choose_feature_set({HASHED_NGRAMS: _cv(HASHED_NGRAMS, 0.80), EMBEDDINGS: _cv(EMBEDDINGS, 0.805)}, 0.01) == HASHED_NGRAMS
    assert choose_feature_set({HASHED_NGRAMS: _cv(HASHED_NGRAMS, 0.70), EMBEDDINGS: _cv(EMBEDDINGS, 0.80)}, 0.01) == EMBEDDINGS
    assert choose_feature_set({EMBEDDINGS: _cv(EMBEDDINGS, 0.3)}, 0.01) == EMBEDDINGS


def test_both_feature_sets_are_cross_validated_with_embeddings():
    ids, texts, labels = labelled_corpus(15, 15)
    config = ClassifierConfig(n_estimators=30, hashed_n_features=2**14, cv_folds=3)
    outcome = train_quality_model(ids, texts, labels, config, embed=bag_of_words_embed, embedding_model="bow-64")
    assert set(outcome.results) == {HASHED_NGRAMS, EMBEDDINGS, BASELINE}
    assert outcome.results[EMBEDDINGS].mean("roc_auc") > 0.9
    assert outcome.model.metrics["chosen_feature_set"] == outcome.chosen


def test_failed_embeddings_are_left_out_of_embedding_training():
    ids, texts, labels = labelled_corpus(12, 12)

    def flaky_embed(batch):
        vectors = bag_of_words_embed(batch)
        vectors[0] = np.nan
        return vectors

    config = ClassifierConfig(n_estimators=20, hashed_n_features=2**14, cv_folds=3)
    outcome = train_quality_model(ids, texts, labels, config, embed=flaky_embed, embedding_model="bow")
    assert len(outcome.results[EMBEDDINGS].labels) == 23
    assert len(outcome.results[HASHED_NGRAMS].labels) == 24


def test_threshold_sweep_counts():
    rows = threshold_sweep(np.array([True, True, False, False]), np.array([0.9, 0.4, 0.6, 0.1]), [0.5])
    assert rows == [{"threshold": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "kept_share": 0.5}]


def test_version_is_stable_and_tracks_data_and_settings():
    h = training_data_hash(["b", "a"], [True, False])
    assert h == training_data_hash(["a", "b"], [False, True])
    assert h != training_data_hash(["a", "b"], [True, True])
    assert classifier_version(h, {"n": 1}) == classifier_version(h, {"n": 1})
    assert classifier_version(h, {"n": 1}) != classifier_version(h, {"n": 2})


def test_model_artefact_round_trips(tmp_path):
    ids, texts, labels = labelled_corpus(10, 10)
    config = ClassifierConfig(feature_sets=[HASHED_NGRAMS], n_estimators=20, hashed_n_features=2**12, cv_folds=2)
    model = train_quality_model(ids, texts, labels, config, embed=None, embedding_model=None).model
    path = save_model(model, tmp_path / "models")
    assert path == tmp_path / "models" / f"{model.classifier_version}.joblib"
    loaded = load_model(path)
    assert loaded.classifier_version == model.classifier_version
    np.testing.assert_allclose(loaded.score(texts[:4]), model.score(texts[:4]))


# -------------------------------------------------------------------------- asset


def write_training_tables(warehouse, n_good=15, n_bad=15, n_failed=2):
    ids, texts, labels = labelled_corpus(n_good, n_bad + n_failed)
    label_list: list[bool | None] = labels.tolist()
    for k in range(n_failed):
        label_list[-1 - k] = None
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    warehouse.write_table("annotated_sample", annotation_rows(ids, label_list))
    return ids


def test_quality_classifier_asset_trains_saves_and_records_a_version(warehouse, tmp_path):
    write_training_tables(warehouse)
    artefacts = tmp_path / "models"
    with OpenAIDouble() as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                          embedding_model="text-embedding-3-small")
        config = ClassifierConfig(n_estimators=30, hashed_n_features=2**14, cv_folds=3, artefact_dir=str(artefacts))
        result = dg.materialize(
            [quality_classifier], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"quality_classifier": config}),
        )
        assert len(server.embedding_requests) >= 1
    assert result.success
    versions = warehouse.query(f"SELECT * FROM {VERSIONS_TABLE}")
    assert versions.height == 1
    row = versions.row(0, named=True)
    assert row["n_train"] == 30 and row["beats_baseline"]
    assert row["feature_set"] in (HASHED_NGRAMS, EMBEDDINGS)
    assert row["artefact_path"] == str(artefacts / f"{row['classifier_version']}.joblib")
    assert load_model(row["artefact_path"]).training_data_hash == row["training_data_hash"]
    metrics = json.loads(row["metrics_json"])
    assert set(metrics["cv"]) == {HASHED_NGRAMS, EMBEDDINGS, BASELINE}

    meta = result.asset_materializations_for_node("quality_classifier")[0].metadata
    assert meta["excluded/failed_gradings"].value == 2
    assert meta["cv/hashed_ngrams/f1"].value > meta["cv/majority_baseline/f1"].value
    assert "| majority_baseline |" in meta["cv_metrics"].value
    assert "kept_share" in meta["threshold_sweep"].value
    assert meta["classifier_version"].value == row["classifier_version"]
    assert meta["llm/calls"].value >= 1


def test_quality_classifier_single_class_fails_naming_the_setting(warehouse, tmp_path):
    ids, texts, _ = labelled_corpus(12, 0)
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    warehouse.write_table("annotated_sample", annotation_rows(ids, [True] * 12))
    config = ClassifierConfig(feature_sets=[HASHED_NGRAMS], artefact_dir=str(tmp_path / "m"))
    result = dg.materialize(
        [quality_classifier],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        run_config=dg.RunConfig({"quality_classifier": config}),
        raise_on_error=False,
    )
    assert not result.success
    error = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "single class" in error and "label_threshold" in error and "12 positive and 0 negative" in error
    # the graded scores (all 4) and how each threshold would split them
    assert "4 -> 12 positive / 0 negative; 5 -> 0 positive / 12 negative" in error
    assert not (tmp_path / "m").exists()


def _cv_folds(name: str, f1s: list[float]) -> CVResult:
    folds = [{"precision": f, "recall": f, "f1": f, "roc_auc": f} for f in f1s]
    return CVResult(name=name, folds=folds, out_of_fold=np.zeros(1), labels=np.zeros(1, dtype=bool))


def test_feature_set_rule_needs_a_gain_larger_than_the_cv_noise():
    hashed = _cv_folds(HASHED_NGRAMS, [0.6, 0.7, 0.8])
    noisy_gain = _cv_folds(EMBEDDINGS, [0.9, 0.5, 0.9])  # +0.067 on average, fold diffs +0.3 / -0.2 / +0.1
    steady_gain = _cv_folds(EMBEDDINGS, [0.7, 0.8, 0.9])  # +0.1 in every fold
    assert choose_feature_set({HASHED_NGRAMS: hashed, EMBEDDINGS: noisy_gain}, 0.01) == HASHED_NGRAMS
    assert choose_feature_set({HASHED_NGRAMS: hashed, EMBEDDINGS: steady_gain}, 0.01) == EMBEDDINGS


def test_the_settings_file_configures_every_training_run(warehouse, tmp_path, monkeypatch):
    settings = tmp_path / "synth_assets.toml"
    artefacts = tmp_path / "from_settings"
    settings.write_text(
        f'[quality_classifier]\nfeature_sets = ["{HASHED_NGRAMS}"]\nn_estimators = 30\ncv_folds = 3\n'
        f'artefact_dir = "{artefacts}"\n'
    )
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    write_training_tables(warehouse)
    result = dg.materialize(
        [quality_classifier],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
    )
    assert result.success
    row = warehouse.query(f"SELECT * FROM {VERSIONS_TABLE}").row(0, named=True)
    assert row["feature_set"] == HASHED_NGRAMS and row["artefact_path"].startswith(str(artefacts))
    origin = result.asset_materializations_for_node("quality_classifier")[0].metadata["settings_origin"].value
    assert set(origin.values()) == {"settings file"} and "artefact_dir" in origin


def test_record_version_upserts_over_history_read_back_from_the_lake(warehouse):
    """Re-training records over a history the lake gives back with "Etc/UTC" timestamps: the
    same version is replaced, another is added (this failed on a re-materialization)."""
    from datetime import UTC, datetime

    from synth_assets.filtering.quality_classifier import VERSIONS_TABLE, record_version

    def row(version: str) -> dict:
        return {"classifier_version": version, "feature_set": "hashed_ngrams", "artefact_path": f"/m/{version}.joblib",
                "training_data_hash": "h", "n_train": 4, "metrics_json": "{}", "beats_baseline": True,
                "created_at": datetime.now(UTC)}

    record_version(warehouse, row("v1"))
    record_version(warehouse, row("v1"))
    record_version(warehouse, row("v2"))
    versions = warehouse.query(f"SELECT classifier_version FROM {VERSIONS_TABLE} ORDER BY 1")
    assert versions["classifier_version"].to_list() == ["v1", "v2"]
