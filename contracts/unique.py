"""Key uniqueness that scales with the day, not with the driver: hashes are counted per bucket in the workers.

A unit read in one chunk counts its duplicate keys where it ran. A unit of several chunks cannot: a key may repeat
across chunks. Each of its chunks then spills its 64-bit key hashes, grouped by hash bucket, to one scratch file
under the lake (`<lake.root>/_scratch/<run_id>/keys/<unit>/<chunk>.keys`, shared storage, so any worker can read
it), and ships only the file's name. When the unit's chunks are all in, the driver runs a second, small stage on
the same executor: one task per bucket reads that bucket's slice of every chunk's file (a ranged read each),
sorts it and counts the rows whose key repeats. The driver receives one integer per bucket and deletes the
scratch files. Memory: a chunk holds its own hashes (8 bytes a row of the chunk), a bucket task one bucket's
(`engine.lake.scratch.ROWS_PER_BUCKET` × 8 bytes = 64 MB); the driver holds neither.

File format (little-endian): magic `LSKEYS1\\0`, the bucket count n (uint64), n + 1 offsets (uint64, in hashes),
then the hashes, bucket 0's first. Names are fixed by the chunk's plan position, so a retried or speculative
attempt rewrites the same file with the same bytes.

What is spilled is keyed: a single integer key's "hash" is the key itself (exact), and a string key's is an unkeyed
64-bit blake2b anyone can recompute for a guessed value, while the spill sits on shared storage, a killed run's
until someone removes it, where `forget` never reaches, and a key may be tagged pii. So every hash is encrypted with
Speck64/128 (a published 64-bit block cipher, vectorised here in numpy, checked against its test vector) under
the unit's `key_salt` before it is written. We chose a keyed permutation over a keyed hash: distinct keys stay
distinct, so the count stays exact, and the same key gives the same word in every chunk of the unit, so the second
stage needs no key at all. The salt is 16 random bytes drawn per unit when the run plans it
(`engine.lake.scratch.unit_scratch`) and shipped only in the unit's work (the Ray object store, a Spark broadcast), never
derived from the run id (which names the spill folder) nor written to the lake; a retried or speculative attempt
gets the same work, hence the same bytes. Spilling without a salt is refused (a ValueError: a bug, never data).
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from engine.errors import LakescoreError, UnitFailed
from engine.lake.scratch import remove_folder
from engine.lake.snapshot import filesystem
from engine.executor import one_line
from engine.work import ChunkFailure, ChunkResult, ChunkWork, UnitWork

MAGIC = b"LSKEYS1\0"
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: whatever words it gets spread evenly over the buckets


def duplicate_rows(hashes: np.ndarray) -> int:
    """Rows whose hash appears more than once (sorts `hashes` in place)."""
    if len(hashes) < 2:
        return 0
    hashes.sort()
    same = hashes[1:] == hashes[:-1]
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    return int(repeated.sum())


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    return ((hashes * _MIX) >> np.uint64(32)) % np.uint64(buckets)


def _at(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


SALT_BYTES = 16  # Speck64/128's key


def _round_keys(salt: bytes) -> list[np.uint32]:
    """Speck64/128's 27 round keys from a 16-byte key (words k0, l0, l1, l2, little-endian)."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"refusing to spill key hashes without a {SALT_BYTES}-byte key_salt (got {len(salt)} bytes)")
    words = [int.from_bytes(salt[i:i + 4], "little") for i in range(0, SALT_BYTES, 4)]
    k, ls = [words[0]], words[1:]
    for i in range(26):
        ls.append(((k[i] + ((ls[i] >> 8) | (ls[i] << 24))) & 0xFFFFFFFF) ^ i)
        k.append((((k[i] << 3) | (k[i] >> 29)) & 0xFFFFFFFF) ^ ls[i + 3])
    return [np.uint32(v) for v in k]


def keyed(hashes: np.ndarray, salt: bytes) -> np.ndarray:
    """Each 64-bit word encrypted with Speck64/128 under `salt` (high half x, low half y): a permutation of the
    64-bit words, so equal inputs stay equal and distinct ones distinct."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    x = (h >> np.uint64(32)).astype(np.uint32)
    y = h.astype(np.uint32)
    t = np.empty_like(x)
    for k in _round_keys(salt):
        np.right_shift(x, np.uint32(8), out=t)
        np.left_shift(x, np.uint32(24), out=x)
        x |= t
        x += y
        x ^= k
        np.right_shift(y, np.uint32(29), out=t)
        np.left_shift(y, np.uint32(3), out=y)
        y |= t
        y ^= x
    return (x.astype(np.uint64) << np.uint64(32)) | y.astype(np.uint64)


def spill(hashes: np.ndarray, folder: str, chunk_index: int, buckets: int, storage_options: dict,
          salt: bytes) -> str:
    """Write a chunk's key hashes, encrypted under the unit's `salt`, grouped by bucket into `folder`; returns the
    file's name there."""
    hashes = keyed(hashes, salt)
    fs, base = filesystem(folder, storage_options)
    b = bucket_of(hashes, buckets)
    order = np.argsort(b, kind="stable")
    offsets = np.zeros(buckets + 1, dtype=np.uint64)
    offsets[1:] = np.cumsum(np.bincount(b.astype(np.int64), minlength=buckets))
    name = f"{chunk_index:06d}.keys"
    if base:
        fs.create_dir(base, recursive=True)
    with fs.open_output_stream(_at(base, name)) as f:
        f.write(MAGIC + np.uint64(buckets).tobytes() + offsets.tobytes())
        f.write(hashes[order].tobytes())
    return name


def _read_bucket(fs, path: str, bucket: int) -> np.ndarray:
    with fs.open_input_file(path) as f:
        head = f.read_at(16, 0)
        if head[:8] != MAGIC:
            raise UnitFailed(f"{path} is not a key-hash spill file (bad magic)")
        n = int(np.frombuffer(head[8:16], dtype=np.uint64)[0])
        start, end = np.frombuffer(f.read_at(16, 16 + 8 * bucket), dtype=np.uint64)
        data_at = 16 + 8 * (n + 1)
        return np.frombuffer(f.read_at(int(end - start) * 8, data_at + int(start) * 8), dtype=np.uint64)


def count_bucket(unit: UnitWork, chunk: ChunkWork, _bundle=None) -> ChunkResult:
    """The second stage's task: duplicate rows in bucket `chunk.index` over the spill files `chunk.files` (names in
    the folder `unit.input_uri`)."""
    fs, base = filesystem(unit.input_uri, unit.storage_options)
    t = time.perf_counter()
    hashes = np.concatenate([_read_bucket(fs, _at(base, name), chunk.index) for name in chunk.files])
    stats = unit.row_check.new_stats()
    stats.duplicates = duplicate_rows(hashes)
    return ChunkResult(unit.unit, 0, 0, [], stats, timings={"keys": time.perf_counter() - t})


Run = Callable[[dict, list, object, float], Iterator[ChunkResult | ChunkFailure]]


def count_spilled(run: Run, unit: UnitWork, stats, row_check, deadline: float) -> None:
    """Run the second stage for a unit whose chunks spilled into `unit.scratch_uri` (`stats.key_spills`): add its
    duplicate rows to `stats.duplicates`, then remove the spill folder. A failed bucket task fails the unit
    (UnitFailed)."""
    spills = tuple(sorted(stats.key_spills))
    if not spills:
        return
    try:
        work = UnitWork(unit.unit, unit.ds, unit.scratch_uri, None, count_bucket,
                        storage_options=dict(unit.storage_options), row_check=row_check)
        chunks = [ChunkWork(unit.unit, spills, b) for b in range(unit.key_buckets)]
        found, failure = 0, None
        try:
            for item in run({unit.unit: work}, chunks, None, deadline):
                if isinstance(item, ChunkFailure):
                    failure = failure or f"bucket {item.chunk}: {item.error}"
                else:
                    found += item.checks.duplicates
        except (LakescoreError, OSError) as e:  # an in-process executor raises what the task raised
            failure = one_line(e)
        if failure:
            raise UnitFailed(f"ds={unit.ds}: the key uniqueness check failed ({failure}); re-run the job")
        stats.duplicates += found
        stats.key_spills = []
    finally:
        remove_folder(unit.scratch_uri, unit.storage_options)
