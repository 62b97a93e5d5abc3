"""Score a Spark DataFrame with a registered model: mapInArrow over the score job's own batch function.

For people who hold a DataFrame rather than a Delta table (an analyst's join in a notebook, a pipeline's filtered
query): the pickle-free, stamped counterpart of MLflow's `pyfunc.spark_udf`. The model is resolved and validated
once, on the driver (engine.models.registry.fetch_bundle: a pickle-based artifact is refused unless `allow_pickle`). Its
bundle (the artifact's bytes and its JSON preprocessing spec, plain data: Spark's transport pickles that, never a
model object) is broadcast once, and each Python worker loads the model once (engine.models.scorers.cached_scorer; Spark
reuses Python workers across tasks, `spark.python.worker.reuse`, on by default), then runs
engine.score.scoring.score_batch on every Arrow batch, so scores are identical to the score job's. Nothing is committed:
the caller writes or queries the DataFrame it gets back (lazy, like any DataFrame).

Output columns: keys, passthrough, the score (float), the stamps of engine.score.scoring.STAMP_FIELDS (model_run_id,
input_table, input_version, run_id, config_hash, scored_at), then model_name and model_version. A DataFrame has no
Delta version of its own: `input_table` is a label (default "dataframe") and `input_version` is -1 (no version;
Delta versions start at 0) unless the caller names the table and version it read.

Cost: every feature value crosses from the JVM to Python (about a third of the single-process limit for 50 float
columns, issue 8); a Delta table is scored faster by the score job, whose Spark tasks read the files themselves.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator

import pyarrow as pa

from engine.errors import ConfigError, ContractViolation, short_list
from engine.models.registry import ModelBundle, fetch_bundle
from engine.models.scorers import cached_scorer
from engine.models.preprocess import PreprocessSpec
from engine.score.scoring import STAMP_FIELDS, Stamps, file_schema, score_batch

NO_VERSION = -1
MODEL_COLUMNS = ("model_name", "model_version")


def score_dataframe(df, model_uri: str, *, tracking_uri: str, registry_uri: str | None = None,
                    keys: Iterable[str] = (), passthrough: Iterable[str] = (), score_column: str = "score",
                    input_table: str = "dataframe", input_version: int = NO_VERSION, device: str = "cpu",
                    micro_batch_rows: int = 4096, nthread: int | None = None, allow_pickle: bool = False,
                    run_id: str | None = None):
    """`df` scored by `model_uri` (models:/name@alias or models:/name/version): keys, passthrough, score, stamps.

    Raises ConfigError (exit 2) for bad arguments, ModelRefused (exit 5) for a missing or refused model, and
    ContractViolation (exit 3) when `df` lacks a model feature or holds one of a non-numeric type; all before
    any Spark job runs.
    """
    from pyspark.sql import functions as F

    keys, passthrough = list(keys), list(passthrough)
    _check_arguments(df, keys, passthrough, score_column, device)
    bundle = fetch_bundle(model_uri, tracking_uri, registry_uri, allow_pickle)
    _check_features(df, bundle.spec, model_uri)
    ref = bundle.ref
    settings = {"model": f"{ref.name}/{ref.version}", "keys": keys, "passthrough": passthrough,
                "score_column": score_column, "input_table": input_table, "input_version": input_version}
    stamps = Stamps(ref.name, ref.version, ref.run_id, input_table, int(input_version), run_id or uuid.uuid4().hex,
                    hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16],
                    dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    columns = list(dict.fromkeys([*keys, *passthrough, *bundle.spec.feature_names]))
    shipped = df.sparkSession.sparkContext.broadcast(bundle)
    fn = batch_function(shipped, keys, passthrough, score_column, stamps, device, micro_batch_rows, nthread)
    return df.select(*[F.col(_quote(c)) for c in columns]).mapInArrow(fn, output_schema(df.schema, keys, passthrough,
                                                                                        score_column))


def batch_function(shipped, keys: list[str], passthrough: list[str], score_column: str, stamps: Stamps, device: str,
                   micro_batch_rows: int, nthread: int | None):
    """The function mapInArrow runs on each partition: Arrow batches in, stamped score batches out.

    `shipped` is the broadcast bundle (anything with `.value`); the model loads on the first batch that a
    Python worker sees and stays cached there for the following tasks.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = None
        for batch in batches:
            if scorer is None:
                bundle: ModelBundle = shipped.value
                scorer = cached_scorer(bundle, device, micro_batch_rows, nthread)
            schema = file_schema(batch.schema, keys, passthrough, score_column, unit_stamp=False)
            out = score_batch(batch, scorer, schema, keys, passthrough, stamps)
            n = out.num_rows
            # score_batch dictionary-encodes constant strings (cheap in Parquet); Spark's Arrow reader wants them plain.
            cols = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in out.columns]
            cols += [pa.repeat(pa.scalar(stamps.model_name, pa.string()), n),
                     pa.repeat(pa.scalar(stamps.model_version, pa.int64()), n)]
            yield pa.RecordBatch.from_arrays(cols, names=[*schema.names, *MODEL_COLUMNS])

    return run


def output_schema(input_schema, keys: list[str], passthrough: list[str], score_column: str):
    """The Spark schema of the scored DataFrame (keys and passthrough keep their input types)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import FloatType, LongType, StringType, StructField, StructType

    kept = [input_schema[c] for c in [*keys, *passthrough]]
    stamps = [StructField(f.name, from_arrow_type(f.type), False) for f in STAMP_FIELDS]
    return StructType([*kept, StructField(score_column, FloatType(), False), *stamps,
                       StructField("model_name", StringType(), False), StructField("model_version", LongType(), False)])


def _check_arguments(df, keys: list[str], passthrough: list[str], score_column: str, device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"score_dataframe: device {device!r} is not one of 'cpu', 'cuda'")
    asked = [*keys, *passthrough]
    twice = sorted(c for c, n in Counter(asked).items() if n > 1)
    if twice:
        raise ConfigError(f"score_dataframe: columns {short_list(twice)} are named more than once in keys and "
                          "passthrough; name each once")
    reserved = {score_column, *(f.name for f in STAMP_FIELDS), *MODEL_COLUMNS}
    clash = [c for c in asked if c in reserved]
    if clash:
        raise ConfigError(f"score_dataframe: keys/passthrough {short_list(clash)} would collide with output columns "
                          f"(score {score_column!r}, stamps, model_name, model_version); rename them in the DataFrame")
    _check_present(df, asked, "keys/passthrough columns", ConfigError, "name columns of the DataFrame")


def _check_features(df, spec: PreprocessSpec, model_uri: str) -> None:
    """Every model feature is one column of `df`, and a non-categorical one holds numbers."""
    from pyspark.sql.types import BooleanType, DecimalType, NumericType

    _check_present(df, spec.feature_names, f"model {model_uri} features", ContractViolation,
                   "select or compute them before scoring (names are case-sensitive)")
    types = {f.name: f.dataType for f in df.schema.fields}
    wrong = [f"{f.name} ({types[f.name].simpleString()})" for f in spec.features if f.categories is None
             and not (isinstance(types[f.name], (NumericType, BooleanType))
                      and not isinstance(types[f.name], DecimalType))]
    if wrong:
        raise ContractViolation(f"score_dataframe: model {model_uri} features {short_list(wrong)} are not numeric "
                                "(integer, floating or boolean); cast them before scoring (strings are never coerced)")


def _check_present(df, wanted: list[str], what: str, error: type, todo: str) -> None:
    counts = Counter(df.columns)
    missing = [c for c in wanted if counts[c] == 0]
    if missing:
        raise error(f"score_dataframe: {what} {short_list(missing)} are missing from the DataFrame (it has "
                    f"{short_list(df.columns)}); {todo}")
    ambiguous = sorted({c for c in wanted if counts[c] > 1})
    if ambiguous:
        raise error(f"score_dataframe: {what} {short_list(ambiguous)} appear more than once in the DataFrame (a join "
                    "that kept both sides?); drop or rename the duplicates before scoring")


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
