"""quality_classifier: a random forest learns the LLM's educational grades (phi-1
section 2.1) from a cheap representation of the file, so the whole corpus can be
filtered without asking the LLM about every file."""


import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import joblib
import numpy as np
import polars as pl
from pydantic import Field
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from resources.llm import LLMResource
from resources.warehouse import Lake, Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.settings import settings_origin, with_settings
from synth_assets.filtering.features import (
    EMBEDDINGS,
    FEATURE_SETS,
    HASHED_NGRAMS,
    HashedNgramSettings,
    embed_texts,
    failed_rows,
    hashed_ngram_featurizer,
)
from synth_assets.common.tables import markdown_table, table_result

# Bump with any change to featurization, model or selection logic: it is part of the
# classifier version, so a new model never overwrites an old artefact.
CODE_VERSION = "classify-1"
VERSIONS_TABLE = "quality_classifier_versions"
METRICS = ("precision", "recall", "f1", "roc_auc")
BASELINE = "majority_baseline"
SWEEP_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


class ClassifierConfig(dg.Config):
    """How the quality classifier is trained, compared and stored."""

    feature_sets: list[str] = Field(
        default=list(FEATURE_SETS),
        description=f"Representations to compare by cross-validation: any of {list(FEATURE_SETS)}.",
    )
    cv_folds: int = Field(default=5, description="Stratified k-fold cross-validation folds.")
    min_labels_per_class_per_fold: int = Field(
        default=2, description="Each class needs at least this many labels in every fold, or the asset fails."
    )
    seed: int = Field(default=0, description="Seed of the fold split and the random forest.")
    n_estimators: int = Field(
        # phi-1 used a random forest without publishing its size; 200 trees is stable on ~200 labels.
        default=200,
        description="Trees in the random forest.",
    )
    hashed_n_features: int = Field(default=2**18, description="Hash buckets of the code-token n-gram featurizer.")
    embed_max_chars: int = Field(
        # ~100 tokens. Measured (bench/classify.py): the bundled SmolLM2-135M embeds ~11
        # tokens/s on a busy 2-core box in its n_ubatch=1 crash fallback, i.e. ~8 s per
        # 400-character file; a remote endpoint can take 8000 (text-embedding-3-small: 8k tokens).
        default=400,
        description="Only the first embed_max_chars characters of a file are embedded (training and filtering alike).",
    )
    tie_margin: float = Field(
        default=0.01,
        description="If the best feature set's mean CV F1 is within this margin of a cheaper one, keep the cheaper one.",
    )
    artefact_dir: str = Field(
        default="data/models/quality_classifier",
        description="Folder of the versioned model artefacts (<classifier_version>.joblib).",
    )


class InsufficientLabels(ValueError):
    """Too few labels (or a single class) to cross-validate; the message says what to raise."""


def label_requirement_error(
    n_positive: int, n_negative: int, n_failed: int, folds: int, per_fold: int, scores: Sequence[int] | None = None
) -> str | None:
    """None if the labels suffice for `folds`-fold CV, else a message saying how many
    more annotations are needed and which setting to change. With the graded `scores`,
    a single-class message also shows how each label_threshold would split them."""
    needed = folds * per_fold
    minority = min(n_positive, n_negative)
    if minority >= needed:
        return None
    graded = n_positive + n_negative
    head = (
        f"annotated_sample has {n_positive} positive and {n_negative} negative labels "
        f"({n_failed} failed gradings excluded); {folds}-fold CV needs at least {needed} of each class "
        f"({per_fold} per class per fold)."
    )
    if minority == 0:
        only = "positive" if n_positive else "negative"
        return (
            f"{head} All {graded} graded documents are {only}: the labels are a single class. "
            "Move AnnotateConfig.label_threshold (annotated_sample launchpad config, default 3) "
            f"{'up' if only == 'positive' else 'down'} so both classes occur, or grade more documents by "
            "raising AnnotateConfig.max_docs / min_docs; fewer ClassifierConfig.cv_folds also lowers the need."
            + threshold_splits(scores)
        )
    share = minority / graded
    more = math.ceil((needed - minority) / share)
    return (
        f"{head} The minority class is {share:.1%} of the labels, so about {more} more annotations are "
        f"needed: raise AnnotateConfig.max_docs / min_docs (annotated_sample launchpad config) to at least "
        f"{graded + n_failed + more}, or lower ClassifierConfig.cv_folds."
    )


def threshold_splits(scores: Sequence[int] | None) -> str:
    """' label_threshold=2 -> 6 positive / 5 negative; ...' for thresholds 1..5."""
    if not scores:
        return ""
    splits = [f"{t} -> {sum(s >= t for s in scores)} positive / {sum(s < t for s in scores)} negative" for t in range(1, 6)]
    return " Splits of the graded scores by label_threshold: " + "; ".join(splits) + "."


def random_forest(config: ClassifierConfig) -> RandomForestClassifier:
    # class_weight="balanced": LLM grades are skewed and the minority class matters.
    return RandomForestClassifier(
        n_estimators=config.n_estimators, class_weight="balanced", random_state=config.seed, n_jobs=1
    )


def model_for(feature_set: str, config: ClassifierConfig) -> Any:
    """An unfitted estimator that takes the feature set's inputs (texts or vectors)."""
    if feature_set == HASHED_NGRAMS:
        featurizer = hashed_ngram_featurizer(HashedNgramSettings(n_features=config.hashed_n_features))
        return Pipeline([*featurizer.steps, ("forest", random_forest(config))])
    if feature_set == EMBEDDINGS:
        return random_forest(config)
    raise ValueError(f"unknown feature set {feature_set!r}; expected one of {list(FEATURE_SETS)}")


def _take(inputs: Sequence | np.ndarray, index: np.ndarray) -> Any:
    if isinstance(inputs, np.ndarray):
        return inputs[index]
    return [inputs[i] for i in index]


@dataclass
class CVResult:
    """Per-fold metrics and the out-of-fold P(positive) of one estimator."""

    name: str
    folds: list[dict[str, float]]
    out_of_fold: np.ndarray
    labels: np.ndarray

    def mean(self, metric: str) -> float:
        return float(np.mean([f[metric] for f in self.folds]))

    def std(self, metric: str) -> float:
        return float(np.std([f[metric] for f in self.folds]))

    def summary(self) -> dict[str, float]:
        out = {}
        for m in METRICS:
            out[f"{m}_mean"] = round(self.mean(m), 4)
            out[f"{m}_std"] = round(self.std(m), 4)
        return out


def fold_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    predicted = proba >= threshold
    return {
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, proba)),
    }


def positive_proba(model: Any, inputs: Any) -> np.ndarray:
    proba = model.predict_proba(inputs)
    classes = list(model.classes_)
    if True in classes:
        return proba[:, classes.index(True)]
    return np.zeros(proba.shape[0]) if 1 not in classes else proba[:, classes.index(1)]


def cross_validate(
    name: str, make_model: Callable[[], Any], inputs: Sequence | np.ndarray, labels: np.ndarray, folds: int, seed: int
) -> CVResult:
    """Stratified k-fold CV: precision/recall/F1 at 0.5 and ROC-AUC per fold."""
    labels = np.asarray(labels, dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out_of_fold = np.full(labels.shape[0], np.nan)
    per_fold = []
    for train_idx, test_idx in splitter.split(np.zeros(labels.shape[0]), labels):
        model = make_model()
        model.fit(_take(inputs, train_idx), labels[train_idx])
        proba = positive_proba(model, _take(inputs, test_idx))
        out_of_fold[test_idx] = proba
        per_fold.append(fold_metrics(labels[test_idx], proba))
    return CVResult(name=name, folds=per_fold, out_of_fold=out_of_fold, labels=labels)


def majority_baseline(labels: np.ndarray, folds: int, seed: int) -> CVResult:
    """DummyClassifier(most_frequent): the score a classifier must beat."""
    return cross_validate(
        BASELINE, lambda: DummyClassifier(strategy="most_frequent"), np.zeros((len(labels), 1)), labels, folds, seed
    )


def choose_feature_set(results: dict[str, CVResult], tie_margin: float) -> str:
    """Cheapest first (FEATURE_SETS order): a pricier feature set replaces the current
    choice only when its mean CV F1 is higher by more than `tie_margin` *and* by more
    than the standard error of the paired per-fold differences (every feature set is
    cross-validated on the same splits). A gain inside the CV noise does not pay for
    embedding the whole corpus: on 40 labels the folds' F1 varies by +-0.1 or more."""
    if not results:
        raise ValueError("no feature set was evaluated")
    chosen: str | None = None
    for name in FEATURE_SETS:
        if name not in results:
            continue
        if chosen is None:
            chosen = name
            continue
        diffs = np.array([b["f1"] - a["f1"] for a, b in zip(results[chosen].folds, results[name].folds)])
        noise = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
        if float(diffs.mean()) > max(tie_margin, noise):
            chosen = name
    if chosen is None:
        raise ValueError(f"none of {list(results)} is a known feature set {list(FEATURE_SETS)}")
    return chosen


def beats_baseline(result: CVResult, baseline: CVResult) -> bool:
    """Better than always predicting the majority class on both F1 and ROC-AUC."""
    return result.mean("f1") > baseline.mean("f1") and result.mean("roc_auc") > baseline.mean("roc_auc")


def threshold_sweep(labels: np.ndarray, proba: np.ndarray, thresholds: Sequence[float] = SWEEP_THRESHOLDS) -> list[dict]:
    """Out-of-fold precision/recall/F1 and share kept at each quality threshold."""
    labels = np.asarray(labels, dtype=bool)
    rows = []
    for t in thresholds:
        kept = proba >= t
        rows.append(
            {
                "threshold": t,
                "precision": round(float(precision_score(labels, kept, zero_division=0)), 4),
                "recall": round(float(recall_score(labels, kept, zero_division=0)), 4),
                "f1": round(float(f1_score(labels, kept, zero_division=0)), 4),
                "kept_share": round(float(kept.mean()), 4),
            }
        )
    return rows


def metrics_markdown(results: dict[str, CVResult]) -> str:
    rows = [
        [name, *(f"{r.mean(m):.3f} ± {r.std(m):.3f}" for m in METRICS)] for name, r in results.items()
    ]
    return markdown_table(rows, ["model", *METRICS])


def training_data_hash(doc_ids: Sequence[str], labels: Sequence[bool]) -> str:
    """Order-independent hash of (doc_id, label) pairs; doc_id is already a content hash."""
    digest = hashlib.sha256()
    for doc_id, label in sorted(zip(doc_ids, labels, strict=True)):
        digest.update(f"{doc_id}\t{int(bool(label))}\n".encode())
    return digest.hexdigest()[:16]


def classifier_version(data_hash: str, settings: dict[str, Any]) -> str:
    """Hash of the training data, the settings and CODE_VERSION: same inputs, same version."""
    payload = json.dumps({"data": data_hash, "settings": settings, "code": CODE_VERSION}, sort_keys=True)
    return "qc-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class QualityModel:
    """What filtered_textbook needs to score a file: the fitted estimator and how to
    featurize text for it. Saved whole with joblib."""

    classifier_version: str
    feature_set: str
    estimator: Any
    training_data_hash: str
    embed_max_chars: int
    embedding_model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def score(self, texts: list[str], session: Any = None) -> np.ndarray:
        """P(educational) per text; NaN where the embedding failed."""
        if not texts:
            return np.zeros(0)
        if self.feature_set == HASHED_NGRAMS:
            return positive_proba(self.estimator, texts)
        if session is None:
            raise ValueError("the embeddings classifier needs an LLM session to embed texts")
        vectors = embed_texts(session, texts, self.embed_max_chars)
        scores = np.full(len(texts), np.nan)
        ok = ~failed_rows(vectors)
        if ok.any():
            scores[ok] = positive_proba(self.estimator, vectors[ok])
        return scores


def save_model(model: QualityModel, artefact_dir: str | Path) -> Path:
    """Write <artefact_dir>/<classifier_version>.joblib (write-then-rename, so a reader
    never sees half a file)."""
    folder = Path(artefact_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.classifier_version}.joblib"
    partial = path.with_suffix(".joblib.partial")
    joblib.dump(model, partial)
    partial.replace(path)
    return path


def load_model(path: str | Path) -> QualityModel:
    model = joblib.load(path)
    if not isinstance(model, QualityModel):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a QualityModel")
    return model


def _in_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Time-zone-aware columns in "UTC": the lake gives them back as "Etc/UTC", which polars
    will not concatenate with a "UTC" column (a re-trained version's history failed so)."""
    aware = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime) and dtype.time_zone]
    return frame.with_columns(pl.col(name).dt.convert_time_zone("UTC") for name in aware)


def record_version(warehouse: Warehouse | Lake, row: dict[str, Any]) -> None:
    """Upsert one row of quality_classifier_versions (history of every trained model):
    the history without this version plus its new row, written as one table, so the
    upsert is one atomic write (DuckLake has no upsert)."""
    frame = pl.DataFrame([row])
    if warehouse.table_exists(VERSIONS_TABLE):
        history = warehouse.query(f"SELECT * FROM {VERSIONS_TABLE} WHERE classifier_version <> ?", [row["classifier_version"]])
        frame = pl.concat([_in_utc(history), _in_utc(frame)], how="diagonal_relaxed")
    warehouse.write_table(VERSIONS_TABLE, frame)


def load_training_data(warehouse: Warehouse) -> tuple[pl.DataFrame, dict[str, int]]:
    """Graded rows with their content; failed gradings and rows whose document left
    raw_stack_plus are counted, not used."""
    rows = warehouse.query(
        "SELECT a.doc_id, a.label, a.educational_score, a.status, r.content FROM annotated_sample a "
        "LEFT JOIN raw_stack_plus r USING (doc_id) ORDER BY a.doc_id"
    )
    excluded = {
        "failed_grading": int(rows["label"].is_null().sum()),
        "missing_content": int((rows["label"].is_not_null() & rows["content"].is_null()).sum()),
    }
    usable = rows.filter(pl.col("label").is_not_null() & pl.col("content").is_not_null())
    return usable.select("doc_id", "label", "educational_score", "content"), excluded


@dataclass
class TrainingOutcome:
    model: QualityModel
    results: dict[str, CVResult]
    skipped: dict[str, str]
    chosen: str
    beats_baseline: bool
    sweep: list[dict]


def train_quality_model(
    doc_ids: list[str],
    texts: list[str],
    labels: np.ndarray,
    config: ClassifierConfig,
    embed: Callable[[list[str]], np.ndarray] | None,
    embedding_model: str | None,
    n_failed_gradings: int = 0,
    scores: Sequence[int] | None = None,
) -> TrainingOutcome:
    """Cross-validate every configured feature set and the majority baseline, pick one
    by `choose_feature_set`, fit it on all labels. Raises InsufficientLabels."""
    labels = np.asarray(labels, dtype=bool)
    unknown = set(config.feature_sets) - set(FEATURE_SETS)
    if unknown or not config.feature_sets:
        raise ValueError(f"feature_sets must be a non-empty subset of {list(FEATURE_SETS)}, got {config.feature_sets}")
    message = label_requirement_error(
        int(labels.sum()), int((~labels).sum()), n_failed_gradings, config.cv_folds,
        config.min_labels_per_class_per_fold, scores,
    )
    if message:
        raise InsufficientLabels(message)
    data_hash = training_data_hash(doc_ids, labels.tolist())
    settings = {**config.model_dump(exclude={"artefact_dir"}), "embedding_model": embedding_model}
    version = classifier_version(data_hash, settings)

    results: dict[str, CVResult] = {}
    skipped: dict[str, str] = {}
    inputs: dict[str, Any] = {}
    row_masks: dict[str, np.ndarray] = {}
    for name in FEATURE_SETS:
        if name not in config.feature_sets:
            continue
        if name == HASHED_NGRAMS:
            inputs[name], row_masks[name] = texts, np.ones(len(texts), dtype=bool)
        else:
            if embed is None:
                skipped[name] = "no embedding function available"
                continue
            vectors = embed(texts)
            ok = ~failed_rows(vectors)
            sub_labels = labels[ok]
            problem = label_requirement_error(
                int(sub_labels.sum()), int((~sub_labels).sum()), int((~ok).sum()),
                config.cv_folds, config.min_labels_per_class_per_fold,
            )
            if problem:
                skipped[name] = f"{int((~ok).sum())} embeddings failed; {problem}"
                continue
            inputs[name], row_masks[name] = vectors[ok], ok
        mask = row_masks[name]
        results[name] = cross_validate(
            name, lambda n=name: model_for(n, config), inputs[name], labels[mask], config.cv_folds, config.seed
        )
    if not results:
        raise ValueError(f"no feature set could be evaluated: {skipped}")
    baseline = majority_baseline(labels, config.cv_folds, config.seed)
    chosen = choose_feature_set(results, config.tie_margin)
    estimator = model_for(chosen, config)
    estimator.fit(inputs[chosen], labels[row_masks[chosen]])
    won = beats_baseline(results[chosen], baseline)
    all_results = {**results, BASELINE: baseline}
    metrics = {
        "cv": {name: r.summary() for name, r in all_results.items()},
        "chosen_feature_set": chosen,
        "selection_rule": f"cheapest of {list(FEATURE_SETS)} unless a pricier one's mean CV F1 is higher by more than "
        f"{config.tie_margin} and more than the standard error of the paired fold differences",
        "skipped": skipped,
        "beats_baseline": won,
    }
    model = QualityModel(
        classifier_version=version,
        feature_set=chosen,
        estimator=estimator,
        training_data_hash=data_hash,
        embed_max_chars=config.embed_max_chars,
        embedding_model=embedding_model if chosen == EMBEDDINGS else None,
        metrics=metrics,
    )
    sweep = threshold_sweep(results[chosen].labels, results[chosen].out_of_fold)
    return TrainingOutcome(model=model, results=all_results, skipped=skipped, chosen=chosen, beats_baseline=won, sweep=sweep)


def outcome_metadata(outcome: TrainingOutcome, artefact_path: Path, n_train: int, excluded: dict[str, int]) -> dict:
    meta: dict[str, Any] = {
        "classifier_version": outcome.model.classifier_version,
        "chosen_feature_set": outcome.chosen,
        "selection_rule": outcome.model.metrics["selection_rule"],
        "beats_baseline": outcome.beats_baseline,
        "artefact_path": str(artefact_path),
        "training_data_hash": outcome.model.training_data_hash,
        "n_train": n_train,
        "excluded/failed_gradings": excluded.get("failed_grading", 0),
        "excluded/missing_content": excluded.get("missing_content", 0),
        "cv_metrics": dg.MetadataValue.md(metrics_markdown(outcome.results)),
        "threshold_sweep": dg.MetadataValue.md(
            markdown_table([list(r.values()) for r in outcome.sweep], list(outcome.sweep[0].keys()))
        ),
    }
    for name, result in outcome.results.items():
        for m in METRICS:
            meta[f"cv/{name}/{m}"] = round(result.mean(m), 4)
    for name, reason in outcome.skipped.items():
        meta[f"skipped/{name}"] = reason
    return meta


@dg.asset(
    deps=[dg.AssetKey("annotated_sample"), dg.AssetKey("raw_stack_plus")],
    group_name="filtering",
    kinds={"duckdb", "python", "scikitlearn"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def quality_classifier(
    context: dg.AssetExecutionContext, config: ClassifierConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """A random forest that predicts the LLM's educational label from a file's content.

    Trains on annotated_sample (failed gradings excluded and counted) joined with the
    content in raw_stack_plus. Compares feature sets by stratified k-fold CV (precision,
    recall, F1, ROC-AUC) against a majority-class DummyClassifier: hashed code-token
    n-grams + TF-IDF (cheap) and LLM-layer embeddings of the first `embed_max_chars`
    characters. Keeps the cheaper hashed n-grams unless embeddings' mean CV F1 is higher by more than
    `tie_margin` and by more than the CV noise (standard error of the paired fold differences).

    The fitted model is a joblib artefact at `<artefact_dir>/<classifier_version>.joblib`;
    the version hashes the training labels, the settings and the code version. One row
    per version goes to `quality_classifier_versions`. Too few labels or a single class
    fails with a message naming the setting to raise.
    """
    settings_from = settings_origin(config, "quality_classifier")  # before the merge: what the launchpad set
    config = with_settings(config, "quality_classifier")
    data, excluded = load_training_data(warehouse)
    doc_ids, texts = data["doc_id"].to_list(), data["content"].to_list()
    labels = data["label"].to_numpy().astype(bool)
    scores = data["educational_score"].to_list()
    llm_metadata: dict[str, Any] = {}
    try:
        if EMBEDDINGS in config.feature_sets:
            with llm.session(context, warehouse) as session:
                outcome = train_quality_model(
                    doc_ids, texts, labels, config,
                    embed=lambda batch: embed_texts(session, batch, config.embed_max_chars),
                    embedding_model=session.embedding_model,
                    n_failed_gradings=excluded["failed_grading"], scores=scores,
                )
                llm_metadata = session.metadata()
        else:
            outcome = train_quality_model(
                doc_ids, texts, labels, config, embed=None, embedding_model=None,
                n_failed_gradings=excluded["failed_grading"], scores=scores,
            )
    except InsufficientLabels as exc:
        raise dg.Failure(description=str(exc)) from exc
    path = save_model(outcome.model, config.artefact_dir)
    with warehouse.materialization(context) as lake:
        record_version(
            lake,
            {
                "classifier_version": outcome.model.classifier_version,
                "feature_set": outcome.chosen,
                "artefact_path": str(path),
                "training_data_hash": outcome.model.training_data_hash,
                "n_train": len(doc_ids),
                "metrics_json": json.dumps(outcome.model.metrics, sort_keys=True),
                "beats_baseline": outcome.beats_baseline,
                "created_at": datetime.now(UTC),
            },
        )
    if not outcome.beats_baseline:
        context.log.warning(f"{outcome.chosen} does not beat the majority-class baseline; see cv_metrics")
    return table_result(
        warehouse,
        VERSIONS_TABLE,
        {
            **outcome_metadata(outcome, path, len(doc_ids), excluded),
            "settings_origin": dg.MetadataValue.json(settings_from),
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
