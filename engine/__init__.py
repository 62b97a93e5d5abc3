"""lakescore's engine-agnostic core: config, snapshots, models, batch scoring and the Delta commit protocol.

Nothing in this package imports Ray or Spark; `engine.ray` and `engine.spark` are thin adapters that
move Arrow batches to these functions.
"""
