"""Scorers: a model bundle (engine.models.registry.ModelBundle) built into something that predicts probabilities
from a float32 feature matrix, by flavour (XGBoost Booster; torch.export, TorchScript, a state_dict into a declared
MLP), and the per-process scorer cache that lets a worker load each model once.

Imports: engine.models.registry (the bundle) and engine.models.preprocess; torch and xgboost only inside functions.
"""
from __future__ import annotations

import io
from collections import Counter, OrderedDict

import numpy as np

from engine.errors import ModelRefused
from engine.models.registry import ModelBundle

class Scorer:
    """Predicts probabilities from a float32 feature matrix."""

    def __init__(self, bundle: ModelBundle, device: str):
        self.bundle = bundle
        self.device = device
        self.spec = bundle.spec

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def feature_names(self) -> list[str] | None:
        """The names the model was trained with, where the artifact carries them."""
        return None

    def input_widths(self) -> tuple[tuple[str, int | None], ...]:
        """(where it is declared, number of input features) for each width the artifact declares."""
        return ()


def warm_worker() -> None:
    """What a fresh worker (a Ray worker, a Spark Python worker) imports before its first chunk, so that the
    engines can do it while the driver still plans: Parquet I/O and XGBoost (engine.ray / engine.spark warm_up)."""
    import pyarrow.parquet  # noqa: F401

    import_xgboost()


def import_xgboost():
    """`import xgboost`, without the scikit-learn import that `xgboost.compat` makes when sklearn is installed.

    Only xgboost's sklearn wrappers (XGBClassifier…) use it, and scoring runs the Booster alone; measured here it is
    1.8 of the 2.0 s that importing xgboost costs, paid by the driver and by each worker's first chunk. sklearn is
    hidden for the duration of that one import (a None in sys.modules makes `import sklearn` raise ImportError)
    and importable again right after; a process that imported sklearn first gets xgboost as usual.
    """
    import sys

    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        import xgboost

        return xgboost
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import xgboost
    finally:
        del sys.modules["sklearn"]
    return xgboost


class XGBoostScorer(Scorer):
    def __init__(self, bundle: ModelBundle, device: str, nthread: int | None = None):
        super().__init__(bundle, device)
        xgb = import_xgboost()

        self.booster = xgb.Booster()
        try:
            self.booster.load_model(bytearray(bundle.payload))
        except xgb.core.XGBoostError as e:
            raise ModelRefused(f"model {bundle.ref.uri}: XGBoost artifact is corrupt ({str(e).splitlines()[0][:120]})") from e
        params = {"device": "cuda" if device == "cuda" else "cpu"}
        if nthread:
            params["nthread"] = nthread
        self.booster.set_param(params)

    def feature_names(self) -> list[str] | None:
        return self.booster.feature_names

    def input_widths(self) -> tuple[tuple[str, int | None], ...]:
        return (("booster", self.booster.num_features()),)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        if self.device == "cuda":
            import cupy  # only present on GPU machines; XGBoost predicts on device arrays there

            x = cupy.asarray(x)
            return cupy.asnumpy(self.booster.inplace_predict(x, validate_features=False)).astype(np.float32)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), dtype=np.float32)


class TorchScorer(Scorer):
    """Scores in fixed-size, zero-padded micro-batches so that batch boundaries never move a score."""

    def __init__(self, bundle: ModelBundle, device: str, micro_batch_rows: int = 4096):
        super().__init__(bundle, device)
        import torch

        self.torch = torch
        self.micro = micro_batch_rows
        self.dev = torch.device(device)
        try:
            self.module, self.width = _load_torch_module(bundle, self.dev)
        except ModelRefused:
            raise
        except Exception as e:  # torch raises many types for a bad archive; all mean "corrupt"
            raise ModelRefused(f"model {bundle.ref.uri}: torch artifact cannot be loaded ({type(e).__name__})") from e

    def input_widths(self) -> tuple[tuple[str, int | None], ...]:
        return ((f"{self.bundle.kind} input", self.width),)

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        n = x.shape[0]
        out = np.empty(n, dtype=np.float32)
        block = np.zeros((self.micro, x.shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, self.micro):
                part = x[start : start + self.micro]
                block[: len(part)] = part
                block[len(part) :] = 0.0
                y = self.module(torch.from_numpy(block).to(self.dev)).reshape(self.micro, -1)[:, -1]
                if self.spec.output == "logit":
                    y = torch.sigmoid(y)
                out[start : start + len(part)] = y[: len(part)].float().cpu().numpy()
        return out


def _load_torch_module(bundle: ModelBundle, dev):
    """(module, input width where the artifact declares it, else None)."""
    import torch

    buf = io.BytesIO(bundle.payload)
    if bundle.kind == "torch_export":
        program = torch.export.load(buf)
        return program.module().to(dev), _export_width(program)
    if bundle.kind == "torchscript":
        return torch.jit.load(buf, map_location=dev).eval(), None
    if bundle.kind == "torch_state_dict":
        module = mlp_from_arch(bundle.arch)
        module.load_state_dict(torch.load(buf, map_location="cpu", weights_only=True))
        return module.to(dev).eval(), int(bundle.arch["inputs"])
    if bundle.kind == "torch_pickle":  # only reachable with allow_pickle: true
        return torch.load(buf, map_location=dev, weights_only=False).eval(), None  # noqa: S614
    raise ModelRefused(f"model {bundle.ref.uri}: unknown torch artifact kind {bundle.kind!r}")


def _export_width(program) -> int | None:
    """The last dimension of an exported program's single 2-D user input, when it is static."""
    user = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes
              if n.op == "placeholder" and n.name in user and hasattr(n.meta.get("val"), "shape")]
    if len(shapes) != 1 or len(shapes[0]) != 2:
        return None
    last = shapes[0][-1]
    return last if isinstance(last, int) else None


def mlp_from_arch(arch: dict):
    """A JSON-declared MLP: {"type": "mlp", "inputs": n, "hidden": [64, 32], "activation": "relu", "sigmoid": true}."""
    import torch.nn as nn

    if arch.get("type") != "mlp":
        raise ModelRefused(f"architecture type {arch.get('type')!r} is not supported (only 'mlp')")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    layers, width = [], int(arch["inputs"])
    for h in arch.get("hidden", []):
        layers += [nn.Linear(width, int(h)), acts[arch.get("activation", "relu")]()]
        width = int(h)
    layers.append(nn.Linear(width, 1))
    if arch.get("sigmoid", True):
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


_CACHE: OrderedDict[tuple, Scorer] = OrderedDict()
_LOADS: Counter[str] = Counter()  # bundle digest → scorers built by cached_scorer in this process


def build_scorer(bundle: ModelBundle, device: str, micro_batch_rows: int = 4096, nthread: int | None = None) -> Scorer:
    if bundle.kind == "xgboost":
        return XGBoostScorer(bundle, device, nthread)
    return TorchScorer(bundle, device, micro_batch_rows)


def cached_scorer(bundle: ModelBundle, device: str, micro_batch_rows: int = 4096, nthread: int | None = None) -> Scorer:
    """One scorer per worker process and model: workers load the model once, not once per batch."""
    key = (bundle.digest, device, micro_batch_rows, nthread)
    if key not in _CACHE:
        _CACHE[key] = build_scorer(bundle, device, micro_batch_rows, nthread)
        _LOADS[bundle.digest] += 1
        while len(_CACHE) > 2:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def scorer_loads(bundle: ModelBundle) -> int:
    """How many times this process has loaded `bundle` through cached_scorer: once per (device, micro-batch, threads)
    setting, unless the cache evicted it."""
    return _LOADS[bundle.digest]
