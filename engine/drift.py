"""Drift statistics on Arrow batches: quantile edges, histograms over them, PSI, and an Evidently drift page.

Pure and engine-neutral (numpy/pyarrow; Evidently and pandas only inside `evidently_report`). The contracts
package's drift check and the evaluate job both build on these functions, so a feature's PSI is the same number
wherever it is reported. Reference histograms are stored and reused by `engine.tables.drift_reference`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Literal

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError

REFERENCE_SAMPLE_ROWS = 100_000  # rows kept for the quantile edges: about (this + a batch) × features × 8 bytes
SAMPLE_ROW_GROUPS = 64  # row groups the Evidently page's sample reads at most (sample_rows)
PSI_EPS = 1e-4  # floor of a bin's share, so an empty bin gives a large but finite PSI
# Names the algorithm behind `stream_reference`; a stored reference is reused only under the same method.
REFERENCE_METHOD = f"quantile-stride/{REFERENCE_SAMPLE_ROWS}"


def quantile_edges(vals: np.ndarray, bins: int) -> np.ndarray | None:
    """Inner edges of `bins` quantile bins of the finite values (duplicates merged); None when none is finite."""
    vals = vals[np.isfinite(vals)]
    return np.unique(np.quantile(vals, np.linspace(0, 1, bins + 1)[1:-1])) if len(vals) else None


def bin_counts(vals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the finite values in the len(edges)+1 bins (-inf, e0), [e0, e1), …, [e_last, inf).

    One vectorised comparison per edge (the values at or above it), not a binary search per value: with the few
    sorted edges of a drift histogram that is ~15× faster, and the scoring pass runs it on every drift feature of
    every batch. The same counts as `np.bincount(np.searchsorted(edges, finite, side="right"))`."""
    n = np.count_nonzero(np.isfinite(vals))
    if not len(edges):
        return np.array([n], dtype=np.int64)
    posinf = np.count_nonzero(vals == np.inf)  # at or above every edge, but not finite
    at_or_above = np.array([np.count_nonzero(vals >= e) for e in edges], dtype=np.int64) - posinf
    out = np.empty(len(edges) + 1, dtype=np.int64)
    out[0] = n - at_or_above[0]
    out[1:-1] = at_or_above[:-1] - at_or_above[1:]
    out[-1] = at_or_above[-1]
    return out


def bin_index(vals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin among the len(edges)+1 bins of `bin_counts` (`np.searchsorted(edges, vals, side="right")`):
    one vectorised comparison per edge, several times faster than a binary search per value for a few edges."""
    if len(edges) >= 255:
        return np.searchsorted(edges, vals, side="right")
    out = np.zeros(len(vals), dtype=np.uint8)
    for e in edges:
        out += vals >= e
    return out


def column_floats(batch: pa.RecordBatch | pa.Table, name: str, start: int = 0, stride: int = 1) -> np.ndarray:
    """A column's values (every `stride`-th from `start`) as a float64 copy; NaN where the batch lacks the column."""
    if name not in batch.schema.names:
        return np.full(len(range(start, batch.num_rows, stride)), np.nan)
    return np.array(batch.column(name).to_numpy(zero_copy_only=False)[start::stride], dtype=np.float64)


def stream_reference(batches: Callable[[], Iterable[pa.RecordBatch]], features: list[str], bins: int,
                     sample_rows: int = REFERENCE_SAMPLE_ROWS) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Quantile edges and histograms of a reference window read batch by batch, in bounded memory.

    The edges come from every `stride`-th row of the window: stride 1 (every row, exact) while the window has at
    most `sample_rows` rows, doubled whenever the kept rows exceed it. That depends only on the order of the rows
    (files in path order), never on batch sizes or timing, so it is deterministic. When rows were left out of the
    sample, a second pass counts the histograms over every row.
    """
    if not features:
        return {}, {}
    stride, seen = 1, 0
    parts: dict[str, list[np.ndarray]] = {f: [] for f in features}
    for batch in batches():
        start = (-seen) % stride  # the first row of this batch whose global index is a multiple of stride
        for f in features:
            parts[f].append(column_floats(batch, f, start, stride))
        seen += batch.num_rows
        while sum(len(a) for a in parts[features[0]]) > sample_rows:
            stride *= 2  # kept rows are indices 0, s, 2s, …: every other one of them is 0, 2s, 4s, …
            parts = {f: [np.concatenate(a)[::2]] for f, a in parts.items()}
    sample = {f: np.concatenate(a) if a else np.empty(0) for f, a in parts.items()}
    edges = {f: e for f in features if (e := quantile_edges(sample[f], bins)) is not None}
    if stride == 1:
        return edges, {f: bin_counts(sample[f], e) for f, e in edges.items()}
    hist = {f: np.zeros(len(e) + 1, dtype=np.int64) for f, e in edges.items()}
    for batch in batches():
        for f, e in edges.items():
            hist[f] += bin_counts(column_floats(batch, f), e)
    return edges, hist


def psi(ref: np.ndarray, cur: np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index of two histograms over the same bins: Σ (q − p) · ln(q / p), shares floored at eps."""
    p = np.maximum(ref / max(ref.sum(), 1), eps)
    q = np.maximum(cur / max(cur.sum(), 1), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def feature_drift(ref_hist: dict[str, np.ndarray], ref_edges: dict[str, np.ndarray], cur_hist: dict[str, np.ndarray],
                  psi_max: float = 0.25, per_column: dict[str, float] | None = None) -> list[dict]:
    """`[{"column", "psi", "status"}]` per reference column, sorted by name: status "drift" when psi > its limit.

    A column of the reference without a current histogram (or with no finite current value) has psi None and
    status "missing": no number is made up for it.
    """
    out = []
    for col in sorted(ref_hist):
        ref, cur = np.asarray(ref_hist[col]), cur_hist.get(col)
        if cur is not None and len(cur) != len(ref_edges[col]) + 1:
            raise ValueError(f"current histogram of {col!r} has {len(cur)} bins, the reference {len(ref_edges[col]) + 1}")
        if cur is None or int(np.sum(cur)) == 0:
            out.append({"column": col, "psi": None, "status": "missing"})
            continue
        value = psi(ref, np.asarray(cur))
        limit = (per_column or {}).get(col, psi_max)
        out.append({"column": col, "psi": value, "status": "drift" if value > limit else "ok"})
    return out


@dataclass
class Histograms:
    """Mergeable histograms of columns over fixed edges, accumulated per Arrow batch (current windows).

    Serialised as JSON bytes (`to_bytes` / `from_bytes`), never pickle, so they travel through Ray and Spark rows.
    """

    edges: dict[str, np.ndarray]
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0

    def __post_init__(self):
        self.edges = {c: np.asarray(e, dtype=np.float64) for c, e in self.edges.items()}
        for c, e in self.edges.items():
            self.counts[c] = np.asarray(self.counts.get(c, np.zeros(len(e) + 1)), dtype=np.int64)

    def update(self, batch: pa.RecordBatch | pa.Table) -> "Histograms":
        for c, e in self.edges.items():
            self.counts[c] += bin_counts(column_floats(batch, c), e)
        self.rows += batch.num_rows
        return self

    def merge(self, other: "Histograms") -> "Histograms":
        if set(other.edges) != set(self.edges) or any(not np.array_equal(other.edges[c], e) for c, e in self.edges.items()):
            raise ValueError("cannot merge histograms over different edges")
        for c in self.counts:
            self.counts[c] += other.counts[c]
        self.rows += other.rows
        return self

    def to_bytes(self) -> bytes:
        return json.dumps({"rows": self.rows, "edges": {c: e.tolist() for c, e in self.edges.items()},
                           "counts": {c: v.tolist() for c, v in self.counts.items()}}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Histograms":
        d = json.loads(data)
        return cls({c: np.asarray(e, dtype=np.float64) for c, e in d["edges"].items()},
                   {c: np.asarray(v, dtype=np.int64) for c, v in d["counts"].items()}, int(d["rows"]))


OVERALL = "overall"
NULL_VALUE = "(null)"  # a null slice value's name, as the evaluation's statistics name it
_MAX_COMBINATIONS = 1 << 16  # slice columns with more possible combinations: the combinations present are counted


def slice_name(columns, values) -> str:
    """"region=east", "segment=smb & channel=app", or "overall": the evaluation's names of its slices."""
    return " & ".join(f"{c}={v}" for c, v in zip(columns, values)) or OVERALL


def _codes(batch: pa.RecordBatch | pa.Table, column: str) -> tuple[np.ndarray, list[str]]:
    """Per-row integer codes of a slice column and the value each code names (nulls and a missing column: "(null)")."""
    if column not in batch.schema.names:
        return np.zeros(batch.num_rows, dtype=np.int64), [NULL_VALUE]
    arr = batch.column(column)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    names = [NULL_VALUE if v is None else str(v) for v in arr.dictionary.to_pylist()] + [NULL_VALUE]
    return np.asarray(arr.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False), dtype=np.int64), names


@dataclass
class SliceHistograms:
    """Histograms of columns over fixed edges per slice (the overall slice and every value of each group of slice
    columns, crosses included) and each slice's row count: mergeable by addition, like `Histograms`.

    A slice's histogram counts its finite values in the bins of `bin_counts`; its rows (the support) count every
    row of the slice. Serialised as JSON (`to_json` / `from_json`), never pickle."""

    edges: dict[str, np.ndarray]
    groups: list[tuple[str, ...]]
    slices: dict[str, dict] = field(default_factory=dict)  # name → {"columns", "values", "rows", "counts": {c: …}}

    def __post_init__(self):
        self.edges = {c: np.asarray(e, dtype=np.float64) for c, e in self.edges.items()}
        self.groups = [tuple(g) for g in self.groups]

    @property
    def rows(self) -> dict[str, int]:
        return {name: s["rows"] for name, s in self.slices.items()}

    def _slice(self, columns: tuple[str, ...], values: tuple[str, ...]) -> dict:
        name = slice_name(columns, values)
        if name not in self.slices:
            self.slices[name] = {"columns": list(columns), "values": list(values), "rows": 0,
                                 "counts": {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in self.edges.items()}}
        return self.slices[name]

    def update(self, batch: pa.RecordBatch | pa.Table) -> "SliceHistograms":
        """Count the batch once per cell of the cross of every slice column (one pass per feature), then add each
        cell to the slices it belongs to (overall, each group's value): the same integers as counting every slice
        separately, in one histogram pass per column instead of one per column and group."""
        columns = sorted({c for g in self.groups for c in g})
        encoded = [_codes(batch, c) for c in columns]
        if np.prod([float(len(v)) for _, v in encoded]) <= _MAX_COMBINATIONS:
            cell, size = np.zeros(batch.num_rows, dtype=np.int64), 1
            for codes, vocab in encoded:
                cell, size = cell * len(vocab) + codes, size * len(vocab)
            combos = np.stack(np.unravel_index(np.arange(size), [len(v) for _, v in encoded] or [1]), axis=1)
        else:  # too many possible combinations for a counting table: the ones present
            combos, cell = np.unique(np.stack([c for c, _ in encoded], axis=1), axis=0, return_inverse=True)
            cell, size = cell.reshape(-1), len(combos)
        rows = np.bincount(cell, minlength=size)
        hists = {}
        for c, e in self.edges.items():
            v = column_floats(batch, c)
            ok = np.isfinite(v)
            if not ok.all():
                v, cut = v[ok], cell[ok]
            else:
                cut = cell
            hists[c] = np.bincount(cut * (len(e) + 1) + bin_index(v, e),
                                   minlength=size * (len(e) + 1)).reshape(size, len(e) + 1)
        for k in np.flatnonzero(rows).tolist():
            value = {c: encoded[j][1][combos[k][j]] for j, c in enumerate(columns)}
            for group in [(), *self.groups]:
                sl = self._slice(group, tuple(value[c] for c in group))
                sl["rows"] += int(rows[k])
                for c, h in hists.items():
                    sl["counts"][c] += h[k]
        return self

    def merge(self, other: "SliceHistograms") -> "SliceHistograms":
        if other.groups != self.groups or set(other.edges) != set(self.edges) or any(
                not np.array_equal(other.edges[c], e) for c, e in self.edges.items()):
            raise ValueError("cannot merge slice histograms over different edges or slice groups")
        for name, s in other.slices.items():
            mine = self._slice(tuple(s["columns"]), tuple(s["values"]))
            mine["rows"] += s["rows"]
            for c, h in s["counts"].items():
                mine["counts"][c] += h
        return self

    @classmethod
    def merged(cls, acc: "SliceHistograms | None", text: str | None) -> "SliceHistograms | None":
        """`acc` plus the histograms in `text` (a task's JSON; None adds nothing); those alone when `acc` is None."""
        if text is None:
            return acc
        part = cls.from_json(text)
        return part if acc is None else acc.merge(part)

    def to_json(self) -> str:
        return json.dumps({"edges": {c: e.tolist() for c, e in self.edges.items()}, "groups": [list(g) for g in self.groups],
                           "slices": {n: {**s, "counts": {c: h.tolist() for c, h in s["counts"].items()}}
                                      for n, s in self.slices.items()}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SliceHistograms":
        d = json.loads(text)
        out = cls(d["edges"], d["groups"])
        out.slices = {n: {**s, "counts": {c: np.asarray(h, dtype=np.int64) for c, h in s["counts"].items()}}
                      for n, s in d["slices"].items()}
        return out


def binned_wasserstein(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> float | None:
    """Wasserstein-1 distance between two histograms over the same bins, in units of the reference's spread.

    Each bin's share sits at one point: an inner bin's midpoint, the two open-ended bins at their finite edge. The
    distance is Σ |P(≤ k) − Q(≤ k)| · (x_{k+1} − x_k) over those points, divided by the standard deviation of the
    reference's shares at the same points: an effect size (how far the mass moved, in reference spreads), which,
    unlike a test's p-value, does not shrink as the rows grow. None when either histogram is empty or the reference
    has no spread (fewer than two distinct bins)."""
    ref, cur, edges = np.asarray(ref, np.float64), np.asarray(cur, np.float64), np.asarray(edges, np.float64)
    if not len(edges) or ref.sum() <= 0 or cur.sum() <= 0:
        return None
    x = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    p, q = ref / ref.sum(), cur / cur.sum()
    spread = float(np.sqrt(p @ (x - p @ x) ** 2))
    if not spread > 0:
        return None
    return float(np.sum(np.abs(np.cumsum(p - q)[:-1]) * np.diff(x)) / spread)


# --------------------------------------------------------------------------------------- Evidently sample


def sample_rows(snap, days: list[str], columns: list[str], n: int, seed: int,
                storage_options: dict | None = None, max_row_groups: int = SAMPLE_ROW_GROUPS) -> pa.Table:
    """A seeded sample of at most `n` rows of `days` of a snapshot, reading only `columns` of the row groups that
    hold a sampled row (row counts from the Parquet footers). Same snapshot, days, n and seed → the same rows, in
    (day, file path, row) order.

    Uniform over the rows while the days hold at most `max_row_groups` row groups. Above that, a sample of n rows
    would touch nearly every row group (5,000 rows spread over 3 billion hit every one: a full pass over the columns,
    on the driver), so it is drawn in two stages: `max_row_groups` row groups, chosen without replacement with
    probability proportional to their rows, then the rows uniformly among those groups' rows. The reading is then
    bounded by the setting, not the table; the drift verdicts never depend on it (PSI comes from every row's
    histogram counts), only the Evidently page's pictures do."""
    import pyarrow.parquet as pq

    from engine.lake.snapshot import _conform, file_path, filesystem

    fs, base = filesystem(snap.uri, storage_options)
    target = pa.schema([snap.schema.field(c) for c in dict.fromkeys(columns) if c in snap.schema.names])
    if len(target) != len(dict.fromkeys(columns)):
        missing = sorted(set(columns) - set(snap.schema.names))
        raise ConfigError(f"drift sample: {snap.where()} has no column(s) {missing}; fix the drift columns")
    paths = [file_path(base, f.path) for d in sorted(days) for f in snap.files.get(d, ())]
    files = [pq.ParquetFile(fs.open_input_file(p)) for p in paths]
    groups = [(i, rg, pf.metadata.row_group(rg).num_rows) for i, pf in enumerate(files)
              for rg in range(pf.metadata.num_row_groups)]
    rng = np.random.default_rng(seed)
    sizes = np.array([g[2] for g in groups], dtype=np.int64)
    if len(groups) > max_row_groups and sizes.sum():  # two stages (docstring): the groups by size, then rows among theirs
        chosen = np.sort(rng.choice(len(groups), size=max_row_groups, replace=False, p=sizes / sizes.sum()))
        groups, sizes = [groups[i] for i in chosen], sizes[chosen]
    total = int(sizes.sum())
    picks = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.empty(0, np.int64)
    out: list[pa.RecordBatch] = []
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for (i, rg, rg_rows), lo in zip(groups, starts[:-1]):
        local = picks[(picks >= lo) & (picks < lo + rg_rows)] - lo
        if len(local):
            path, pf = paths[i], files[i]
            have = [f.name for f in target if f.name in pf.schema_arrow.names]
            if not have:  # none of the columns existed when this file was written: nulls
                out.append(_conform(pa.RecordBatch.from_pydict({}), target, path, len(local)))
                continue
            for b in pf.read_row_group(rg, columns=have).take(pa.array(local)).to_batches():
                out.append(_conform(b, target, path, b.num_rows))
    return pa.Table.from_batches(out, schema=target) if out else target.empty_table()


def evidently_report(reference: pa.Table, current: pa.Table, columns: list[str], out_path: str,
                     pii: Collection[str] = (), title: str = "lakescore drift", method: str | None = None,
                     threshold: float | None = None) -> str:
    """Evidently's `DataDriftPreset` on `columns` of two (sampled) tables, saved as one self-contained HTML file;
    `method` and `threshold` (e.g. "psi" and the report's PSI limit) replace Evidently's per-column test choice.

    Only `columns` reach Evidently (a PII column is refused): its page quotes values. `save_html` inlines
    Evidently's JS bundle and icon font, so the page opens offline. Returns `out_path`.
    """
    leaked = sorted(set(columns) & set(pii))
    if leaked:
        raise ConfigError(f"drift report: columns {leaked} are tagged pii and never reach a report; remove them")
    absent = sorted({c for c in columns if c not in reference.column_names or c not in current.column_names})
    if absent or not columns:
        raise ConfigError(f"drift report: column(s) {absent or '(none)'} missing from the samples; fix the drift columns")
    if reference.num_rows == 0 or current.num_rows == 0:
        raise ConfigError(f"drift report: empty {'reference' if reference.num_rows == 0 else 'current'} sample")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def dataset(t: pa.Table):
        df = t.select(columns).to_pandas()
        num = [c for c in columns if kind(t.schema.field(c).type) == "num"]
        cat = [c for c in columns if kind(t.schema.field(c).type) == "cat"]
        return Dataset.from_pandas(df, data_definition=DataDefinition(numerical_columns=num, categorical_columns=cat))

    preset = DataDriftPreset(columns=list(columns), method=method, threshold=threshold)
    snapshot = Report([preset], metadata={"title": title}).run(
        current_data=dataset(current), reference_data=dataset(reference))
    snapshot.save_html(out_path)
    return out_path


def kind(t: pa.DataType) -> Literal["num", "cat"]:
    """How Evidently should treat a column: numerical (ints, floats) or categorical (strings, booleans)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "num"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or pa.types.is_dictionary(t):
        return "cat"
    raise ConfigError(f"drift report: a {t} column is neither numerical nor categorical; leave it out of the drift columns")
