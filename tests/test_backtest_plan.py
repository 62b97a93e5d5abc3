"""Fold plans: boundaries agree with scikit-learn's TimeSeriesSplit and mlforecast's windows; bad plans exit 2."""
from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pytest
from sklearn.model_selection import TimeSeriesSplit

from backtests.plan import Fold, FoldSpec, describe, from_json, plan_folds, to_json
from engine.errors import ConfigError

START = "2024-01-01"
N_DAYS = 60
END = (dt.date.fromisoformat(START) + dt.timedelta(days=N_DAYS - 1)).isoformat()


def index(day: str) -> int:
    return (dt.date.fromisoformat(day) - dt.date.fromisoformat(START)).days


def fold_indices(fold: Fold) -> tuple[list[int], list[int]]:
    return [index(d) for d in fold.train_days()], [index(d) for d in fold.test_days()]


def spec(**kw) -> FoldSpec:
    base = dict(window="rolling", train_days=10, horizon_days=7, start=START, end=END, n_folds=3)
    return FoldSpec(**{**base, **kw})


# ----------------------------------------------------------------------------------- scikit-learn

SK_GRID = list(itertools.product([2, 3, 8], [1, 3, 7], [0, 2, 5], [None, 5, 12]))


@pytest.mark.parametrize("n_splits,test_size,gap,max_train_size", SK_GRID)
def test_boundaries_agree_with_sklearn_time_series_split(n_splits, test_size, gap, max_train_size):
    """TimeSeriesSplit steps by test_size and ends on the last sample: our step_days = horizon_days, n_folds."""
    days = np.arange(N_DAYS)
    window = "expanding" if max_train_size is None else "rolling"
    ours = spec(window=window, train_days=max_train_size or 1, horizon_days=test_size, gap_days=gap,
                step_days=test_size, n_folds=n_splits)
    sk = TimeSeriesSplit(n_splits=n_splits, gap=gap, test_size=test_size, max_train_size=max_train_size)
    first_train_end = N_DAYS - n_splits * test_size - gap  # exclusive, as sklearn computes it
    if first_train_end <= 0:
        # sklearn refuses when the first fold has no training sample; so do we (exit 2).
        with pytest.raises(ValueError):
            list(sk.split(days))
        with pytest.raises(ConfigError):
            plan_folds(ours)
        return
    if max_train_size is not None and first_train_end < max_train_size:
        # sklearn silently shortens the first rolling windows; a backtest refuses a window shorter than asked.
        with pytest.raises(ConfigError, match="needs train_days"):
            plan_folds(ours)
        return
    folds = plan_folds(ours)
    expected = [(list(days[tr]), list(days[te])) for tr, te in sk.split(days)]
    assert [fold_indices(f) for f in folds] == expected
    assert expected[-1][1][-1] == N_DAYS - 1 and folds[-1].test_end == END


# ----------------------------------------------------------------------------------- mlforecast


def mlforecast_windows(n_times: int, n_windows: int, h: int, step_size: int | None, input_size: int | None):
    """mlforecast's window arithmetic on integer times 0..n_times-1 (freq=1), one series.

    Reproduced from Nixtla/mlforecast, mlforecast/utils.py `single_split` at commit
    680ef7f6e88631dd73a65b348965b665ca8d135b (lines 126-136; later versions call utilsforecast's
    `backtest_splits`, which mlforecast/forecast.py `cross_validation` maps over the same windows):

        if step_size is None:
            step_size = h
        test_size = h + step_size * (n_windows - 1)
        offset = test_size - i_window * step_size
        train_ends = offset_dates(max_dates, freq, -offset)
        valid_ends = offset_dates(train_ends, freq, h)
        train_mask = df[time_col].le(train_ends)
        valid_mask = df[time_col].gt(train_ends) & df[time_col].le(valid_ends)
        if input_size is not None:
            train_starts = offset_dates(train_ends, freq, -input_size)
            train_mask &= df[time_col].gt(train_starts)

    and `backtest_splits` loops `for i in range(n_windows)` with max_dates = each series' last time.
    mlforecast's `cutoff` column is train_ends (the last training time).
    """
    times = np.arange(n_times)
    max_dates = times.max()
    if step_size is None:
        step_size = h
    out = []
    for i_window in range(n_windows):
        test_size = h + step_size * (n_windows - 1)
        offset = test_size - i_window * step_size
        train_ends = max_dates - offset
        valid_ends = train_ends + h
        train_mask = times <= train_ends
        valid_mask = (times > train_ends) & (times <= valid_ends)
        if input_size is not None:
            train_starts = train_ends - input_size
            train_mask &= times > train_starts
        out.append((int(train_ends), list(times[train_mask]), list(times[valid_mask])))
    return out


ML_GRID = list(itertools.product([1, 2, 4, 9], [1, 5, 7], [None, 1, 3, 9], [None, 6, 14]))


@pytest.mark.parametrize("n_windows,h,step_size,input_size", ML_GRID)
def test_boundaries_agree_with_mlforecast_windows(n_windows, h, step_size, input_size):
    window = "expanding" if input_size is None else "rolling"
    ours = spec(window=window, train_days=input_size or 1, horizon_days=h, gap_days=0, step_days=step_size,
                n_folds=n_windows)
    expected = mlforecast_windows(N_DAYS, n_windows, h, step_size, input_size)
    first_train_end = expected[0][0]
    if first_train_end < 0 or (input_size is not None and first_train_end + 1 < input_size):
        with pytest.raises(ConfigError):
            plan_folds(ours)
        return
    folds = plan_folds(ours)
    assert [(index(f.train_end), *fold_indices(f)) for f in folds] == expected


@pytest.mark.parametrize("gap", [1, 4])
def test_gap_moves_training_end_back_and_keeps_mlforecast_test_windows(gap):
    """mlforecast has no gap: with one, the test windows stay put and training ends `gap` days earlier."""
    folds = plan_folds(spec(window="rolling", train_days=6, horizon_days=5, step_days=3, gap_days=gap, n_folds=4))
    expected = mlforecast_windows(N_DAYS, 4, 5, 3, 6)
    for f, (ml_train_end, ml_train, ml_valid) in zip(folds, expected):
        train, test = fold_indices(f)
        assert test == ml_valid
        assert index(f.train_end) == ml_train_end - gap
        assert train == [t - gap for t in ml_train]
        assert len(f.gap_days()) == gap and index(f.gap_days()[-1]) == index(f.cutoff) - 1


# ----------------------------------------------------------------------------------- explicit cutoffs, round trip


def test_explicit_cutoffs_override_n_folds_and_step():
    folds = plan_folds(spec(window="expanding", train_days=5, horizon_days=3, gap_days=1, n_folds=9, step_days=2,
                            cutoffs=["2024-02-10", "2024-01-20"]))
    assert [(f.index, f.cutoff, f.train_start, f.train_end, f.test_start, f.test_end) for f in folds] == [
        (0, "2024-01-20", START, "2024-01-18", "2024-01-20", "2024-01-22"),
        (1, "2024-02-10", START, "2024-02-08", "2024-02-10", "2024-02-12"),
    ]


def test_plan_round_trips_through_json_and_refuses_an_edited_one():
    s = spec(cutoffs=("2024-02-01", "2024-02-15"), gap_days=2)
    folds = plan_folds(s)
    text = to_json(s, folds)
    assert from_json(text) == (s, folds)
    assert to_json(*from_json(text)) == text
    doc = json.loads(text)
    doc["folds"][1]["train_start"] = "2024-01-01"
    with pytest.raises(ConfigError, match="differ from what its spec plans"):
        from_json(json.dumps(doc))
    with pytest.raises(ConfigError, match="cannot be read"):
        from_json("{not json")


def test_describe_lists_every_fold_with_its_windows():
    s = spec(n_folds=3, gap_days=2)
    folds = plan_folds(s)
    text = describe(folds, s)
    lines = text.splitlines()
    assert len(lines) == 2 + len(folds) and "rolling" in lines[0] and "gap 2" in lines[0]
    for f, line in zip(folds, lines[2:]):
        cells = line.split()
        assert cells == [str(f.index), f.cutoff, f"{f.train_start}..{f.train_end}", "10", "2",
                         f"{f.test_start}..{f.test_end}", "7"]


# ----------------------------------------------------------------------------------- errors (exit 2)


def test_rolling_window_too_long_for_the_first_fold_names_the_fold():
    with pytest.raises(ConfigError) as e:
        plan_folds(spec(window="rolling", train_days=40, n_folds=3, horizon_days=7))  # fold 0 has 39 days
    assert e.value.exit_code == 2
    assert str(e.value).startswith("backtest fold 0 (cutoff 2024-02-09)") and "train_days=40" in str(e.value)
    assert "only 39 day(s)" in str(e.value) and "\n" not in str(e.value)


def test_expanding_minimum_length_is_enforced():
    plan_folds(spec(window="expanding", train_days=39, n_folds=3, horizon_days=7))
    with pytest.raises(ConfigError, match="fold 0 .*expanding training window needs train_days=40"):
        plan_folds(spec(window="expanding", train_days=40, n_folds=3, horizon_days=7))


def test_gap_that_eats_the_training_window_is_refused():
    with pytest.raises(ConfigError, match=r"fold 0 \(cutoff 2024-01-10\): no training day left.*gap_days=9"):
        plan_folds(spec(window="expanding", train_days=1, cutoffs=["2024-01-10"], gap_days=9))
    assert plan_folds(spec(window="expanding", train_days=1, cutoffs=["2024-01-10"], gap_days=8))[0].n_train_days == 1


@pytest.mark.parametrize("cutoff,which", [("2023-12-31", 0), ("2024-02-25", 1)])
def test_cutoffs_outside_the_data_are_refused(cutoff, which):
    # 2024-02-25 + 7 days ends 2024-03-02, after END (2024-02-29).
    with pytest.raises(ConfigError, match=rf"fold {which} \(cutoff {cutoff}\): test window .* outside the data"):
        plan_folds(spec(window="expanding", train_days=1, cutoffs=[cutoff, "2024-02-01"][:: 1 if which == 0 else -1]))


@pytest.mark.parametrize("kw,message", [
    (dict(window="sliding"), "window='sliding' is unknown"),
    (dict(n_folds=None), "needs n_folds or cutoffs"),
    (dict(cutoffs=["2024-02-01", "2024-02-01"]), "cutoffs repeat"),
    (dict(cutoffs=[]), "cutoffs is empty"),
    (dict(cutoffs="2024-02-01"), "not one string"),
    (dict(start="2024-1-1"), "start='2024-1-1' is not a day"),
    (dict(end="2023-12-01"), "is before start"),
    (dict(horizon_days=0), "horizon_days=0 must be an integer >= 1"),
    (dict(gap_days=-1), "gap_days=-1"),
    (dict(step_days=0), "step_days=0"),
    (dict(n_folds=True), "n_folds=True"),
])
def test_bad_specs_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(**kw)


@pytest.mark.parametrize("horizon, step, gap", [(7, None, 0), (3, 5, 2), (1, 1, 0), (10, 3, 4)])
def test_too_many_folds_names_the_largest_number_that_fits(horizon, step, gap):
    """`folds.n_folds` too large: the one line gives the largest n_folds that fits (found here by trying each),
    not "lower horizon_days"."""
    fits = [n for n in range(1, N_DAYS + 1) if _plans(spec(n_folds=n, horizon_days=horizon, step_days=step,
                                                              gap_days=gap))]
    largest = max(fits)
    assert fits == list(range(1, largest + 1))
    with pytest.raises(ConfigError) as e:
        plan_folds(spec(n_folds=largest + 5, horizon_days=horizon, step_days=step, gap_days=gap))
    assert f"n_folds={largest}" in str(e.value) and "lower horizon_days" not in str(e.value), str(e.value)


def _plans(s: FoldSpec) -> bool:
    try:
        plan_folds(s)
        return True
    except ConfigError:
        return False
