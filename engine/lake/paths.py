"""Where things live: a table's URI under the lake root (`table_uri`, the package's most imported name), URLs
(`is_url`) and paths made absolute against a base directory.

Imports: nothing of the project at run time (the chunk path, engine.lake.snapshot, imports `is_url` from here
without pydantic or yaml; the `lakescore submit` CLI loads configs without pyarrow); the `LakeConfig` section only
for type checking, so engine.config (whose loader resolves paths with this module) and engine.lake do not import
each other at run time.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config.sections import LakeConfig

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(path: str) -> bool:
    return bool(_URL.match(path))

__all__ = ["absolute_path", "absolute_tracking_uri", "is_url", "table_uri"]


def absolute_path(path: str, base: str | os.PathLike | None = None) -> str:
    """A path or URL made absolute against `base` (default the working directory); URLs are kept."""
    if is_url(path):
        return path
    return str((Path(base or os.getcwd()) / os.path.expanduser(path)).resolve())


def absolute_tracking_uri(uri: str, base: str | os.PathLike | None = None) -> str:
    """sqlite:///relative.db → sqlite:////abs/relative.db; other URIs unchanged."""
    m = re.fullmatch(r"sqlite:///(.+)", uri)
    if m and not m.group(1).startswith("/"):
        return "sqlite:///" + absolute_path(m.group(1), base)
    if not is_url(uri):
        return absolute_path(uri, base)
    return uri


def require_root(lake: LakeConfig) -> None:
    """A local lake.root that is not a directory is a config error (exit 2) naming lake.root, before any table of it
    is blamed (a missing input table would otherwise say "fix input.table"). URLs (s3://…) are not checked here."""
    from engine.errors import ConfigError

    if not is_url(lake.root) and not os.path.isdir(lake.root):
        raise ConfigError(f"lake.root {lake.root} does not exist; set lake.root to the lake's folder "
                          "(e.g. lake.root=./lake, made by `make demo`)")


def table_uri(lake: LakeConfig, table: str) -> str:
    """Table paths are relative to lake.root unless absolute or URLs."""
    if is_url(table) or os.path.isabs(table):
        return table
    root = lake.root.rstrip("/")
    return f"{root}/{table}"
