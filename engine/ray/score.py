"""Ray executors for the scoring job: the same engine function (`score_chunk`) in two pipeline shapes.

- `tasks` (CPU default): one Ray task per chunk, at most `max_in_flight` at once; each worker process keeps
  the model it loaded (engine.models.cached_scorer), so fused tasks pay for it once per process. The
  benchmark (benchmarks/) shows this shape is the fastest on CPU: Ray Data's per-block machinery costs more
  than the model does.
- `actors` (GPU): a Ray Data `map_batches` over the chunk list with an actor pool; each actor loads the model
  once onto its device (`num_gpus`). Each chunk's ChunkResult comes back as Arrow columns (counts and add
  actions as JSON, contract statistics as CheckStats bytes; no pickle), rebuilt whole on the driver, so both
  shapes hand the job the same result: check statistics, bad scores, quarantine adds.

Fractional `num_cpus` keeps workers from starving the rest on small machines. Ray retries a chunk whose
worker died (bounded); an exception in a chunk fails that chunk's unit only.
"""
from __future__ import annotations

import json
import time
from typing import Iterator

import pyarrow as pa

from engine.config import RayConfig
from engine.errors import UnitFailed
from engine.models import ModelBundle
from engine.score_job import ChunkFailure
from engine.scoring import ChunkResult, ChunkWork, run_chunk

SYSTEM_RETRIES = 3


def _score_chunk_task(work: ChunkWork, bundle: ModelBundle | None) -> ChunkResult:
    return run_chunk(work, bundle)


def _warm_task() -> None:
    """Start a worker and import what scoring needs (xgboost alone is ~1 s), while the driver resolves the model."""
    import pyarrow.parquet  # noqa: F401
    import xgboost  # noqa: F401


class RayTasksExecutor:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg
        self._warming: list = []

    def _limit(self) -> int:
        import ray

        return self.cfg.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def warm_up(self) -> None:
        """Start the workers now, in parallel with model resolution and planning (fire and forget)."""
        import ray

        warm = ray.remote(_warm_task).options(num_cpus=self.cfg.num_cpus, max_retries=0)
        self._warming = [warm.remote() for _ in range(self._limit())]

    def run(self, works: list[ChunkWork], bundle: ModelBundle, deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        import ray

        limit = self._limit()
        task = ray.remote(_score_chunk_task).options(
            num_cpus=self.cfg.num_cpus,
            num_gpus=self.cfg.num_gpus if works and works[0].device == "cuda" else 0,
            max_retries=SYSTEM_RETRIES,
            retry_exceptions=False,
        )
        bundle_ref = ray.put(bundle)
        queue = list(reversed(works))
        running: dict = {}
        while queue or running:
            while queue and len(running) < limit:
                w = queue.pop()
                running[task.remote(w, bundle_ref)] = w
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for ref in running:
                    ray.cancel(ref, force=True)
                raise UnitFailed(f"time budget exhausted with {len(running) + len(queue)} chunk(s) unfinished; "
                                 "raise run.time_budget_s or add workers")
            for ref in ready:
                w = running.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as e:  # the chunk's unit fails; the others go on
                    yield ChunkFailure(w.unit, _one_line(e), _is_contract(e))


# The actor pool's output rows: a ChunkResult or a ChunkFailure per chunk, as plain Arrow columns (no pickle).
_ROW = pa.schema([("i", pa.int64()), ("ok", pa.bool_()), ("error", pa.string()), ("contract", pa.bool_()),
                  ("result", pa.string()), ("checks", pa.binary())])


def encode_result(r: ChunkResult) -> tuple[str, bytes]:
    """A chunk's result as (JSON of counts and add actions, CheckStats bytes or b"" without a contract)."""
    head = {"rows_in": r.rows_in, "rows_out": r.rows_out, "adds": r.adds, "bad_scores": r.bad_scores,
            "quarantine_adds": r.quarantine_adds, "rows_quarantined": r.rows_quarantined,
            "has_checks": r.checks is not None}
    return json.dumps(head), r.checks.to_bytes() if r.checks is not None else b""


def decode_result(unit: str, result: str, checks: bytes) -> ChunkResult:
    """The exact inverse of `encode_result`: the driver sees the ChunkResult the worker built."""
    head = json.loads(result)
    stats = None
    if head["has_checks"]:
        from contracts.checks import CheckStats

        stats = CheckStats.from_bytes(checks)
    return ChunkResult(unit, head["rows_in"], head["rows_out"], head["adds"], stats, head["bad_scores"],
                       head["quarantine_adds"], head["rows_quarantined"])


class _ChunkActor:
    """Ray Data actor: loads the model once (none for the validate job), then runs whole chunks."""

    def __init__(self, works: list[ChunkWork], bundle: ModelBundle | None):
        from engine.models import cached_scorer

        self.works = works
        self.bundle = bundle
        if bundle is not None:
            cached_scorer(bundle, works[0].device, works[0].micro_batch_rows)

    def __call__(self, batch: dict) -> pa.Table:
        rows = []
        for i in batch["i"]:
            w = self.works[int(i)]
            try:
                result, checks = encode_result(run_chunk(w, self.bundle))
                rows.append({"i": int(i), "ok": True, "error": "", "contract": False, "result": result, "checks": checks})
            except Exception as e:  # reported per chunk; it fails that unit only
                rows.append({"i": int(i), "ok": False, "error": _one_line(e), "contract": _is_contract(e),
                             "result": "", "checks": b""})
        return pa.Table.from_pylist(rows, schema=_ROW)


class RayDataActorsExecutor:
    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def warm_up(self) -> None:
        """Nothing to do: the actor pool loads the model once per actor when the dataset starts."""

    def run(self, works: list[ChunkWork], bundle: ModelBundle | None, deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        import ray

        gpu = works[0].device == "cuda"
        ds = ray.data.from_items([{"i": i} for i in range(len(works))], override_num_blocks=len(works))
        ds = ds.map_batches(
            _ChunkActor,
            fn_constructor_kwargs={"works": works, "bundle": bundle},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.cfg.actors),
            num_cpus=self.cfg.num_cpus,
            num_gpus=self.cfg.num_gpus if gpu else 0,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if time.monotonic() > deadline:
                raise UnitFailed("time budget exhausted; raise run.time_budget_s or add workers")
            for row in batch.to_pylist():
                w = works[row["i"]]
                if row["ok"]:
                    yield decode_result(w.unit, row["result"], row["checks"])
                else:
                    yield ChunkFailure(w.unit, row["error"], row["contract"])


def executor(cfg: RayConfig):
    return RayDataActorsExecutor(cfg) if cfg.pipeline == "actors" else RayTasksExecutor(cfg)


def _is_contract(e: BaseException) -> bool:
    from engine.errors import ContractViolation

    return isinstance(getattr(e, "cause", None) or e, ContractViolation)


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
