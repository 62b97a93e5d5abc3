"""Models: resolve a registry reference, load its artifact safely into a bundle, build a scorer from it.

A `ModelBundle` holds the artifact's bytes and its preprocessing spec, so it can be shipped to workers
(Ray object store, Spark broadcast) and loaded there without touching MLflow again. Accepted formats load
without unpickling: XGBoost JSON/UBJ, torch.export programs (checked record by record for pickle
payloads), TorchScript, and `state_dict` (weights_only) into a JSON-declared MLP. Anything else that
needs pickle is refused unless `allow_pickle: true`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ModelRefused
from engine.preprocess import PreprocessSpec

PREPROCESS_KEY = "lakescore_preprocess"
ARCH_FILE = "lakescore_arch.json"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    run_id: str
    source: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelBundle:
    ref: ModelRef
    kind: str  # xgboost | torch_export | torchscript | torch_state_dict | torch_pickle
    payload: bytes
    spec: PreprocessSpec
    arch: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload + self.spec.digest().encode()).hexdigest()


# --------------------------------------------------------------------------------------------- resolve


def resolve_model(uri: str, tracking_uri: str, registry_uri: str | None = None) -> ModelRef:
    """models:/name@alias or models:/name/version → a concrete registered version (exit 5 if absent)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/(\d+))", uri)
    if not m:
        raise ModelRefused(f"model uri {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = m.groups()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ModelRefused(
            f"model {name} {what} not found in the registry at {tracking_uri}; "
            "register it (make demo) or fix model.uri"
        ) from e
    return ModelRef(name=name, version=int(mv.version), run_id=mv.run_id or "", source=mv.source, alias=alias)


def experiment_id(client, name: str, artifact_root: str) -> str:
    """The MLflow experiment `name` (an MlflowClient's), created with its artifacts under `artifact_root` (a local
    path, or a URL such as s3://…) if it does not exist yet."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root if "://" in artifact_root else "file://" + artifact_root
    return client.create_experiment(name, artifact_location=location)


def download_model(ref: ModelRef, tracking_uri: str, registry_uri: str | None, dst: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=dst))
    except (MlflowException, OSError) as e:
        raise ModelRefused(f"model {ref.uri}: artifacts cannot be downloaded ({type(e).__name__}); check the artifact store") from e


def fetch_bundle(uri: str, tracking_uri: str, registry_uri: str | None, allow_pickle: bool) -> ModelBundle:
    """Resolve, download and validate a registered model; every failure is ModelRefused (exit 5)."""
    ref = resolve_model(uri, tracking_uri, registry_uri)
    with tempfile.TemporaryDirectory(prefix="lakescore-model-") as tmp:
        path = download_model(ref, tracking_uri, registry_uri, tmp)
        return load_bundle(path, ref, allow_pickle)


def load_bundle(model_dir: str | os.PathLike, ref: ModelRef, allow_pickle: bool = False) -> ModelBundle:
    """Read an MLflow model directory into a validated bundle without unpickling anything."""
    model_dir = Path(model_dir)
    where = f"model {ref.uri}"
    mlmodel_path = model_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise ModelRefused(f"{where}: no MLmodel file in the artifact; it is not an MLflow model")
    import yaml  # here, not at import: the chunk scoring path must import on a bare GPU box (benchmarks/gpu_chunk.py)

    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ModelRefused(f"{where}: MLmodel file is corrupt ({e.__class__.__name__})") from e
    spec_json = (mlmodel.get("metadata") or {}).get(PREPROCESS_KEY)
    if spec_json is None:
        raise ModelRefused(
            f"{where}: no preprocessing spec ({PREPROCESS_KEY} in the MLmodel metadata); "
            "log the model with its feature list and preprocessing"
        )
    spec = PreprocessSpec.from_json(spec_json, where)
    flavors = mlmodel.get("flavors") or {}
    if "xgboost" in flavors:
        conf = flavors["xgboost"]
        data = inside(model_dir, conf.get("data", "model.xgb"), "xgboost data", where)
        fmt = conf.get("model_format", data.suffix.lstrip("."))
        if fmt not in ("ubj", "json"):
            raise ModelRefused(f"{where}: XGBoost format {fmt!r} is refused; log it with model_format='ubj' or 'json'")
        payload = _read(data, model_dir, where)
        if payload.lstrip()[:1] != b"{":  # UBJ and JSON documents are both objects; anything else is not them
            raise ModelRefused(f"{where}: XGBoost artifact {data.name} is corrupt or not a UBJ/JSON document (the "
                               f"MLmodel says {fmt!r}); re-log it with model_format='ubj'")
        bundle = ModelBundle(ref, "xgboost", payload, spec)
    elif "pytorch" in flavors:
        bundle = _torch_bundle(model_dir, flavors["pytorch"], ref, spec, allow_pickle, where)
    else:
        raise ModelRefused(
            f"{where}: flavors {sorted(flavors)} are not supported; use xgboost (ubj/json) or pytorch (pt2)"
        )
    # Build once here so that a corrupt artifact, or one that disagrees with its spec, fails before any row is read.
    check_inputs(build_scorer(bundle, "cpu"), signature_width(mlmodel), where)
    return bundle


def inside(model_dir: Path, rel, key: str, where: str) -> Path:
    """The artifact path that the MLmodel names under `key`, resolved (links too); it must lie in the model dir."""
    root = model_dir.resolve()
    if not isinstance(rel, str) or not rel:
        raise ModelRefused(f"{where}: MLmodel {key} {rel!r} is not a relative path; re-log the model")
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ModelRefused(f"{where}: MLmodel {key} {rel!r} points outside the model directory (to {path}); "
                           "refused: re-log the model with its files inside the artifact")
    return path


def signature_width(mlmodel: dict) -> int | None:
    """The input width that a tensor signature declares ([-1, n]), if the MLmodel has one."""
    try:
        inputs = json.loads((mlmodel.get("signature") or {}).get("inputs") or "null")
        (only,) = inputs
        shape = only["tensor-spec"]["shape"]
        return int(shape[-1]) if only.get("type") == "tensor" and len(shape) == 2 and int(shape[-1]) > 0 else None
    except (TypeError, ValueError, KeyError, json.JSONDecodeError):
        return None


def check_inputs(scorer: Scorer, declared: int | None, where: str) -> None:
    """The model's own feature names (XGBoost) and input widths must match the spec's output columns."""
    want = scorer.spec.feature_names
    names = scorer.feature_names()
    if names is not None and list(names) != want:
        i = next((i for i, (a, b) in enumerate(zip(want, names)) if a != b), min(len(want), len(names)))
        spec_has = repr(want[i]) if i < len(want) else "nothing"
        model_has = repr(names[i]) if i < len(names) else "nothing"
        raise ModelRefused(f"{where}: feature at position {i} is {spec_has} in the preprocessing spec but {model_has} in "
                           "the model; the spec must list the features in the order the model was trained on")
    for source, width in (*scorer.input_widths(), ("MLmodel signature", declared)):
        if width is not None and width != len(want):
            raise ModelRefused(f"{where}: the model ({source}) takes {width} features but the preprocessing spec "
                               f"produces {len(want)}; re-log the model with the spec it was trained with")


def _read(path: Path, model_dir: Path, where: str) -> bytes:
    if not path.is_file():
        raise ModelRefused(f"{where}: artifact file {path.name} is missing")
    # A file under the named data directory may itself be a link out of the artifact.
    return inside(model_dir, str(path), "artifact file", where).read_bytes()


def _torch_bundle(model_dir: Path, conf: dict, ref: ModelRef, spec: PreprocessSpec, allow_pickle: bool, where: str):
    data = inside(model_dir, conf.get("model_data", "data"), "pytorch model_data", where)
    pt2 = data / "model.pt2" if data.is_dir() else data
    if pt2.suffix == ".pt2" and pt2.is_file():
        if not allow_pickle:
            from mlflow.exceptions import MlflowException
            from mlflow.pytorch import _validate_pt2_archive_is_pickle_free

            try:
                _validate_pt2_archive_is_pickle_free(str(pt2))
            except MlflowException as e:
                raise ModelRefused(f"{where}: the torch.export archive holds pickle payloads; refused (allow_pickle is false)") from e
        return ModelBundle(ref, "torch_export", _read(pt2, model_dir, where), spec)
    arch = inside(model_dir, ARCH_FILE, "architecture", where)
    state = data / "state_dict.pt" if data.is_dir() else data
    if arch.is_file() and state.is_file():
        try:
            declared = json.loads(arch.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelRefused(f"{where}: {ARCH_FILE} is not valid JSON ({type(e).__name__}); re-log the model") from e
        return ModelBundle(ref, "torch_state_dict", _read(state, model_dir, where), spec, declared)
    script = data / "model.ts" if data.is_dir() else data
    if script.is_file() and script.suffix == ".ts":
        return ModelBundle(ref, "torchscript", _read(script, model_dir, where), spec)
    if allow_pickle:
        pth = data / "model.pth" if data.is_dir() else data
        return ModelBundle(ref, "torch_pickle", _read(pth, model_dir, where), spec)
    raise ModelRefused(
        f"{where}: PyTorch artifact is pickle-based (MLflow's default); refused. Log it with "
        "serialization_format='pt2', or set model.allow_pickle=true if you trust its source"
    )


# ----------------------------------------------------------------------------------------------- score


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
