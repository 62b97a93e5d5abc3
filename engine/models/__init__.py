"""Models: the registry side (registry: resolve, download, load a bundle, refuse pickle), the scorers built from a
bundle per flavour with their per-process cache (scorers), and the declarative preprocessing that travels with a
model (preprocess).

Imports: the kernel only (MLflow, torch and xgboost inside functions); score, evaluation and backtests import it.
"""
