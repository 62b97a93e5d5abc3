"""The training recipes: an XGBoost booster and a small PyTorch MLP, seeded, from a feature matrix and labels.

Real backtests train with these (backtests/fold_run.py); the demo job hands the same functions to
engine.demo.models.register, so the demo models are trained by exactly this code. Imports: numpy, xgboost, torch
only (no engine module); engine never imports this module (tests/test_layering.py checks).
"""
from __future__ import annotations

import numpy as np


def train_xgb(x: np.ndarray, y: np.ndarray, trees: int, depth: int, seed: int):
    import xgboost as xgb

    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "seed": seed, "nthread": 2,
              "eval_metric": "auc", "tree_method": "hist"}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=trees)


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 4):
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(-1, 1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 512):
            idx = perm[i : i + 512]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()
