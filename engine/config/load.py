"""Reading a config: the YAML loader (ISO dates stay strings), dotted overrides, validation into a job model with
one-line errors, path resolution (`resolve_paths`, `relative_paths`), the config hash and the JSON form.

Imports: engine.config.sections (the `Model` base), engine.lake.paths and engine.errors; job models are handed
in as classes, so this module does not import engine.config.jobs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from engine.lake.paths import absolute_path, absolute_tracking_uri, is_url
from engine.config.sections import Model
from engine.errors import ConfigError


class _DateSafeLoader(yaml.SafeLoader):
    """SafeLoader that keeps ISO dates as strings (partition values are strings)."""


_DateSafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item or item.startswith("="):
        raise ConfigError(f"override {item!r} is not dotted.key=value; example: input.ds=2026-01-03")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_DateSafeLoader) if raw else ""  # dates stay strings, as in files
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:160]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({first}); quote strings that hold "
                          "YAML syntax, e.g. drift.columns='[\"f0?\"]'") from e
    return key.split("."), value


def _set(tree: dict, path: list[str], value: object, origin: str) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {origin!r}: {'.'.join(path[: i + 1])} is a value, not a section")
        node = child
    node[path[-1]] = value


def load_config(cls: type[Model], path: str | os.PathLike | None, overrides: list[str] = (),
                key: str | None = None) -> Model:
    """Read YAML at `path`, apply dotted overrides, validate into `cls`; errors are ConfigError (exit 2).

    `key` names the config key that gave `path` (e.g. "input.contract"), for the message when the file is missing.
    """
    tree: dict = {}
    where = "the command line"
    if path is not None:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            if key:
                raise ConfigError(f"{key}: file {where} not found (a relative path starts at {os.getcwd()}); "
                                  f"set {key} to an existing file")
            raise ConfigError(f"config file {where} not found; pass --config conf/<job>.yaml")
        try:
            loaded = yaml.load(p.read_text(), Loader=_DateSafeLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {where} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {where} must hold a mapping at the top level")
        tree = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        _set(tree, keys, value, item)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e, cls, where)) from e


def _describe(e: ValidationError, cls: type[Model], where: str) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _section(cls, [str(x) for x in err["loc"][:-1]])
            known = sorted(parent.model_fields) if parent else []
            parts.append(f"unknown key '{loc}' in {where} (or an override); known keys here: {', '.join(known)}")
        elif err["type"] == "missing":
            parts.append(f"missing required key '{loc}' in {where}")
        else:
            parts.append(f"bad value for '{loc}' in {where}: {err['msg'].removeprefix('Value error, ')}")
    more = f" (+{len(e.errors()) - 3} more)" if len(e.errors()) > 3 else ""
    return "; ".join(parts) + more


def _section(cls: type[Model], path: list[str]) -> type[Model] | None:
    node = cls
    for part in path:
        field = node.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, Model)):
            return None
        node = ann
    return node


def relative_paths(cfg: Model) -> list[str]:
    """Dotted keys of `cfg` that still hold relative paths (refused on a remote cluster)."""
    found = []
    lake = getattr(cfg, "lake", None)
    if lake is not None and not is_url(lake.root) and not os.path.isabs(lake.root):
        found.append("lake.root")
    ml = getattr(cfg, "mlflow", None)
    if ml is not None:
        for key in ("tracking_uri", "registry_uri"):
            uri = getattr(ml, key)
            if uri and absolute_tracking_uri(uri, "/x") != absolute_tracking_uri(uri, "/y"):
                found.append(f"mlflow.{key}")
        if not is_url(ml.artifact_root) and not os.path.isabs(ml.artifact_root):
            found.append("mlflow.artifact_root")
    return found


def resolve_paths(cfg: Model, base: str | os.PathLike | None = None) -> Model:
    """A copy of `cfg` with lake root and MLflow locations absolute (or URLs)."""
    updates = {}
    if getattr(cfg, "lake", None) is not None:
        updates["lake"] = cfg.lake.model_copy(update={"root": absolute_path(cfg.lake.root, base)})
    if getattr(cfg, "mlflow", None) is not None:
        ml = cfg.mlflow
        updates["mlflow"] = ml.model_copy(
            update={
                "tracking_uri": absolute_tracking_uri(ml.tracking_uri, base),
                "registry_uri": absolute_tracking_uri(ml.registry_uri, base) if ml.registry_uri else None,
                "artifact_root": absolute_path(ml.artifact_root, base),
            }
        )
    return cfg.model_copy(update=updates)


# Execution settings do not change a single output value, so they stay out of the hash: the same
# input, model and output settings give the same config_hash on Ray and on Spark.
_EXECUTION_KEYS = {"engine", "ray", "spark", "run"}


def _without_added_defaults(model: Model, data: dict) -> dict:
    out = dict(data)
    for name, f in type(model).model_fields.items():
        value = getattr(model, name)
        if (f.json_schema_extra or {}).get("hash_when_default") is False and value == f.get_default(call_default_factory=True):
            out.pop(name, None)
        elif isinstance(value, Model) and isinstance(out.get(name), dict):
            out[name] = _without_added_defaults(value, out[name])
    return out


def config_hash(cfg: Model) -> str:
    data = {k: v for k, v in _without_added_defaults(cfg, cfg.model_dump(mode="json")).items()
            if k not in _EXECUTION_KEYS}
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def to_json(cfg: Model) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
