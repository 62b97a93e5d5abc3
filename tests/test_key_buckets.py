"""Key uniqueness per key-hash bucket (contracts.unique): exact against a whole-day reference, nothing on the driver
but counts and file names, hashes spilled encrypted under the unit's key (Speck64/128, checked against its published
test vector), scratch files removed (one run's cleanup never another's), a broken bucket fails its unit clearly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import ROOT, ROWS, score_config
from contracts.checks import CheckStats
from contracts.enforce import ContractCheck
from contracts.spec import load_contract
from contracts.unique import count_spilled, keyed
from engine.errors import ContractViolation, UnitFailed
from engine.lake.scratch import remove_scratch, scratch_dir
from engine.executor import LocalExecutor
from engine.work import UnitWork
from test_contracts import NEW_DAY, fresh_day, reports, score, set_rows

CONTRACT = ROOT / "conf" / "contracts" / "features.yaml"
DS = "2026-01-05"
SALT = bytes(range(16))


def row_check(schema: pa.Schema) -> ContractCheck:
    return ContractCheck(load_contract(str(CONTRACT)).resolve(schema), {})


def day_keys(rows: int, seed: int = 7) -> np.ndarray:
    """Entity ids with repeats inside and across the thirds of the day (the chunks below)."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=rows, replace=False).astype(np.int64)
    picks = rng.integers(0, rows, size=(40, 2))
    ids[picks[:, 1]] = ids[picks[:, 0]]  # 40 copies, some within a chunk, most across chunks
    ids[5] = ids[6] = ids[rows - 1]  # a key three times
    return ids


def chunk_stats(ids: np.ndarray, check: ContractCheck) -> CheckStats:
    batch = pa.RecordBatch.from_pydict({"entity_id": pa.array(ids)})
    stats = check.new_stats()
    stats.keys.append(ids.view(np.uint64))  # what CheckStats.update folds in for an integer key
    stats.rows = batch.num_rows
    return stats


@pytest.mark.parametrize("buckets", [1, 3, 16])
def test_bucketed_count_equals_the_whole_day_reference(tmp_path, buckets):
    ids = day_keys(60_000)
    reference = int(pd.Series(ids).duplicated(keep=False).sum())
    assert reference > 40  # positive control: the day has repeats
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    folder = str(tmp_path / "_scratch" / "run" / "keys" / "000000")
    merged = CheckStats()
    for i, part in enumerate(np.array_split(ids, 3)):
        merged.merge(chunk_stats(part, check).seal(folder, i, buckets, {}, SALT))
    assert merged.duplicates == 0 and len(merged.key_spills) == 3  # nothing counted yet: it needs every chunk
    with pytest.raises(ValueError, match="count_spilled"):
        merged.duplicate_keys()
    unit = UnitWork("u", DS, "", None, None, row_check=check, scratch_uri=folder, key_buckets=buckets, key_salt=SALT)
    check.complete(merged, unit, LocalExecutor().run, float("inf"))
    assert merged.duplicate_keys() == reference
    assert not (tmp_path / "_scratch" / "run" / "keys" / "000000").exists()


def test_a_sealed_chunk_ships_a_count_or_a_file_name_never_its_hashes(tmp_path):
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    ids = day_keys(200_000)
    whole = chunk_stats(ids, check).seal()  # a one-chunk unit: counted where it ran
    assert whole.duplicates == int(pd.Series(ids).duplicated(keep=False).sum()) > 0
    spilled = chunk_stats(ids, check).seal(str(tmp_path / "k"), 0, 4, {}, SALT)
    for stats in (whole, spilled):
        assert len(stats.to_bytes()) < 1_000  # 1.6 MB of hashes stay in the worker (or the scratch file)
        assert CheckStats.from_bytes(stats.to_bytes()).duplicates == stats.duplicates
    assert (tmp_path / "k" / "000000.keys").stat().st_size == 16 + 8 * 5 + 8 * len(ids)


def test_a_broken_spill_file_fails_the_unit_with_what_to_do(tmp_path):
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    folder = str(tmp_path / "keys")
    merged = CheckStats()
    for i, part in enumerate(np.array_split(day_keys(3_000), 2)):
        merged.merge(chunk_stats(part, check).seal(folder, i, 2, {}, SALT))
    (tmp_path / "keys" / "000001.keys").write_bytes(b"not a spill file, just some bytes")
    unit = UnitWork("u", DS, "", None, None, row_check=check, scratch_uri=folder, key_buckets=2)
    with pytest.raises(UnitFailed, match=r"ds=2026-01-05: the key uniqueness check failed .*re-run the job"):
        count_spilled(LocalExecutor().run, unit, merged, check, float("inf"))
    assert not list((tmp_path / "keys").glob("*.keys"))  # removed even so


def test_one_runs_cleanup_never_removes_another_runs_spills(tmp_path):
    """Run A ends and cleans up; run B spills its first key hashes between A's look at the empty `_scratch` folder and
    A's removal of it. B's spills survive, and B's second stage still counts its duplicates exactly."""
    lake = str(tmp_path / "lake")
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    ids = day_keys(30_000)
    reference = int(pd.Series(ids).duplicated(keep=False).sum())
    mine = scratch_dir(lake, "run-a", 0)
    chunk_stats(ids[:10], check).seal(mine, 0, 1, {}, SALT)  # run A's own leftover spill
    theirs = scratch_dir(lake, "run-b", 0)
    merged = CheckStats()

    def run_b_spills() -> None:
        for i, part in enumerate(np.array_split(ids, 3)):
            merged.merge(chunk_stats(part, check).seal(theirs, i, 2, {}, SALT[::-1]))

    remove_scratch(lake, "run-a", {}, before_root_removal=run_b_spills)
    assert not (tmp_path / "lake" / "_scratch" / "run-a").exists()
    assert sorted(p.name for p in (tmp_path / "lake" / "_scratch" / "run-b" / "keys" / "000000").iterdir()) == [
        "000000.keys", "000001.keys", "000002.keys"]
    unit = UnitWork("u", DS, "", None, None, row_check=check, scratch_uri=theirs, key_buckets=2)
    check.complete(merged, unit, LocalExecutor().run, float("inf"))
    assert merged.duplicate_keys() == reference > 0
    remove_scratch(lake, "run-b", {})
    assert not (tmp_path / "lake" / "_scratch").exists()  # the last run out removes the empty folder


def test_spilled_hashes_are_speck64_128_under_the_units_key():
    """The published Speck64/128 test vector (Beaulieu et al., 2013): key 1b1a1918 13121110 0b0a0908 03020100,
    plaintext 3b726574 7475432d → ciphertext 8c6fa548 454e028b."""
    key = bytes.fromhex("0001020308090a0b1011121318191a1b")
    assert keyed(np.array([0x3B7265747475432D], dtype=np.uint64), key)[0] == 0x8C6FA548454E028B
    ids = day_keys(100_000).view(np.uint64)
    a, b = keyed(ids, SALT), keyed(ids, SALT[::-1])
    assert len(np.unique(a)) == len(np.unique(ids)) == len(np.unique(b))  # a permutation: no collision added
    assert not set(a.tolist()) & set(ids.tolist()) and not set(a.tolist()) & set(b.tolist())


@pytest.mark.parametrize("salt", [b"", b"short"])
def test_key_hashes_are_never_spilled_without_a_key(tmp_path, salt):
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    with pytest.raises(ValueError, match="key_salt"):
        chunk_stats(day_keys(1_000), check).seal(str(tmp_path / "k"), 0, 2, {}, salt)
    assert not (tmp_path / "k").exists()


def test_the_same_day_spilled_under_two_keys_counts_the_same_duplicates_from_other_bytes(tmp_path):
    ids = day_keys(30_000)
    check = row_check(pa.schema([("entity_id", pa.int64())]))
    counts, files = [], []
    for n, salt in enumerate((SALT, bytes(range(16, 32)))):
        folder = str(tmp_path / f"k{n}")
        merged = CheckStats()
        for i, part in enumerate(np.array_split(ids, 3)):
            merged.merge(chunk_stats(part, check).seal(folder, i, 2, {}, salt))
        files.append((tmp_path / f"k{n}" / "000000.keys").read_bytes())
        check.complete(merged, UnitWork("u", DS, "", None, None, row_check=check, scratch_uri=folder, key_buckets=2,
                                        key_salt=salt), LocalExecutor().run, float("inf"))
        counts.append(merged.duplicate_keys())
    assert counts[0] == counts[1] == int(pd.Series(ids).duplicated(keep=False).sum()) > 0
    assert files[0] != files[1]


PLANTED_KEY = 734_501_928_374_615  # the demo's entity ids are about 10**6: this one is distinctive


def test_spilled_key_hashes_hold_no_raw_key_value_and_still_count_duplicates_exactly(ray_local, lake, demo_root,
                                                                                       monkeypatch):
    """A day of three files (three chunks) whose integer key repeats across them spills its key hashes to the lake.
    The spill files, captured just before the second stage removes them, hold neither the planted key's bytes nor any
    of the day's raw keys, and the duplicate count is exact (pandas reference)."""
    from contracts import unique
    from test_pipelines import append

    t = set_rows(fresh_day(), "entity_id", [0, 1500, 2999], PLANTED_KEY)  # one row in each file
    ids = np.asarray(t.column("entity_id").to_pylist(), dtype=np.int64)
    expected = int(pd.Series(ids).duplicated(keep=False).sum())
    assert expected == 3
    append(lake, t, files=3)
    captured: dict[str, bytes] = {}
    remove = unique.remove_folder

    def capture_then_remove(uri: str, storage_options: dict) -> None:
        for p in Path(uri).rglob("*.keys"):
            captured[p.name] = p.read_bytes()
        remove(uri, storage_options)

    monkeypatch.setattr(unique, "remove_folder", capture_then_remove)
    with pytest.raises(ContractViolation):
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}",
                           "output.target_file_rows=1000"))
    (unit,) = [u for u in reports(lake)[-1]["units"] if u["ds"] == NEW_DAY]
    assert {v["check"]: v["rows"] for v in unit["violations"]} == {"unique_key": expected}
    assert sorted(captured) == ["000000.keys", "000001.keys", "000002.keys"]  # three chunks spilled
    words = []
    for data in captured.values():
        n = int(np.frombuffer(data[8:16], dtype=np.uint64)[0])
        words.append(np.frombuffer(data[16 + 8 * (n + 1):], dtype=np.uint64))
    spilled = np.concatenate(words)
    assert len(spilled) == ROWS  # every row's key hash is there
    for raw in (np.int64(PLANTED_KEY).tobytes(), np.array(PLANTED_KEY, ">i8").tobytes(), str(PLANTED_KEY).encode()):
        assert not [name for name, data in captured.items() if raw in data]
    assert not set(spilled.tolist()) & set(ids.view(np.uint64).tolist())  # no raw key of the day, at any position
    assert not (lake / "_scratch").exists()
