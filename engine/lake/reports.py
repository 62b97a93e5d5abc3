"""Report files (JSON, text, HTML) written on a lake's filesystem: a local path, file:// or an object-store URL.

Object-store handlers take whole files, so each file is written to a local temporary copy first and then copied
over. Used by the contract reports (`contracts.enforce`) and the evaluation report (`engine.evaluation.report`).
"""
from __future__ import annotations

import os
import tempfile

import pyarrow.fs as pafs

from engine.lake.snapshot import filesystem


def report_target(root: str, job: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str, str]:
    """(the lake's filesystem, the reports folder on it, that folder as users name it) for a lake root or URL."""
    fs, base = filesystem(root, storage_options)
    folder = f"_reports/{job}"
    if base:  # a local lake (a path or file://): an absolute local path
        return fs, f"{base}/{folder}", f"{base}/{folder}"
    return fs, folder, f"{root.rstrip('/')}/{folder}"  # a URL: paths on its filesystem are relative to the root


def folder_target(folder: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, the folder's path on it, the folder as users name it) for a folder path or URL."""
    fs, base = filesystem(folder, storage_options)
    if base:
        return fs, base, base
    return fs, "", folder.rstrip("/")  # a URL: its filesystem is rooted at the folder itself


def write_report_files(fs: pafs.FileSystem, folder: str, files: dict[str, str]) -> None:
    """Write UTF-8 text files into `folder` of `fs` ("" is the filesystem's root), through local temp copies."""
    if folder:
        fs.create_dir(folder, recursive=True)
    with tempfile.TemporaryDirectory(prefix="lakescore-report-") as tmp:
        for name, text in files.items():
            local = os.path.join(tmp, name)
            with open(local, "w", encoding="utf-8") as f:
                f.write(text)
            pafs.copy_files(local, f"{folder}/{name}" if folder else name,
                            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
