"""filtered_textbook: batched scoring covers every row once, kept rows carry the
classifier version and lineage, failed embeddings are recorded, not lost."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.filtering.quality_classifier import ClassifierConfig, record_version, save_model, train_quality_model
from synth_assets.filtering.features import EMBEDDINGS, HASHED_NGRAMS, truncate_for_embedding
from synth_assets.filtering.filtered_textbook import FilterConfig, filtered_textbook, iter_batches, score_histogram
from tests.openai_double import OpenAIDouble, hashed_bag_of_words, TEST_KEY_REF
from tests.test_classify import annotation_rows, junk_doc, labelled_corpus, raw_stack_plus_rows, tutorial_doc


def install_model(warehouse, tmp_path, feature_set: str, embed=None):
    """Train on a small labelled corpus, save the artefact, record the version row."""
    ids, texts, labels = labelled_corpus(12, 12)
    config = ClassifierConfig(
        feature_sets=[feature_set], n_estimators=30, hashed_n_features=2**14, cv_folds=3, embed_max_chars=400
    )
    outcome = train_quality_model(ids, texts, labels, config, embed=embed, embedding_model="double-embed")
    path = save_model(outcome.model, tmp_path / "models")
    record_version(
        warehouse,
        {
            "classifier_version": outcome.model.classifier_version,
            "feature_set": feature_set,
            "artefact_path": str(path),
            "training_data_hash": outcome.model.training_data_hash,
            "n_train": len(ids),
            "metrics_json": "{}",
            "beats_baseline": outcome.beats_baseline,
            "created_at": datetime.now(UTC),
        },
    )
    # the LLM graded the first four training documents
    warehouse.write_table("annotated_sample", annotation_rows(ids[:4], labels[:4].tolist()))
    return outcome.model


def corpus(n_good: int = 13, n_bad: int = 10) -> list[str]:
    """Unseen documents: different seeds from the training corpus."""
    return [tutorial_doc(100 + i) for i in range(n_good)] + [junk_doc(100 + i) for i in range(n_bad)]


def test_iter_batches_covers_every_row_exactly_once(warehouse):
    warehouse.write_table("numbers", pl.DataFrame({"n": list(range(23))}))
    batches = list(iter_batches(warehouse, "SELECT n FROM numbers ORDER BY n", 5))
    assert [b.height for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(pl.concat(batches)["n"].to_list()) == list(range(23))
    exact = list(iter_batches(warehouse, "SELECT n FROM numbers ORDER BY n", 23))
    assert [b.height for b in exact] == [23]


def test_score_histogram_bins_and_unscored(warehouse):
    warehouse.write_table("textbook_scores", pl.DataFrame({"quality_score": [0.05, 0.95, 1.0, None]}))
    md = score_histogram(warehouse)
    assert "| [0.0, 0.1) | 1 |" in md and "| [0.9, 1.0] | 2 |" in md and "| unscored | 1 |" in md


def test_filtered_textbook_scores_all_rows_in_batches(warehouse, tmp_path):
    model = install_model(warehouse, tmp_path, HASHED_NGRAMS)
    texts = corpus() + labelled_corpus(12, 12)[1][:4]  # includes the annotated docs
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    result = dg.materialize(
        [filtered_textbook],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        run_config=dg.RunConfig({"filtered_textbook": FilterConfig(batch_size=4, quality_threshold=0.5)}),
    )
    assert result.success
    scores = warehouse.query("SELECT * FROM textbook_scores")
    assert scores.height == len(texts) and scores["doc_id"].n_unique() == len(texts)
    assert scores["classifier_version"].unique().to_list() == [model.classifier_version]
    assert (scores["kept"] == (scores["quality_score"] >= 0.5)).all()
    assert set(scores["reason"]) <= {"kept", "below_threshold"}

    kept = warehouse.query("SELECT * FROM filtered_textbook")
    assert kept.height == int(scores["kept"].sum())
    assert kept["classifier_version"].unique().to_list() == [model.classifier_version]
    assert (kept["quality_score"] >= 0.5).all()
    assert kept["classifier_training_data_hash"].unique().to_list() == [model.training_data_hash]
    kept_texts = set(kept["content"])
    assert sum(t in kept_texts for t in corpus()[:13]) >= 12  # tutorials kept
    assert sum(t in kept_texts for t in corpus()[13:]) <= 1  # junk dropped
    assert kept.filter(pl.col("in_annotated_sample"))["annotated_educational_score"].null_count() == 0

    meta = result.asset_materializations_for_node("filtered_textbook")[0].metadata
    assert meta["documents/kept"].value + meta["documents/dropped"].value == len(texts)
    assert meta["documents/kept"].value == kept.height
    n_tokens = warehouse.query("SELECT sum(n_tokens) AS t FROM raw_stack_plus")["t"][0]
    assert meta["tokens/kept"].value + meta["tokens/dropped"].value == n_tokens
    assert meta["classifier_version"].value == model.classifier_version
    assert "unscored | 0" in meta["score_histogram"].value


def test_keep_token_share_keeps_the_best_scored_documents_up_to_that_share(warehouse, tmp_path):
    install_model(warehouse, tmp_path, HASHED_NGRAMS)
    texts = corpus()
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    result = dg.materialize(
        [filtered_textbook],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        run_config=dg.RunConfig({"filtered_textbook": FilterConfig(batch_size=7, keep_token_share=0.3)}),
    )
    assert result.success
    ranked = warehouse.query(
        "SELECT s.quality_score, s.kept, r.n_tokens FROM textbook_scores s JOIN raw_stack_plus r USING (doc_id) "
        "ORDER BY s.quality_score DESC"
    )
    total = ranked["n_tokens"].sum()
    kept = ranked.filter(pl.col("kept"))
    meta = result.asset_materializations_for_node("filtered_textbook")[0].metadata
    cut = meta["cut/quality_score"].value
    # the best-scored documents (ties by doc_id) while they hold at most 30% of the tokens
    assert 0.3 * total - ranked["n_tokens"].max() < kept["n_tokens"].sum() <= 0.3 * total
    assert kept["quality_score"].min() == cut and (ranked.filter(~pl.col("kept"))["quality_score"] <= cut).all()
    assert meta["tokens/kept"].value == kept["n_tokens"].sum()
    assert meta["cut/rule"].value == "best 30% of tokens"
    assert warehouse.query("SELECT count(*) AS n FROM filtered_textbook")["n"][0] == kept.height
    assert not warehouse.table_exists("_textbook_raw_scores")


BROKEN = "BREAK_THE_EMBEDDING"


def embed_or_fail(text: str) -> list[float]:
    if BROKEN in text:
        raise ValueError("cannot embed this")
    return hashed_bag_of_words(text)


def test_filtered_textbook_with_embeddings_records_failed_rows(warehouse, tmp_path):
    def train_embed(batch):
        return np.array([hashed_bag_of_words(truncate_for_embedding(t, 400)) for t in batch], dtype=np.float32)

    model = install_model(warehouse, tmp_path, EMBEDDINGS, embed=train_embed)
    texts = corpus(6, 5) + [f"# {BROKEN}\nx = 1\n"]
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    with OpenAIDouble(embed=embed_or_fail) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, embedding_model="text-embedding-3-small",
                          embed_batch_size=1, max_retries=0)
        result = dg.materialize(
            [filtered_textbook],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"filtered_textbook": FilterConfig(batch_size=5)}),
        )
        embedded = [r["input"] for r in server.embedding_requests]
    assert result.success
    # every text went to the endpoint truncated to the classifier's budget
    flat = [t for item in embedded for t in ([item] if isinstance(item, str) else item)]
    assert flat and max(len(t) for t in flat) <= 400
    scores = warehouse.query("SELECT * FROM textbook_scores")
    assert scores.height == len(texts)
    broken = scores.filter(pl.col("reason") == "embedding_failed")
    assert broken.height == 1 and broken["quality_score"][0] is None and not broken["kept"][0]
    assert scores["classifier_version"].unique().to_list() == [model.classifier_version]
    meta = result.asset_materializations_for_node("filtered_textbook")[0].metadata
    assert meta["documents/unscored"].value == 1
    assert meta["llm/calls"].value >= len(texts)
    assert meta["feature_set"].value == EMBEDDINGS


def test_filtered_textbook_without_a_classifier_fails_clearly(warehouse):
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(corpus(1, 1)))
    result = dg.materialize(
        [filtered_textbook],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        raise_on_error=False,
    )
    assert not result.success
    assert "materialize quality_classifier first" in str(result.get_step_failure_events()[0].step_failure_data.error)


def test_the_settings_file_sets_the_cut_for_every_run_and_the_launchpad_wins_for_its_own(
    warehouse, tmp_path, monkeypatch
):
    settings = tmp_path / "synth_assets.toml"
    settings.write_text("[filtered_textbook]\nkeep_token_share = 0.3\nbatch_size = 5\n")
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    install_model(warehouse, tmp_path, HASHED_NGRAMS)
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(corpus()))
    resources = {"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)}

    lasting = dg.materialize([filtered_textbook], resources=resources)
    meta = lasting.asset_materializations_for_node("filtered_textbook")[0].metadata
    assert meta["cut/rule"].value == "best 30% of tokens"
    assert meta["settings_origin"].value == {"keep_token_share": "settings file", "batch_size": "settings file"}

    one_off = dg.materialize(
        [filtered_textbook], resources=resources,
        run_config=dg.RunConfig({"filtered_textbook": FilterConfig(keep_token_share=0.5)}),
    )  # fmt: skip
    meta = one_off.asset_materializations_for_node("filtered_textbook")[0].metadata
    assert meta["cut/rule"].value == "best 50% of tokens"
    assert meta["settings_origin"].value == {"keep_token_share": "launchpad", "batch_size": "settings file"}


def test_scores_are_kept_per_shard_so_a_new_document_is_the_only_one_scored(warehouse, tmp_path):
    from synth_assets.filtering.corpus_scores import corpus_scores

    model = install_model(warehouse, tmp_path, HASHED_NGRAMS)
    texts = corpus()
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts))
    resources = {"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)}

    def scored_this_run() -> tuple[int, dict]:
        result = dg.materialize([filtered_textbook], resources=resources)
        meta = result.asset_materializations_for_node("filtered_textbook")[0].metadata
        kept = dict(warehouse.query("SELECT doc_id, kept FROM textbook_scores").rows())
        return meta["documents/scored_this_run"].value, kept

    first, kept = scored_this_run()
    assert first == len(texts) and len(kept) == len(texts)
    shards = warehouse.query("SELECT shard, count(*) AS n FROM corpus_scores GROUP BY shard ORDER BY shard").rows()
    assert len(shards) == 3 and sum(n for _, n in shards) == len(texts)

    again, kept_again = scored_this_run()  # nothing new: only the cut is made again
    assert again == 0 and kept_again == kept

    late = tutorial_doc(999)
    warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(texts + [late]))
    (late_shard,) = raw_stack_plus_rows([late])["shard"].to_list()
    before = dict(warehouse.query("SELECT doc_id, quality_score FROM corpus_scores").rows())
    after_late, kept_late = scored_this_run()
    assert after_late == 1 and len(kept_late) == len(texts) + 1
    after = dict(warehouse.query("SELECT doc_id, quality_score FROM corpus_scores").rows())
    assert {k: v for k, v in after.items() if k in before} == before

    # the partitioned asset scores one shard's missing documents (none here) for a backfill
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("corpus_shard", [late_shard])
        result = dg.materialize([corpus_scores], resources=resources, instance=instance, partition_key=late_shard)
        meta = result.asset_materializations_for_node("corpus_scores")[0].metadata
        assert meta["documents_scored"].value == 0 and meta["classifier_version"].value == model.classifier_version
    assert dict(warehouse.query("SELECT doc_id, quality_score FROM corpus_scores").rows()) == after

    from quality_checks.checks import all_check_specs, evaluate_spec

    (spec,) = [s for s in all_check_specs() if s.name == "corpus_scores_integrity"]
    assert evaluate_spec(warehouse, spec).passed
    warehouse.execute("UPDATE corpus_scores SET quality_score = 1.5 WHERE doc_id = ?", [next(iter(after))])
    assert not evaluate_spec(warehouse, spec).passed


def test_a_shard_with_nothing_in_raw_stack_plus_is_reported_scored_once(warehouse, tmp_path):
    """A registered shard none of whose documents reached raw_stack_plus (an empty tree
    chunk, a shard of duplicates) has nothing to score: filtered_textbook reports it as a
    corpus_scores partition once, so the UI does not show it missing forever."""
    from synth_assets.filtering.corpus_scores import CORPUS_SCORES_KEY

    install_model(warehouse, tmp_path, HASHED_NGRAMS)
    rows = raw_stack_plus_rows(corpus())
    warehouse.write_table("raw_stack_plus", rows)
    resources = {"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)}
    shards = sorted(set(rows["shard"]))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("corpus_shard", [*shards, "stdlib:tree-0007-of-0008"])
        assert dg.materialize([filtered_textbook], resources=resources, instance=instance).success
        assert instance.get_materialized_partitions(CORPUS_SCORES_KEY) == {*shards, "stdlib:tree-0007-of-0008"}
        events = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=CORPUS_SCORES_KEY, asset_partitions=["stdlib:tree-0007-of-0008"]), limit=10
        ).records
        assert len(events) == 1 and events[0].asset_materialization.metadata["documents"].value == 0
        assert dg.materialize([filtered_textbook], resources=resources, instance=instance).success  # nothing new
        again = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=CORPUS_SCORES_KEY), limit=100).records
        assert len(again) == len(shards) + 1  # no shard reported twice
