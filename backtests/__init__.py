"""Time-series backtests: fold plans in days (`plan`) and the leakage guard run per fold before training (`guard`).

The fold runner and reports come with the backtest issue. `backtests` depends on `engine` (errors, Delta
snapshots); `engine` never imports `backtests`.
"""
