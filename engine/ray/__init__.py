"""Ray adapter, twin of engine.spark with the same file names: `session` (connect to or start Ray) and `executor`
(engine.executor.Executor on Ray tasks or an actor pool). Imports the engine below it, never engine.spark."""
