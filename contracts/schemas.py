"""pandera schemas built from a contract, for pandas and for pyspark (never written by hand twice).

They give pandera's schema-level verdicts and reports on DataFrames (a Spark DataFrame through the pyspark
backend, which reports no failing rows; row masks come from contracts.checks on Arrow). Both are built from a
ResolvedContract, so patterns such as "f??" are already expanded to the table's concrete columns.
"""
from __future__ import annotations

import numpy as np

from contracts.spec import _TYPE_TESTS, ColumnSpec, ResolvedContract

# Check names match the Arrow row checks' ("range:f03" ↔ pandera check "range" on column f03).
_FAMILY = {
    "int": lambda s: s.dtype.kind in "iu" or str(s.dtype).startswith(("Int", "UInt")),
    "float": lambda s: s.dtype.kind == "f",
    "string": lambda s: s.dtype == object or str(s.dtype).startswith("string"),
    "bool": lambda s: s.dtype.kind == "b" or str(s.dtype) == "boolean",
    "timestamp": lambda s: s.dtype.kind == "M" or str(s.dtype).startswith("datetime64"),
    "date": lambda s: s.dtype == object,
}


def _family(family: str):
    def check(s) -> bool:
        arrow = getattr(s.dtype, "pyarrow_dtype", None)  # pd.ArrowDtype: the Arrow type decides, as on Arrow
        return _TYPE_TESTS[family](arrow) if arrow is not None else _FAMILY[family](s)

    return check


def _pandas_checks(spec: ColumnSpec):
    import pandera.pandas as pap

    checks = [pap.Check(_family(spec.type), element_wise=False, name="type")]
    if spec.pii:
        return checks  # no value check on PII: pandera's failure cases would quote the value
    if spec.min is not None or spec.max is not None:
        lo = -np.inf if spec.min is None else spec.min
        hi = np.inf if spec.max is None else spec.max
        # As on Arrow: only values below or above fail (NaN is the `finite` check's business).
        checks.append(pap.Check(lambda s, lo=lo, hi=hi: s.isna() | ~((s < lo) | (s > hi)), name="range"))
    if spec.categories is not None:
        cats = set(spec.categories)
        checks.append(pap.Check(lambda s, cats=cats: s.isna() | s.isin(cats), name="category"))
    if spec.finite and spec.type == "float":
        checks.append(pap.Check(lambda s: s.isna() | np.isfinite(s.astype("float64")), name="finite"))
    return checks


def pandas_schema(rc: ResolvedContract):
    """pandera DataFrameSchema for a pandas frame of the table (one partition).

    Validate frames read with `types_mapper=pd.ArrowDtype`: there, as in Arrow, NaN is a value (failing `finite`)
    and null is a missing value (failing `not_null`); numpy-backed frames cannot tell them apart.
    """
    import pandera.pandas as pap

    c = rc.contract
    cols = {name: pap.Column(checks=_pandas_checks(spec), nullable=rc.allows_null(name), required=True)
            for name, spec in rc.columns.items()}
    return pap.DataFrameSchema(cols, unique=c.key or None, strict=not c.allow_extra_columns, name=c.table,
                               coerce=False)


def pyspark_schema(rc: ResolvedContract, spark_schema):
    """pandera.pyspark DataFrameSchema: column types are the table's own when they are in the contract's family."""
    import pandera.pyspark as pas
    from pyspark.sql import types as T

    families = {
        "int": (T.ByteType, T.ShortType, T.IntegerType, T.LongType),
        "float": (T.FloatType, T.DoubleType),
        "string": (T.StringType,),
        "bool": (T.BooleanType,),
        "timestamp": (T.TimestampType, T.TimestampNTZType),
        "date": (T.DateType,),
    }
    fields = {f.name: f.dataType for f in spark_schema.fields}
    cols = {}
    for name, spec in rc.columns.items():
        have = fields.get(name)
        dtype = have if isinstance(have, families[spec.type]) else families[spec.type][-1]()
        checks = []
        if not spec.pii:
            if spec.min is not None:
                checks.append(pas.Check.ge(spec.min))
            if spec.max is not None:
                checks.append(pas.Check.le(spec.max))
            if spec.categories is not None:
                checks.append(pas.Check.isin(list(spec.categories)))
        cols[name] = pas.Column(dtype, checks=checks, nullable=rc.allows_null(name))
    return pas.DataFrameSchema(cols, name=rc.contract.table, strict=not rc.contract.allow_extra_columns)


def schema_verdict(rc: ResolvedContract, arrow_schema) -> list[tuple[str, str]]:
    """pandera's schema-level verdict on the table's shape: (check, column) pairs, from an empty frame of its schema.

    Costs nothing (no rows): presence of every declared column, no extra columns, and each column's type family.
    Patterns ("f??") count as present when they match at least one column, as in ResolvedContract.
    """
    import fnmatch

    import pandas as pd
    import pandera.errors
    import pandera.pandas as pap

    names = [n for n in arrow_schema.names if n != "ds"]
    cols = {name: pap.Column(checks=[pap.Check(_family(spec.type), element_wise=False, name="type")], required=True,
                             nullable=True) for name, spec in rc.columns.items()}
    for pattern, spec in rc.contract.columns.items():
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            cols[pattern] = pap.Column(required=True, nullable=True)  # declared, absent: pandera reports it
    schema = pap.DataFrameSchema(cols, strict=not rc.contract.allow_extra_columns, name=rc.contract.table)
    empty = arrow_schema.empty_table().select(names).to_pandas(types_mapper=pd.ArrowDtype)
    try:
        schema.validate(empty, lazy=True)
    except pandera.errors.SchemaErrors as e:
        out = []
        for r in e.failure_cases.itertuples():
            check = str(r.check)
            if check == "column_in_dataframe":
                out.append(("presence", str(r.failure_case)))
            elif check == "column_in_schema":
                out.append(("extra_column", str(r.failure_case)))
            else:
                out.append((check.split(":")[0], str(r.column)))
        return sorted(set(out))
    return []
