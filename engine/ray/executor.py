"""Ray executors for every job (`engine.executor.Executor`): the unit's chunk function in two pipeline shapes.

- `tasks` (CPU default): one Ray task per chunk, at most `max_in_flight` at once (default: the cluster's CPUs);
  each worker process keeps the model it loaded (engine.models.scorers.cached_scorer), so fused tasks pay for it
  once per process. The benchmark (benchmarks/) shows this shape is the fastest on CPU: Ray Data's per-block
  machinery costs more than the model does. A task returns its ChunkResult itself (one `ray.get`, no extra round
  trip); a LakescoreError comes back as a ChunkFailure with its class names (engine.executor.failure), not retried.
- `actors` (GPU): a Ray Data `map_batches` over the chunk list with an actor pool; each actor loads the model
  once onto its device (`num_gpus`). Each chunk's result or failure comes back as Arrow columns through the shared
  codec (engine.executor.encode_item: JSON and bytes; no pickle), rebuilt whole on the driver, so both shapes hand
  the job the same items. Units that ask for start notices (the backtest) run as tasks: a pool cannot say when a
  chunk starts, and each backtest group trains its own model, so one model per actor gains nothing there.
- side tasks (`run_side`): a row check's second stage (a key-hash bucket each, no model) as tasks reserving no CPU,
  run while the pool's actors, which may hold every CPU, are alive.

ONE bounded wait loop (`_tasks`) serves the tasks shape and the side tasks: submit up to the limit, `ray.wait` until
the deadline, cancel what is left and raise `budget_exhausted` when it passes. A unit with `notify_start` runs its
chunks as streaming tasks whose first item, "started", reaches the driver when the chunk starts on a worker.

What a unit shares (engine.work.UnitWork) ships once: one object ref per unit for tasks, once per actor for the
pool; a task or a row carries only its chunk. Fractional `num_cpus` keeps workers from starving the rest on small
machines. Ray retries a chunk whose worker died (bounded); an exception in a chunk fails that chunk's unit only.

Imports: engine.executor, engine.work, engine.config.sections, engine.errors, engine.models (never engine.spark).
"""
from __future__ import annotations

import time
from typing import Iterator

import pyarrow as pa

from engine.config.sections import RayConfig
from engine.errors import LakescoreError
from engine.executor import Item, budget_exhausted, decode_item, encode_item, failure, run_chunk, run_encoded
from engine.work import ChunkStarted, ChunkWork, UnitWork

SYSTEM_RETRIES = 3
WARM_WAIT_S = 30.0  # the most `run` waits for the warm-up tasks before its first chunk (they are normally done)
STARTED = "started"  # a streaming task's first item


def _node() -> str:
    """The Ray node a chunk ran on (the run's ledger lists them)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _chunk_task(unit: UnitWork, chunk: ChunkWork, bundle):
    try:
        result = run_chunk(unit, chunk, bundle)
    except LakescoreError as e:  # a data problem: returned with its class, never retried
        return failure(unit.unit, chunk.index, e)
    result.node = _node()
    return result


def _chunk_task_started(unit: UnitWork, chunk: ChunkWork, bundle):
    yield STARTED
    yield _chunk_task(unit, chunk, bundle)


def _warm_task() -> None:
    """Start a worker and import what scoring needs, while the driver resolves the model."""
    from engine.models.scorers import warm_worker

    warm_worker()


def _preload_task(_warmed, bundle, device: str, micro_batch_rows: int) -> None:
    """Load the model into this worker's scorer cache (the key the chunks ask for), after its warm task (`_warmed`:
    that task's result, so this one follows it onto the worker it left idle), while the driver plans."""
    from engine.models.scorers import cached_scorer

    cached_scorer(bundle, device, micro_batch_rows)


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


class RayTasksExecutor:
    gpus = staticmethod(cluster_gpus)

    def __init__(self, cfg: RayConfig, num_cpus: float | None = None, fill_slots: bool = False):
        self.cfg = cfg
        self.num_cpus = cfg.num_cpus if num_cpus is None else num_cpus
        self.fill_slots = fill_slots
        self._warming: list = []
        self._bundle: tuple = (None, None)  # the preloaded bundle and its object ref, reused by `run`

    def _limit(self) -> int:
        """`ray.max_in_flight`, else one task per cluster CPU (score: each chunk holds a model; evaluate: each task
        joins and accumulates a key bucket, CPU-bound, so a second task per CPU only shares the core and doubles the
        memory held: 16 % slower at 16 M rows on 2 CPUs), or with `fill_slots` as many as the CPUs hold at `num_cpus`
        each (backtest: fold groups, which ran that many at once before they shared this executor). An object store
        whose reads keep a task waiting gains from `ray.max_in_flight` above the CPUs."""
        import ray

        cpus = ray.cluster_resources().get("CPU", 1)
        return self.cfg.max_in_flight or max(1, int(cpus / self.num_cpus if self.fill_slots and self.num_cpus else cpus))

    def warm_up(self) -> None:
        """Start the workers now, in parallel with model resolution and planning (fire and forget)."""
        import ray

        warm = ray.remote(_warm_task).options(num_cpus=self.cfg.num_cpus, max_retries=0,
                                              scheduling_strategy=self.cfg.scheduling.upper())
        self._warming = [warm.remote() for _ in range(self._limit())]

    def preload(self, bundle, device: str, micro_batch_rows: int) -> None:
        """Ship `bundle` to the object store once and load it in each warm worker while the driver plans, so the
        first chunks find the model loaded (fire and forget: a failure here is the chunks' to report)."""
        import ray

        self._bundle = (bundle, ray.put(bundle))
        load = ray.remote(_preload_task).options(num_cpus=self.cfg.num_cpus, max_retries=0,
                                                 scheduling_strategy=self.cfg.scheduling.upper())
        warmed = self._warming or [None] * self._limit()
        self._warming = [load.remote(w, self._bundle[1], device, micro_batch_rows) for w in warmed]

    def _settle(self, deadline: float) -> None:
        """Let the warm-up tasks finish (bounded) before the first chunk: a chunk submitted while they still hold
        their workers would start a cold one. Their errors are not this run's: the chunks report their own."""
        import ray

        warming, self._warming = self._warming, []
        if warming:
            try:
                ray.get(warming, timeout=max(0.0, min(WARM_WAIT_S, deadline - time.monotonic())))
            except Exception:  # noqa: BLE001 - a warm-up that failed or is late changes nothing but speed
                pass

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float) -> Iterator[Item]:
        import ray

        self._settle(deadline)
        opts = dict(num_cpus=self.num_cpus, num_gpus=self.cfg.num_gpus if _gpu(units) else 0,
                    max_retries=SYSTEM_RETRIES, retry_exceptions=False,
                    scheduling_strategy=self.cfg.scheduling.upper())
        plain = ray.remote(_chunk_task).options(**opts)
        streaming = ray.remote(_chunk_task_started).options(num_returns="streaming", **opts)
        bundle_ref = self._bundle[1] if bundle is not None and bundle is self._bundle[0] else ray.put(bundle)
        unit_refs = {name: ray.put(u) for name, u in units.items()}  # shipped once per unit, not per chunk

        def submit(c: ChunkWork):
            task = streaming if units[c.unit].notify_start else plain
            return task.remote(unit_refs[c.unit], c, bundle_ref)

        return _tasks(submit, units, chunks, self._limit(), deadline)


def _tasks(submit, units: dict[str, UnitWork], chunks: list[ChunkWork], limit: int, deadline: float
           ) -> Iterator[Item]:
    """The bounded wait loop: at most `limit` chunks in flight, each item as it comes in, the rest cancelled when
    `deadline` passes (or the caller stops early)."""
    import ray

    what = units[chunks[0].unit].what if chunks else "chunk(s)"
    queue = list(reversed(chunks))
    running: dict = {}  # ref (or streaming generator) → its chunk
    try:
        while queue or running:
            while queue and len(running) < limit:
                c = queue.pop()
                running[submit(c)] = c
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise budget_exhausted(len(running) + len(queue), what)
            for ref in ready:
                c = running.pop(ref)
                try:
                    out = ray.get(next(ref)) if units[c.unit].notify_start else ray.get(ref)
                except Exception as e:  # a crash Ray's retries could not absorb: the chunk's unit fails
                    yield failure(c.unit, c.index, e)
                    continue
                if isinstance(out, str) and out == STARTED:
                    running[ref] = c  # its result comes next
                    yield ChunkStarted(c.unit, c.index)
                    continue
                yield out
    finally:
        for ref, c in running.items():
            ray.cancel(ref, force=not units[c.unit].notify_start)


# The actor pool's output rows: a chunk's result or failure through the codec, as plain Arrow columns (no pickle).
_ROW = pa.schema([("i", pa.int64()), ("ok", pa.bool_()), ("result", pa.string()), ("data", pa.binary())])


class _ChunkActor:
    """Ray Data actor: loads the model once (none for jobs without one), then runs whole chunks."""

    def __init__(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle):
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
                ok, result, data = run_encoded(self.units[w.unit], w, self.bundle, _node)
            except Exception as e:  # reported per chunk; it fails that unit only
                ok, result, data = encode_item(failure(w.unit, w.index, e))
            rows.append({"i": int(i), "ok": ok, "result": result, "data": data})
        return pa.Table.from_pylist(rows, schema=_ROW)


class RayDataActorsExecutor:
    gpus = staticmethod(cluster_gpus)

    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def warm_up(self) -> None:
        """Nothing to do: the actor pool loads the model once per actor when the dataset starts."""

    def run_side(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float
                 ) -> Iterator[Item]:
        """A second stage's short tasks (a key-hash bucket each, no model) as plain Ray tasks reserving no CPU: they
        run while the pool's actors, which may hold every CPU, are still alive."""
        return RayTasksExecutor(self.cfg, num_cpus=0).run(units, chunks, bundle, deadline)

    def run(self, units: dict[str, UnitWork], chunks: list[ChunkWork], bundle, deadline: float) -> Iterator[Item]:
        import ray

        if any(u.notify_start for u in units.values()):
            yield from RayTasksExecutor(self.cfg).run(units, chunks, bundle, deadline)
            return
        ds = ray.data.from_items([{"i": i} for i in range(len(chunks))], override_num_blocks=len(chunks))
        ds = ds.map_batches(
            _ChunkActor,
            fn_constructor_kwargs={"units": units, "chunks": chunks, "bundle": bundle},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.cfg.actors),
            num_cpus=self.cfg.num_cpus,
            num_gpus=self.cfg.num_gpus if _gpu(units) else 0,
        )
        left = len(chunks)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if time.monotonic() > deadline:
                raise budget_exhausted(left, units[chunks[0].unit].what)
            for row in batch.to_pylist():
                w = chunks[row["i"]]
                left -= 1
                yield decode_item(row["ok"], row["result"], row["data"], units[w.unit].row_check)


def executor(cfg: RayConfig, fill_slots: bool = False):
    """The Ray executor `ray.pipeline` names (`fill_slots`: see RayTasksExecutor._limit)."""
    return RayDataActorsExecutor(cfg) if cfg.pipeline == "actors" else RayTasksExecutor(cfg, fill_slots=fill_slots)


def _gpu(units: dict[str, UnitWork]) -> bool:
    return any(u.output is not None and u.output.device == "cuda" for u in units.values())


__all__ = ["RayDataActorsExecutor", "RayTasksExecutor", "executor"]
