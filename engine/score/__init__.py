"""The score job's home: its loop from plan to commit (run), one unit's end (units: reconcile, judge the contract,
commit, record) and the batch scoring function every engine calls per chunk (scoring).

Imports: engine.lake, engine.tables, engine.models, engine.work, engine.executor and the kernel; the engine adapters (engine.ray,
engine.spark) import `scoring` for the chunk function's helpers, and jobs/ wire the rest.
"""
