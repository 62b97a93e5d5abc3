"""Time-series backtests: fold plans, leakage guard, fold runner, reports (arrive with the backtest issue)."""
