"""Mergeable sufficient statistics for evaluating several models on the same rows (accumulate, merge, serialize).

Per model, per slice (overall, each value of each configured column or cross of columns) and, for the bootstrap,
per bucket (a row's bucket = the top bits of `row_key_hash(key, seed)`), `EvalStats` keeps only counts and sums:

binary      fine     (slice, label, fine_bins)           score histogram, logit-uniform over [-logit_range,
                                                         +logit_range]: ROC AUC, average precision, top-k points
            coarse   (slice, bucket, label, coarse bin)  coarse bins = logit-uniform grid (coarse_bins over
                                                         ±coarse_logit_range) ∪ ECE bin edges ∪ thresholds, so
                                                         threshold counts, support, positives and ECE counts are
                                                         exact; rank metrics' bootstrap replicates use it
            ece_sum  (slice, bucket, ece bin)            sum of scores (mean score, ECE)
            loss, sq (slice, bucket)                     sum of log loss (eps = float64 machine eps) and (s - y)²
regression  sums     (slice, bucket, 9)                  n, n(label != 0), Σ(y-c), Σ(y-c)², Σp, Σd, Σ|d|, Σd²,
                                                         Σ|d|/|y| over y != 0  (d = p - y, c = label_shift)

Every array only ever grows by addition, so any partitioning of the rows into batches and tasks gives the same
integers and the same float sums up to summation order (~1e-16 relative). Memory per model and slice, with the
defaults (K=256 buckets, 16384 fine bins, 64+ECE+threshold coarse bins, 10 ECE bins), in 8-byte cells:
2·16384 + K·2·(65 + 9 + T) + K·10 + 2·K ≈ 74 k cells ≈ 0.6 MB (20 slices, one model ≈ 12 MB); `to_bytes`
compresses the mostly-empty histograms with zstd. Serialization is a JSON header plus raw little-endian buffers:
no pickle.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from engine.errors import ConfigError, LakescoreError
from engine.evaluation.spec import LOG_EPS, MetricsSpec

REG_SUMS = ("n", "n_nonzero", "sum_yc", "sum_yc2", "sum_p", "sum_d", "sum_absd", "sum_d2", "sum_ape")
_MAGIC = b"LKEVALSTATS2"  # body compressed with zstd (level 1): 2.5x faster than zlib's level 1 and smaller
_MAGIC_ZLIB = b"LKEVALSTATS1"  # the earlier layout (zlib), still read
_MAX_CROSS = 1 << 20  # crosses with more possible combinations use np.unique instead of a lookup table


def _encode(values, n: int, where: str) -> tuple[np.ndarray, list[str]]:
    """Per-row integer codes and their string names (nulls named "(null)") for one slice column of a batch."""
    arr = values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not isinstance(arr, pa.Array):
        arr = pa.array(np.asarray(arr))
    if len(arr) != n:
        raise LakescoreError(f"{where}: {len(arr)} values for {n} rows; pass one value per row")
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    nd = len(arr.dictionary)
    codes = arr.indices.fill_null(nd) if arr.indices.null_count else arr.indices
    names = ["(null)" if v is None else str(v) for v in arr.dictionary.to_pylist()] + ["(null)"]
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.intp), names


class EvalStats:
    """Sufficient statistics for `models` (keys "name/version") scored on the same rows; see the module docstring."""

    FLUSH_ROWS = 1 << 18

    def __init__(self, spec: MetricsSpec, models: list[str]):
        if not models or len(set(models)) != len(models):
            raise ConfigError(f"EvalStats: models={models!r}; give one or more distinct model keys")
        self.spec, self.models, self.rows = spec, list(models), 0
        self._pending: list[tuple] = []
        self._pending_rows = 0
        self.groups: list[tuple[str, ...]] = [()] + list(spec.slices)
        self.slices: list[tuple[int, tuple[str, ...]]] = []
        self._slice_ids: dict[tuple[int, tuple[str, ...]], int] = {}
        self.label_shift: float | None = None
        self._edges = spec.coarse_edges
        # ECE bin k = [k/E, (k+1)/E) with the same float edges that are coarse edges, so the map is exact.
        ece_edges = np.arange(spec.ece_bins, dtype=np.float64) / spec.ece_bins
        self._ece_of_coarse = np.searchsorted(ece_edges, self._edges, side="right") - 1
        self.arrays: dict[str, dict[str, np.ndarray]] = {m: self._empty(0) for m in self.models}
        self._slice_id(0, ())

    # ---- layout -------------------------------------------------------------------------------------------------
    def shapes(self) -> dict[str, tuple[tuple[int, ...], type]]:
        """Per-slice shape and dtype of each statistic array (the first axis, slices, is left out)."""
        s, k = self.spec, self.spec.buckets
        if s.task == "regression":
            return {"sums": ((k, len(REG_SUMS)), np.float64)}
        return {"fine": ((2, s.fine_bins), np.int64), "coarse": ((k, 2, len(self._edges)), np.int64),
                "ece_sum": ((k, s.ece_bins), np.float64), "loss": ((k,), np.float64), "sq": ((k,), np.float64)}

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((n, *shape), dtype) for name, (shape, dtype) in self.shapes().items()}

    def _slice_id(self, group: int, values: tuple[str, ...]) -> int:
        key = (group, values)
        sid = self._slice_ids.get(key)
        if sid is None:
            sid = self._slice_ids[key] = len(self.slices)
            self.slices.append(key)
            for model, arrs in self.arrays.items():
                if arrs_cap(arrs) <= sid:
                    grown = self._empty(max(4, 2 * arrs_cap(arrs)))
                    for name in arrs:
                        grown[name][:sid] = arrs[name][:sid]
                    self.arrays[model] = grown
        return sid

    def view(self, model: str, name: str) -> np.ndarray:
        """The statistic `name` of `model` for the registered slices (axis 0 follows `self.slices`)."""
        self._flush()
        return self.arrays[model][name][:len(self.slices)]

    # ---- accumulate ---------------------------------------------------------------------------------------------
    def _group_codes(self, slice_values: dict, n: int) -> list[tuple[np.ndarray | None, np.ndarray]]:
        """Per group: per-row local codes (None for overall) and the global slice id of each local code."""
        encoded: dict[str, tuple[np.ndarray, list[str]]] = {}
        out = [(None, np.zeros(1, np.intp))]
        for g, cols in enumerate(self.groups[1:], start=1):
            for c in cols:
                if c not in encoded:
                    if c not in slice_values:
                        raise LakescoreError(f"EvalStats.update: slice column {c!r} missing; slice columns given: "
                                             f"{sorted(slice_values)}; pass every column named in spec.slices")
                    encoded[c] = _encode(slice_values[c], n, f"EvalStats.update slice column {c!r}")
            combined, size = encoded[cols[0]][0], len(encoded[cols[0]][1])
            dims = [size]
            for c in cols[1:]:
                codes, names = encoded[c]
                combined, size = combined * len(names) + codes, size * len(names)
                dims.append(len(names))
            if size <= _MAX_CROSS:
                present = np.flatnonzero(np.bincount(combined, minlength=size))
                if len(present) == size:
                    local = combined
                else:
                    lut = np.zeros(size, np.intp)
                    lut[present] = np.arange(len(present))
                    local = lut[combined]
            else:
                present, local = np.unique(combined, return_inverse=True)
            parts = np.unravel_index(present, dims)
            gids = np.array([self._slice_id(g, tuple(encoded[c][1][p[i]] for c, p in zip(cols, parts)))
                             for i in range(len(present))], dtype=np.intp)
            uniq, first = np.unique(gids, return_inverse=True)
            if len(uniq) < len(gids):  # two codes named alike (e.g. 1 and "1"): merge them into one local code
                local, gids = first[local], uniq
            out.append((local, gids))
        return out

    def update(self, key_hash: np.ndarray, label: np.ndarray, scores: dict[str, np.ndarray],
               slice_values: dict[str, np.ndarray | pa.Array]) -> None:
        """Add one batch of rows: their key hashes (`row_key_hash(batch, key_columns, spec.seed)`; the top bits pick
        the bootstrap bucket), labels, each model's scores and the slice columns (numpy or Arrow, any type).

        Inputs are checked here; batches smaller than FLUSH_ROWS are buffered (bucket, label, scores, per-row
        slice ids) and accumulated together, because each accumulation pays a fixed cost proportional to the
        histogram sizes (Spark's Arrow batches hold 10 000 rows)."""
        label = np.asarray(label)
        n = len(label)
        if n == 0:
            return
        if set(scores) != set(self.models):
            raise LakescoreError(f"EvalStats.update: scores for {sorted(scores)}, expected {self.models}")
        key_hash = np.asarray(key_hash, dtype=np.uint64)
        if len(key_hash) != n or any(len(v) != n for v in scores.values()):
            raise LakescoreError(f"EvalStats.update: key_hash, label and scores must all have {n} rows")
        bucket = (key_hash >> np.uint64(64 - int(math.log2(self.spec.buckets)))).astype(np.intp)
        groups = self._group_codes(slice_values, n)
        binary = self.spec.task == "binary"
        y = self._binary_labels(label) if binary else self._regression_labels(label)
        preds = {m: self._check_scores(m, np.asarray(scores[m], dtype=np.float64), binary) for m in self.models}
        self.rows += n
        if n >= self.FLUSH_ROWS and not self._pending:
            self._accumulate(bucket, y, preds, groups)
            return
        self._pending.append((bucket, y, preds, [None if loc is None else gids[loc] for loc, gids in groups]))
        self._pending_rows += n
        if self._pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def flush(self) -> None:
        """Count the buffered rows now (merge, serialisation and metrics do it themselves)."""
        self._flush()

    def _flush(self) -> None:
        """Accumulate the buffered batches at once (per group, global slice ids → compact local codes)."""
        if not self._pending:
            return
        pend, self._pending, self._pending_rows = self._pending, [], 0
        bucket = np.concatenate([b[0] for b in pend])
        y = np.concatenate([b[1] for b in pend])
        preds = {m: np.concatenate([b[2][m] for b in pend]) for m in self.models}
        groups = [(None, np.zeros(1, np.intp))]
        for g in range(1, len(self.groups)):
            rows = np.concatenate([b[3][g] for b in pend])
            present = np.flatnonzero(np.bincount(rows, minlength=len(self.slices)))
            lut = np.zeros(len(self.slices), np.intp)
            lut[present] = np.arange(len(present))
            groups.append((lut[rows], present))
        self._accumulate(bucket, y, preds, groups)

    def _accumulate(self, bucket, y, preds, groups) -> None:
        if self.spec.task == "binary":
            self._update_binary(bucket, y, preds, groups)
        else:
            self._update_regression(bucket, y, preds, groups)

    @staticmethod
    def _binary_labels(label: np.ndarray) -> np.ndarray:
        y = label.astype(np.intp)
        bad = (y.min() < 0 or y.max() > 1 or (label.dtype.kind == "f" and not np.array_equal(y, label)))
        if bad:
            raise ConfigError("evaluation task is binary but labels are not all 0/1; fix the label column or "
                              "set task: regression")
        return y

    @staticmethod
    def _regression_labels(label: np.ndarray) -> np.ndarray:
        y = label.astype(np.float64)
        if not np.isfinite(y).all():
            raise ConfigError("evaluation task is regression but some labels are NaN or infinite; fix the label column")
        return y

    @staticmethod
    def _check_scores(model: str, p: np.ndarray, binary: bool) -> np.ndarray:
        if binary:
            lo, hi = p.min(), p.max()
            if not (lo >= 0.0 and hi <= 1.0):
                raise ConfigError(f"model {model}: binary scores must be probabilities in [0, 1], got min {lo} "
                                  f"max {hi}; evaluate a probability output or set task: regression")
        elif not np.isfinite(p).all():
            raise ConfigError(f"model {model}: some predictions are NaN or infinite")
        return p

    def _scatter(self, model: str, name: str, groups, index: np.ndarray, width: int, weights=None) -> None:
        """bincount `index` (+ local slice code * width) per group and add the counts into the global slices."""
        acc = self.arrays[model][name]
        tail = acc.shape[1:]
        for local, gids in groups:
            idx = index if local is None else local * width + index
            counts = np.bincount(idx, weights=weights, minlength=len(gids) * width)
            acc[gids] += counts.reshape(len(gids), *tail)

    def _update_binary(self, bucket, y, scores, groups) -> None:
        s = self.spec
        base = bucket * 2 + y
        for model in self.models:
            p = scores[model]
            pc = np.clip(p, LOG_EPS, 1.0 - LOG_EPS)
            l1 = np.log1p(-pc)
            logit = np.log(pc)
            logit -= l1
            loss = y * logit
            loss += l1
            np.negative(loss, out=loss)
            sq = p - y
            sq *= sq
            fine = logit + s.logit_range
            fine *= s.fine_bins / (2.0 * s.logit_range)
            np.clip(fine, 0, s.fine_bins - 1, out=fine)
            fine = fine.astype(np.intp)
            fine += y * s.fine_bins
            coarse = np.searchsorted(self._edges, p, side="right") - 1
            ece = self._ece_of_coarse[coarse]
            ece += bucket * s.ece_bins
            coarse += base * len(self._edges)
            self._scatter(model, "fine", groups, fine, 2 * s.fine_bins)
            self._scatter(model, "coarse", groups, coarse, s.buckets * 2 * len(self._edges))
            self._scatter(model, "ece_sum", groups, ece, s.buckets * s.ece_bins, weights=p)
            self._scatter(model, "loss", groups, bucket, s.buckets, weights=loss)
            self._scatter(model, "sq", groups, bucket, s.buckets, weights=sq)

    def _update_regression(self, bucket, y, scores, groups) -> None:
        if self.label_shift is None:
            self.label_shift = float(y[0])
        yc = y - self.label_shift
        nz = y != 0
        absy = np.abs(y)
        for model in self.models:
            p = scores[model]
            d = p - y
            absd = np.abs(d)
            ape = np.divide(absd, absy, out=np.zeros_like(d), where=nz)
            acc = self.arrays[model]["sums"]
            k = self.spec.buckets
            cols = (None, nz.astype(np.float64), yc, yc * yc, p, d, absd, d * d, ape)
            for local, gids in groups:
                idx = bucket if local is None else local * k + bucket
                for j, w in enumerate(cols):
                    acc[gids, :, j] += np.bincount(idx, weights=w, minlength=len(gids) * k).reshape(len(gids), k)

    # ---- merge and serialize ------------------------------------------------------------------------------------
    def merge(self, other: "EvalStats") -> "EvalStats":
        """Add `other` (same spec and models, other rows) into this object; returns self."""
        if other.spec != self.spec or other.models != self.models:
            raise LakescoreError("EvalStats.merge: the two statistics were built with different specs or models; "
                                 "merge only partial statistics of one evaluation")
        self._flush()
        other._flush()
        ids = np.array([self._slice_id(g, v) for g, v in other.slices], dtype=np.intp)
        if self.spec.task == "regression" and other.label_shift is not None:
            if self.label_shift is None:
                self.label_shift = other.label_shift
            delta = other.label_shift - self.label_shift
        for model in self.models:
            for name, arr in self.arrays[model].items():
                add = other.view(model, name)
                if name == "sums" and other.label_shift is not None and delta != 0.0:
                    add = add.copy()
                    i = {n: j for j, n in enumerate(REG_SUMS)}
                    cnt, a = add[..., i["n"]], add[..., i["sum_yc"]]
                    add[..., i["sum_yc2"]] += 2 * delta * a + cnt * delta * delta
                    add[..., i["sum_yc"]] = a + cnt * delta
                arr[ids] += add
        self.rows += other.rows
        return self

    def to_bytes(self) -> bytes:
        """JSON header + zstd-compressed raw little-endian arrays (no pickle)."""
        self._flush()
        names = list(self.shapes())
        header = {"spec": asdict(self.spec), "models": self.models, "rows": self.rows,
                  "slices": [[g, list(v)] for g, v in self.slices], "label_shift": self.label_shift,
                  "arrays": names}
        body = b"".join(np.ascontiguousarray(self.view(m, n)).astype(self.view(m, n).dtype.newbyteorder("<"))
                        .tobytes() for m in self.models for n in names)
        head = json.dumps(header).encode()
        return (_MAGIC + struct.pack("<Q", len(head)) + head + struct.pack("<Q", len(body))
                + pa.compress(body, codec="zstd", asbytes=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> "EvalStats":
        if not data.startswith((_MAGIC, _MAGIC_ZLIB)):
            raise LakescoreError("EvalStats.from_bytes: not serialized EvalStats (bad magic); pass to_bytes() output")
        (hlen,) = struct.unpack_from("<Q", data, len(_MAGIC))
        start = len(_MAGIC) + 8
        header = json.loads(data[start:start + hlen])
        spec_d = header["spec"]
        spec_d["slices"] = tuple(tuple(s) for s in spec_d["slices"])
        out = cls(MetricsSpec(**spec_d), header["models"])
        for g, v in header["slices"]:
            out._slice_id(g, tuple(v))
        packed = data[start + hlen:]
        if data.startswith(_MAGIC_ZLIB):
            body = memoryview(zlib.decompress(packed))
        else:
            (size,) = struct.unpack_from("<Q", packed, 0)
            body = memoryview(pa.decompress(packed[8:], size, codec="zstd", asbytes=True))
        pos, n, shapes = 0, len(out.slices), out.shapes()
        for m in out.models:
            for name in header["arrays"]:
                shape, dtype = shapes[name]
                dt = np.dtype(dtype).newbyteorder("<")
                size = n * int(np.prod(shape)) * dt.itemsize
                out.arrays[m][name][:n] = np.frombuffer(body[pos:pos + size], dtype=dt).reshape(n, *shape)
                pos += size
        out.rows, out.label_shift = header["rows"], header["label_shift"]
        return out


def arrs_cap(arrs: dict[str, np.ndarray]) -> int:
    """Slice capacity of one model's arrays."""
    return next(iter(arrs.values())).shape[0]
