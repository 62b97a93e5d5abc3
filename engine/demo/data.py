"""Synthetic `features` and `labels` tables: learnable, slowly drifting, with PII columns, one Delta version a day."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

REGIONS = ["north", "south", "east", "west"]
SEGMENTS = ["consumer", "smb", "enterprise"]
CHANNELS = ["web", "app", "store"]
PII_COLUMNS = ["email", "phone"]


def feature_names(n: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


SLICE_DRIFT = ("f09", "east", 3, 1.0)  # feature, region, first day index, shift: the demo's planted slice drift


def make_day(day_index: int, ds: str, rows: int, n_features: int, seed: int,
             slice_drift: bool = False) -> tuple[pa.Table, pa.Table]:
    """One day of features and labels; the same (seed, day, slice_drift) always gives the same rows.

    `slice_drift`: from day index 3 on, f09 (no weight in the labels) moves up by one standard deviation in
    region=east only: a drift the evaluation flags in that slice and not overall (its draws are the same: only
    those values move)."""
    rng = np.random.default_rng([seed, day_index])
    ent = rng.choice(rows * 5, size=rows, replace=False).astype(np.int64) + 1_000_000
    day0 = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc)
    secs = np.sort(rng.integers(0, 86_400, size=rows))
    event_us = int(day0.timestamp() * 1e6) + secs.astype(np.int64) * 1_000_000
    x = rng.standard_normal((rows, n_features), dtype=np.float32)
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]  # a little correlation
    # Drift: feature f02's mean creeps up, and the label leans more on f03 as days pass.
    x[:, 2] += 0.08 * day_index
    region = rng.integers(0, len(REGIONS), rows)
    segment = rng.integers(0, len(SEGMENTS), rows)
    channel = rng.integers(0, len(CHANNELS), rows)
    feature, where, first, shift = SLICE_DRIFT
    if slice_drift and day_index >= first and n_features > int(feature[1:]):
        x[region == REGIONS.index(where), int(feature[1:])] += shift
    w = np.zeros(n_features, dtype=np.float32)
    w[:8] = [1.2, -0.8, 0.5, 0.3 + 0.05 * day_index, 0.9, -0.6, 0.4, 0.2]
    logit = x @ w + np.array([0.3, -0.2, 0.1, -0.4])[region] + 0.5 * (segment == 2) - 1.0 + 0.3 * np.sin(x[:, 4] * x[:, 5])
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    delay_s = rng.integers(1 * 86_400, 6 * 86_400, rows)
    cols = {
        "entity_id": pa.array(ent),
        "event_ts": pa.array(event_us.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        **{name: pa.array(x[:, j]) for j, name in enumerate(feature_names(n_features))},
        "region": pa.array(np.array(REGIONS)[region]),
        "segment": pa.array(np.array(SEGMENTS)[segment]),
        "channel": pa.array(np.array(CHANNELS)[channel]),
        "email": pa.array([f"user{e}@example.com" for e in ent]),
        "phone": pa.array([f"+1-555-{e % 10_000_000:07d}" for e in ent]),
        "ds": pa.array([ds] * rows),
    }
    features = pa.table(cols)
    labels = pa.table({
        "entity_id": pa.array(ent),
        "event_ts": features.column("event_ts"),
        "label": pa.array(label),
        "label_ts": pa.array((event_us + delay_s * 1_000_000).astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        "ds": pa.array([ds] * rows),
    })
    return features, labels


def days(start: str, n: int) -> list[str]:
    d0 = dt.date.fromisoformat(start)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def write_lake(features_uri: str, labels_uri: str, start: str, n_days: int, rows: int, n_features: int, seed: int,
               storage_options: dict | None = None, target_file_size: int | None = None,
               slice_drift: bool = False) -> list[str]:
    """Append one day per Delta version to both tables (version k holds days 0..k); returns the days."""
    from deltalake import write_deltalake

    all_days = days(start, n_days)
    for i, ds in enumerate(all_days):
        f, lab = make_day(i, ds, rows, n_features, seed, slice_drift)
        write_deltalake(features_uri, f, partition_by=["ds"], mode="append", storage_options=storage_options or None,
                        target_file_size=target_file_size)
        write_deltalake(labels_uri, lab, partition_by=["ds"], mode="append", storage_options=storage_options or None)
    return all_days
