"""Declarative preprocessing that travels with a model: feature order, fill values, clipping, categories.

The spec is plain JSON stored in the model's MLmodel metadata (`lakescore_preprocess`), and this module is
the only code that applies it: backtests, evaluation and scoring all call `to_matrix`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ContractViolation, ModelRefused

SPEC_VERSION = 1


@dataclass(frozen=True)
class Feature:
    name: str
    fill: float = 0.0
    clip: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None  # categorical: code = index in this list
    unknown: float = -1.0  # code for a category outside the list

    def to_json(self) -> dict:
        d: dict = {"name": self.name, "fill": self.fill}
        if self.clip is not None:
            d["clip"] = list(self.clip)
        if self.categories is not None:
            d["categories"] = list(self.categories)
            d["unknown"] = self.unknown
        return d


@dataclass(frozen=True)
class PreprocessSpec:
    features: tuple[Feature, ...]
    # What the model returns: "probability" as is, or "logit" to pass through a sigmoid.
    output: str = "probability"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict:
        return {"version": SPEC_VERSION, "output": self.output, "features": [f.to_json() for f in self.features]}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, d: dict, where: str = "model") -> PreprocessSpec:
        try:
            if d.get("version") != SPEC_VERSION:
                raise ValueError(f"unsupported spec version {d.get('version')!r} (expected {SPEC_VERSION})")
            if d.get("output", "probability") not in ("probability", "logit"):
                raise ValueError(f"output must be probability or logit, got {d.get('output')!r}")
            feats = []
            for f in d["features"]:
                clip = tuple(float(x) for x in f["clip"]) if f.get("clip") is not None else None
                cats = tuple(str(c) for c in f["categories"]) if f.get("categories") is not None else None
                feats.append(Feature(str(f["name"]), float(f.get("fill", 0.0)), clip, cats, float(f.get("unknown", -1.0))))
            if not feats:
                raise ValueError("no features")
            return cls(tuple(feats), d.get("output", "probability"))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelRefused(f"{where}: preprocessing spec is invalid ({e}); re-log the model with a valid spec") from e


def to_matrix(batch: pa.RecordBatch | pa.Table, spec: PreprocessSpec, where: str = "input") -> np.ndarray:
    """Arrow batch → C-contiguous float32 matrix in the spec's feature order."""
    n = batch.num_rows
    out = np.empty((n, len(spec.features)), dtype=np.float32)
    names = set(batch.schema.names)
    missing = [f.name for f in spec.features if f.name not in names]
    if missing:
        raise ContractViolation(
            f"{where}: model features missing from input columns: {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''}; check the input table or the model's feature list"
        )
    for j, f in enumerate(spec.features):
        col = batch.column(f.name)
        if f.categories is not None:
            codes = pc.index_in(col.cast(pa.string()), value_set=pa.array(f.categories, pa.string()))
            values = codes.cast(pa.float32()).fill_null(f.unknown)
            # A null category is missing data, not an unknown category.
            values = pc.if_else(pc.is_null(col), pa.scalar(f.fill, pa.float32()), values)
            out[:, j] = values.to_numpy(zero_copy_only=False)
            continue
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
            raise ContractViolation(
                f"{where}: feature column {f.name!r} has type {col.type}, expected a number; "
                "fix the upstream type (strings are never coerced to numbers)"
            )
        arr = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False) if col.null_count == 0 else (
            col.cast(pa.float32()).fill_null(f.fill).to_numpy(zero_copy_only=False)
        )
        out[:, j] = arr
        view = out[:, j]
        np.copyto(view, np.float32(f.fill), where=np.isnan(view))
        if f.clip is not None:
            np.clip(view, f.clip[0], f.clip[1], out=view)
    return out
