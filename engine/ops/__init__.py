"""The cores of the operator commands: status, explain, rollback, forget, vacuum (and sweep, what vacuum removes
besides a table's files). Each is a function over tables and the registry; jobs/<command>.py is its CLI.

Imports: engine.lake, engine.tables, engine.models and the kernel; nothing in engine imports this package.
"""
