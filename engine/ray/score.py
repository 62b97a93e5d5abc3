"""Ray executors for the scoring job: the same engine function (`score_chunk`) in two pipeline shapes.

- `tasks` (CPU default): one Ray task per chunk, at most `max_in_flight` at once; each worker process keeps
  the model it loaded (engine.models.scorers.cached_scorer), so fused tasks pay for it once per process. The
  benchmark (benchmarks/) shows this shape is the fastest on CPU: Ray Data's per-block machinery costs more
  than the model does.
- `actors` (GPU): a Ray Data `map_batches` over the chunk list with an actor pool; each actor loads the model
  once onto its device (`num_gpus`). Each chunk's ChunkResult comes back as Arrow columns through the shared
  codec (engine.work.encode_result: counts and add actions as JSON, row-check statistics as bytes; no pickle),
  rebuilt whole on the driver, so both shapes hand the job the same result.

What a unit shares (engine.work.UnitWork) ships once: one object ref per unit for tasks, once per actor for the
pool; a task or a row carries only its chunk.

Fractional `num_cpus` keeps workers from starving the rest on small machines. Ray retries a chunk whose
worker died (bounded); an exception in a chunk fails that chunk's unit only.
"""
from __future__ import annotations

import time
from typing import Iterator

import pyarrow as pa

from engine.config.sections import RayConfig
from engine.errors import UnitFailed
from engine.models.registry import ModelBundle
from engine.work import (ChunkFailure, ChunkResult, ChunkWork, UnitWork, decode_result, encode_result, is_contract,
                         one_line, run_chunk)

SYSTEM_RETRIES = 3


def _score_chunk_task(unit: UnitWork, chunk: ChunkWork, bundle: ModelBundle | None) -> ChunkResult:
    return _on_node(run_chunk(unit, chunk, bundle))


def _on_node(result: ChunkResult) -> ChunkResult:
    """Tag a chunk's result with the Ray node it ran on (the run's ledger lists them)."""
    import ray

    result.node = ray.get_runtime_context().get_node_id()
    return result


def _warm_task() -> None:
    """Start a worker and import what scoring needs, while the driver resolves the model."""
    import pyarrow.parquet  # noqa: F401

    from engine.models.scorers import import_xgboost

    import_xgboost()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


class RayTasksExecutor:
    gpus = staticmethod(cluster_gpus)

    def __init__(self, cfg: RayConfig, num_cpus: float | None = None):
        self.cfg = cfg
        self.num_cpus = cfg.num_cpus if num_cpus is None else num_cpus
        self._warming: list = []

    def _limit(self) -> int:
        import ray

        return self.cfg.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def warm_up(self) -> None:
        """Start the workers now, in parallel with model resolution and planning (fire and forget)."""
        import ray

        warm = ray.remote(_warm_task).options(num_cpus=self.cfg.num_cpus, max_retries=0,
                                              scheduling_strategy=self.cfg.scheduling.upper())
        self._warming = [warm.remote() for _ in range(self._limit())]

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle: ModelBundle | None,
            deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        import ray

        limit = self._limit()
        task = ray.remote(_score_chunk_task).options(
            num_cpus=self.num_cpus,
            num_gpus=self.cfg.num_gpus if _gpu(units) else 0,
            max_retries=SYSTEM_RETRIES,
            retry_exceptions=False,
            scheduling_strategy=self.cfg.scheduling.upper(),
        )
        bundle_ref = ray.put(bundle)
        unit_refs = {name: ray.put(u) for name, u in units.items()}  # shipped once per unit, not per chunk
        queue = list(reversed(chunks))
        running: dict = {}
        while queue or running:
            while queue and len(running) < limit:
                w = queue.pop()
                running[task.remote(unit_refs[w.unit], w, bundle_ref)] = w
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
                    yield ChunkFailure(w.unit, one_line(e), is_contract(e), w.index)


# The actor pool's output rows: a ChunkResult or a ChunkFailure per chunk, as plain Arrow columns (no pickle).
_ROW = pa.schema([("i", pa.int64()), ("ok", pa.bool_()), ("error", pa.string()), ("contract", pa.bool_()),
                  ("result", pa.string()), ("checks", pa.binary())])


class _ChunkActor:
    """Ray Data actor: loads the model once (none for the validate job), then runs whole chunks."""

    def __init__(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle: ModelBundle | None):
        from engine.models.scorers import cached_scorer

        self.units, self.chunks = units, chunks
        self.bundle = bundle
        out = next(iter(units.values())).output
        if bundle is not None and out is not None:
            cached_scorer(bundle, out.device, out.micro_batch_rows)

    def __call__(self, batch: dict) -> pa.Table:
        rows = []
        for i in batch["i"]:
            w = self.chunks[int(i)]
            try:
                result, checks = encode_result(_on_node(run_chunk(self.units[w.unit], w, self.bundle)))
                rows.append({"i": int(i), "ok": True, "error": "", "contract": False, "result": result, "checks": checks})
            except Exception as e:  # reported per chunk; it fails that unit only
                rows.append({"i": int(i), "ok": False, "error": one_line(e), "contract": is_contract(e),
                             "result": "", "checks": b""})
        return pa.Table.from_pylist(rows, schema=_ROW)


class RayDataActorsExecutor:
    gpus = staticmethod(cluster_gpus)

    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def warm_up(self) -> None:
        """Nothing to do: the actor pool loads the model once per actor when the dataset starts."""

    def run_side(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle: ModelBundle | None,
                 deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        """A second stage's short tasks (a key-hash bucket each, no model) as plain Ray tasks reserving no CPU: they
        run while the pool's actors, which may hold every CPU, are still alive."""
        return RayTasksExecutor(self.cfg, num_cpus=0).run(units, chunks, bundle, deadline)

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle: ModelBundle | None,
            deadline: float) -> Iterator[ChunkResult | ChunkFailure]:
        import ray

        gpu = _gpu(units)
        ds = ray.data.from_items([{"i": i} for i in range(len(chunks))], override_num_blocks=len(chunks))
        ds = ds.map_batches(
            _ChunkActor,
            fn_constructor_kwargs={"units": units, "chunks": chunks, "bundle": bundle},
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
                w = chunks[row["i"]]
                if row["ok"]:
                    yield decode_result(row["result"], row["checks"], units[w.unit].row_check)
                else:
                    yield ChunkFailure(w.unit, row["error"], row["contract"], w.index)


def executor(cfg: RayConfig):
    return RayDataActorsExecutor(cfg) if cfg.pipeline == "actors" else RayTasksExecutor(cfg)


def _gpu(units: dict[str, UnitWork]) -> bool:
    return any(u.output is not None and u.output.device == "cuda" for u in units.values())
