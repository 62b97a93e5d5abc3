"""lakescore's engine-agnostic core: config, snapshots, models, batch scoring and the Delta commit protocol.

Nothing in this package imports Ray or Spark; `engine.ray` and `engine.spark` are thin adapters that
move Arrow batches to these functions. Every job runs through the one executor seam, `engine.executor.Executor`
(Ray: `engine.ray.executor`, Spark: `engine.spark.executor`, in process: `engine.executor.LocalExecutor`); the jobs
pick one through `jobs.engines.make_executor`.

Dependencies run one way: `contracts` imports `engine` (errors, config, snapshots, the work types), never the
reverse. The core states what a row check must give the scoring pass (`engine.work.RowCheck`: a bad-row mask,
mergeable statistics, the rows to quarantine) and what a contract enforcer must answer (verdicts, a report);
`contracts` implements both, and the jobs (`jobs.score`, `jobs.validate`) wire them together. That keeps the
core testable without contracts and lets a second engine plug in without a cycle.
"""
