"""The score job's home: which units a run scores, skips or retracts (plan), its loop from resolve to commit
(run), one unit's end (units: reconcile, judge the contract, commit, record; the summary line and its typed
failures) and the batch scoring function every engine calls per chunk (scoring).

Imports: run → plan → units → scoring; all of them use engine.lake, engine.tables, engine.models, engine.work,
engine.executor and the kernel (engine.run among it); the engine adapters (engine.ray, engine.spark) import `scoring` for the chunk
function's helpers, and jobs/ wire the rest.
"""
