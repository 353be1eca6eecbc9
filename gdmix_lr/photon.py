"""Photon-ML / GDMix file formats, so that their users can switch: models and scores as Avro.

- Models: `BayesianLinearModelAvro` records (Photon-ML's schema, as GDMix writes it): `modelId` (the
  coordinate's name for a fixed effect, the entity id for a random effect), `modelClass`, and `means`,
  a list of `{name, term, value}` with `(INTERCEPT)` first. A feature column `gender=M` is name
  `gender`, term `M`; a column without `=` has an empty term.
- Scores: one record per row with `uid`, the label (`response`), `weight`, `predictionScore` (the
  cumulative score of every coordinate so far) and `predictionScorePerCoordinate` (this coordinate's),
  GDMix's column names.
"""
import fastavro

from modelzoo.io_utils import atomic_writer

NAMESPACE = "com.linkedin.photon.avro.generated"
LOGISTIC_REGRESSION = "com.linkedin.photon.ml.supervised.classification.LogisticRegressionModel"
LOGISTIC_LOSS = "com.linkedin.photon.ml.function.glm.LogisticLossFunction"
INTERCEPT = "(INTERCEPT)"

_NAME_TERM_VALUE = {
    "name": "NameTermValueAvro", "namespace": NAMESPACE, "type": "record",
    "doc": "A tuple of name, term and value. Used as feature or model coefficient",
    "fields": [{"name": "name", "type": "string"}, {"name": "term", "type": "string"},
               {"name": "value", "type": "double"}],
}
MODEL_SCHEMA = fastavro.parse_schema({
    "name": "BayesianLinearModelAvro", "namespace": NAMESPACE, "type": "record",
    "doc": "a generic schema to describe a Bayesian linear model with means and variances",
    "fields": [
        {"name": "modelId", "type": "string"},
        {"name": "modelClass", "type": ["null", "string"], "default": None},
        {"name": "means", "type": {"type": "array", "items": _NAME_TERM_VALUE}},
        {"name": "variances", "type": ["null", {"type": "array", "items": "NameTermValueAvro"}], "default": None},
        {"name": "lossFunction", "type": ["null", "string"], "default": None},
    ],
})
SCORE_SCHEMA = fastavro.parse_schema({
    "name": "ScoringResultAvro", "namespace": NAMESPACE, "type": "record",
    "fields": [
        {"name": "uid", "type": "long"},
        {"name": "response", "type": "int"},
        {"name": "weight", "type": "double"},
        {"name": "predictionScore", "type": "double"},
        {"name": "predictionScorePerCoordinate", "type": "double"},
    ],
})


def name_term(column):
    """`gender=M` -> ("gender", "M"); `age` -> ("age", "")."""
    name, _, term = column.partition("=")
    return name, term


def write_models(path, model_ids, coefficients, columns):
    """One record per model: `coefficients[i]` (intercept first) over `columns` (the bag's feature names)."""
    keys = [(INTERCEPT, "")] + [name_term(c) for c in columns]

    def records():
        for model_id, row in zip(model_ids, coefficients):
            yield {"modelId": str(model_id), "modelClass": LOGISTIC_REGRESSION, "lossFunction": LOGISTIC_LOSS,
                   "variances": None,
                   "means": [{"name": n, "term": t, "value": float(v)} for (n, t), v in zip(keys, row)]}

    with atomic_writer(path, "wb") as f:
        fastavro.writer(f, MODEL_SCHEMA, records())


def write_scores(path, uid, labels, weights, total, own):
    def records():
        for row in zip(uid.tolist(), labels.astype(int).tolist(), weights.tolist(), total.tolist(), own.tolist()):
            yield dict(zip(("uid", "response", "weight", "predictionScore", "predictionScorePerCoordinate"), row))

    with atomic_writer(path, "wb") as f:
        fastavro.writer(f, SCORE_SCHEMA, records())


def read_records(path):
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def read_models(path):
    """{modelId: {(name, term): value}} of a models file (insertion order kept: intercept first)."""
    return {r["modelId"]: {(m["name"], m["term"]): m["value"] for m in r["means"]} for r in read_records(path)}
