"""The model registry side: resolve a registry reference, download it, load its artifact safely into a bundle.

A `ModelBundle` holds the artifact's bytes and its preprocessing spec, so it can be shipped to workers
(Ray object store, Spark broadcast) and loaded there without touching MLflow again. Accepted formats load
without unpickling: XGBoost JSON/UBJ, torch.export programs (checked record by record for pickle
payloads), TorchScript, and `state_dict` (weights_only) into a JSON-declared MLP. Anything else that
needs pickle is refused unless `allow_pickle: true`.

Imports: engine.errors and engine.models.preprocess; engine.models.scorers only inside `load_bundle` (scorers
imports this module for `ModelBundle`), MLflow only inside functions.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ModelRefused
from engine.models.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from engine.models.scorers import Scorer

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


def resolve_model(uri: str, tracking_uri: str, registry_uri: str | None = None, setting: str = "model.uri") -> ModelRef:
    """models:/name@alias or models:/name/version → a concrete registered version (exit 5 if absent); `setting` is the
    config key that named it (model.uri, models.champion, baseline.model…), for the message."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/(\d+))", uri)
    if not m:
        raise ModelRefused(f"{setting} {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = m.groups()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ModelRefused(
            f"model {name} {what} not found in the registry at {tracking_uri}; "
            f"register it (make demo) or fix {setting}"
        ) from e
    return ModelRef(name=name, version=int(mv.version), run_id=mv.run_id or "", source=mv.source, alias=alias)


class ModelResolution:
    """`resolve_model` then `fetch_bundle`, in a background thread started at once, so that MLflow's import (about
    two seconds), the registry look-up and the artifact's download and check overlap the caller's own start-up (the
    input snapshot, the engine's start). `ref()` and `bundle()` wait for their step and re-raise its error as it is
    (ModelRefused: exit 5), so the caller decides what comes first, exactly as if it had called them in line."""

    def __init__(self, uri: str, tracking_uri: str, registry_uri: str | None, allow_pickle: bool):
        from concurrent.futures import Future
        import threading

        self._ref: Future = Future()
        self._bundle: Future = Future()
        self.seconds: dict[str, float] = {}  # step → seconds it took in the background thread
        args = (uri, tracking_uri, registry_uri, allow_pickle)
        threading.Thread(target=self._work, args=args, name="lakescore-model", daemon=True).start()

    def _work(self, uri: str, tracking_uri: str, registry_uri: str | None, allow_pickle: bool) -> None:
        import time

        t = time.monotonic()
        try:
            ref = resolve_model(uri, tracking_uri, registry_uri)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits, raised there as it is
            self._ref.set_exception(e)
            self._bundle.set_exception(e)
            return
        self.seconds["model_ref"] = round(time.monotonic() - t, 3)
        self._ref.set_result(ref)
        t = time.monotonic()
        try:
            bundle = fetch_bundle(uri, tracking_uri, registry_uri, allow_pickle, ref=ref)
        except BaseException as e:  # noqa: BLE001
            self._bundle.set_exception(e)
            return
        self.seconds["bundle"] = round(time.monotonic() - t, 3)
        self._bundle.set_result(bundle)

    def ref(self) -> ModelRef:
        """The resolved version (waits for it); the registry's error, if it failed."""
        return self._ref.result()

    def bundle(self) -> ModelBundle:
        """The validated bundle (waits for it); the resolution's or the artifact's error, if either failed."""
        return self._bundle.result()

    def error(self) -> BaseException | None:
        """The resolution's error once it is known (waits for the version), else None: lets a caller that failed on
        something else meanwhile raise the model's error first, the order the steps had when run in line."""
        return self._ref.exception()


def experiment_id(client, name: str, artifact_root: str) -> str:
    """The MLflow experiment `name` (an MlflowClient's), created with its artifacts under `artifact_root` (a local
    path, or a URL such as s3://…) if it does not exist yet; an existing one whose artifact folder is gone (a moved
    project) is a ConfigError (engine.models.relocate)."""
    from engine.models.relocate import require_location

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        require_location(name, exp.artifact_location, artifact_root, client.tracking_uri)
        return exp.experiment_id
    location = artifact_root if "://" in artifact_root else "file://" + artifact_root
    return client.create_experiment(name, artifact_location=location)


def download_model(ref: ModelRef, tracking_uri: str, registry_uri: str | None, dst: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from engine.models.relocate import local_folder

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)
    gone = local_folder(_stored_at(ref, tracking_uri, registry_uri))  # MLflow "downloads" a missing folder as empty
    if gone is not None and not os.path.exists(gone):
        raise ModelRefused(f"model {ref.uri}: its artifacts at {gone} no longer exist (was the project moved?); run "
                           "`lakescore relocate` with this job's config (README: Moving or copying a project)")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=dst))
    except (MlflowException, OSError) as e:
        raise ModelRefused(f"model {ref.uri}: artifacts cannot be downloaded ({type(e).__name__}); check the artifact store") from e


def _stored_at(ref: ModelRef, tracking_uri: str, registry_uri: str | None) -> str | None:
    """Where the registry says a model version's files are (None when it cannot say)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri or tracking_uri)
    try:
        source = client.get_model_version(ref.name, str(ref.version)).source or ""
        logged = re.fullmatch(r"models:/(m-[0-9a-f]+)", source)  # an MLflow 3 logged model
        if logged:
            return client.get_logged_model(logged.group(1)).artifact_location
        run = re.fullmatch(r"runs:/([^/]+)/(.*)", source)
        if run:
            return f"{client.get_run(run.group(1)).info.artifact_uri.rstrip('/')}/{run.group(2)}"
    except MlflowException:
        return None
    return source


def fetch_bundle(uri: str, tracking_uri: str, registry_uri: str | None, allow_pickle: bool,
                 ref: ModelRef | None = None, setting: str = "model.uri") -> ModelBundle:
    """Resolve (unless `ref` is already resolved from `uri`), download and validate a registered model; every failure
    is ModelRefused (exit 5)."""
    ref = ref or resolve_model(uri, tracking_uri, registry_uri, setting)
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
    from engine.models.scorers import build_scorer  # scorers imports this module for ModelBundle

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
