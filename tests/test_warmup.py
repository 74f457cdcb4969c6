"""Strategies give the same answer on any history: on a trailing window of the declared warmup the last row equals the
full-history row, and signals do not depend on where the history starts once the warmup has passed.

The live engine recomputes signals on a trailing window and acts on its last row; a backtest computes them once on the
whole history. These tests are what makes the two agree, for every library strategy and both combinators, on a
synthetic extended-hours market with sparse symbols, gaps, a holiday and a half day (28 November 2025).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from smallcap.data.calendar import session_labels
from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, generate
from smallcap.strategy.base import SIGNAL_BOOLS, SIGNAL_FLOATS, Signals, get_strategy

CASES = {
    'sma_cross': {}, 'sma_cross_ema': dict(kind='ema', fast=5, slow=20), 'rsi_reversion': dict(short=True),
    'bollinger_reversion': dict(short=True), 'stochrsi_ema': dict(trend=20), 'dual_momentum': dict(lookback=30, top=3),
    'atr_breakout': dict(length=10, k=0.0), 'orb': dict(gap_min=0.02), 'orb_all_days': {}, 'gap_and_go': dict(rvol_min=1.0, gap_min=0.02),
    'vwap_reclaim': dict(below_bars=5),
    'arbiter': dict(members=('orb', {'name': 'sma_cross', 'params': {'fast': 5, 'slow': 20}}, 'rsi_reversion')),
    'ensemble': dict(members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.6),
}


def strategy(case: str):
    return get_strategy({'sma_cross_ema': 'sma_cross', 'orb_all_days': 'orb'}.get(case, case), **CASES[case])


@pytest.fixture(scope='module')
def bars() -> Panel:
    warnings.filterwarnings('ignore')
    mk = generate(SynthConfig(seed=3, n_symbols=16, start='2025-11-19', n_sessions=9, gap_prob=0.5))
    return Panel.from_bars(mk.bars)                                  # extended hours: sparse premarket and after-hours bars


@pytest.fixture(scope='module')
def full(bars):
    return {c: strategy(c).signals(bars) for c in CASES}


def _row(s: Signals, i: int) -> dict[str, np.ndarray]:
    return {f: getattr(s, f).iloc[i].to_numpy() for f in (*SIGNAL_BOOLS, *SIGNAL_FLOATS) if getattr(s, f) is not None}


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    "Cells that agree: booleans exactly; floats (stops) to 1e-9 relative, NaN equal to NaN."
    if a.dtype == bool: return a == b
    return np.isclose(a, b, rtol=1e-9, atol=0) | (np.isnan(a) & np.isnan(b))


def _ends(bars: Panel, full: Signals) -> list[int]:
    "Bars to end windows at: just after each session's open, on the half day, at the strategy's signals, and spread."
    lab = session_labels(bars.index)
    reg = np.flatnonzero(lab.code == 1)
    opens = reg[np.r_[True, np.diff(lab.day[reg]) > 0]]              # each session's first regular bar
    half = np.flatnonzero((lab.code >= 0) & (lab.close_minute == 210))
    ev = np.flatnonzero(np.logical_or.reduce([getattr(full, f).to_numpy().any(1) for f in SIGNAL_BOOLS]))
    T = len(bars)
    picks = [*(opens[2:] + k for k in (0, 1, 2, 15)), half[:: max(1, len(half) // 6)], ev[:: max(1, len(ev) // 12)], np.linspace(T // 3, T - 1, 8).astype(int)]
    return sorted({int(t) for t in np.concatenate(picks) if 0 <= t < T})


@pytest.mark.parametrize('case', list(CASES))
def test_last_row_on_a_warmup_window_equals_the_full_history_row(case, bars, full):
    s, f = strategy(case), full[case]
    ends = _ends(bars, f)
    assert len(ends) > 40
    lab = session_labels(bars.index)
    assert any(lab.close_minute[t] == 210 for t in ends)             # the half day is covered
    bad = []
    for t in ends:
        w0 = s.warmup_start(bars, t)
        assert 0 <= w0 <= t
        last, ref = _row(s.signals(bars.map(lambda df: df.iloc[w0:t + 1])), -1), _row(f, t)
        assert last.keys() == ref.keys()
        for k in ref:
            if not _same(last[k], ref[k]).all():
                j = int(np.flatnonzero(~_same(last[k], ref[k]))[0])
                bad.append(f"{bars.index[t]} {bars.symbols[j]} {k}: window from bar {w0} gives {last[k][j]}, full history {ref[k][j]}")
    assert not bad, f"{s.id} (warmup {s.warmup!r}): {len(bad)} differences, first: {bad[:3]}"
    assert sum(bool(getattr(f, k).iloc[t].any()) for t in ends for k in SIGNAL_BOOLS) > 0 or case in ('orb', 'gap_and_go')


@pytest.mark.parametrize('case', list(CASES))
def test_signals_do_not_depend_on_where_the_history_starts(case, bars, full):
    "Cut the head of the history at several bars (session opens among them): every later signal whose warmup window lies inside the kept bars is unchanged."
    s, f = strategy(case), full[case]
    T = len(bars)
    lab = session_labels(bars.index)
    opens = np.flatnonzero((lab.code == 1) & (lab.minute == 0))
    heads = sorted({1, 7, 333, int(opens[0]), int(opens[0]) + 1, int(opens[1]) - 3, T // 5, T // 4 + 11})
    compared = 0
    for h in heads:
        part = s.signals(bars.map(lambda df: df.iloc[h:]))
        for k in (*SIGNAL_BOOLS, *SIGNAL_FLOATS):
            a, b = getattr(part, k), getattr(f, k)
            if (a is None) != (b is None): pytest.fail(f"{s.id}: a history starting at bar {h} {'lacks' if a is None else 'adds'} {k}")
            if a is None: continue
            bad = np.flatnonzero(~_same(a.to_numpy(), b.to_numpy()[h:]).all(1)) + h
            for t in bad[:200]:                                        # a difference is a failure once the warmup lies inside bars h..
                if (w0 := s.warmup_start(bars, int(t))) >= h:
                    c = int(np.flatnonzero(~_same(a.to_numpy()[t - h], b.to_numpy()[t]))[0])
                    pytest.fail(f"{s.id} (warmup {s.warmup!r}): a history starting at bar {h} changes {k} of {bars.symbols[c]} at "
                                f"{bars.index[t]} ({a.to_numpy()[t - h, c]} vs {b.to_numpy()[t, c]} on the full history; its warmup starts at bar {w0})")
        sample = np.linspace(h, T - 1, 25).astype(int)
        compared += sum(s.warmup_start(bars, int(t)) >= h for t in sample)
    assert compared >= 25                                              # the check is not vacuous: many bars are past their warmup
