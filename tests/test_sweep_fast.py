"""The compiled sweep path (`smallcap.backtest.nb.sweep_nb`) against the vectorbt path and single backtests: same table, same trades."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.execution.costs import Costs
from smallcap.backtest.core import backtest
from smallcap.backtest.sweep import sweep
from smallcap.core import ConfigError
from smallcap.data.calendar import session_of
from smallcap.data.panel import Panel
from smallcap.risk import RiskConfig
from smallcap.strategy.base import Signals, Strategy, get_strategy, param

RISK = RiskConfig(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                  max_positions=10, max_gross_pct=5.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)
NO_STOPS = RISK.update(stop_pct=None, target_r=None)


@pytest.fixture(scope='module')
def bars():
    from smallcap.data.synth import SynthConfig, generate
    mk = generate(SynthConfig(seed=3, n_symbols=6, n_sessions=6, gap_prob=0.3))
    return Panel.from_bars(mk.bars[session_of(mk.bars.ts).to_numpy() == 'regular'])


@pytest.fixture(scope='module')
def gap_bars():
    "Extended-hours bars with the planted gap-and-go edge (premarket volume), so gap_and_go trades."
    from smallcap.data.synth import SynthConfig, generate
    mk = generate(SynthConfig(seed=3, n_symbols=8, n_sessions=8, edge='gap_and_go'))
    return Panel.from_bars(mk.bars.drop(columns='timeframe'))


def assert_tables_close(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-9):
    "Same columns, dtypes, parameters, trade counts and ids; statistics equal to `rtol` relative (NaN where NaN)."
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        x, y = a[c], b[c]
        assert x.dtype == y.dtype, (c, x.dtype, y.dtype)
        if x.dtype.kind == 'f':
            xv, yv = x.to_numpy(), y.to_numpy()
            np.testing.assert_array_equal(np.isnan(xv), np.isnan(yv), err_msg=c)
            np.testing.assert_allclose(xv[~np.isnan(xv)], yv[~np.isnan(yv)], rtol=rtol, atol=1e-12, err_msg=c)
        else: assert (x.to_numpy() == y.to_numpy()).all(), c


CASES = [
    ('sma_cross', {'fast': [3, 5, 10], 'slow': [20, 40], 'short': [False]}, Costs(participation=None), 'simple', RISK),
    ('sma_cross', {'fast': [3, 5, 10], 'slow': [20, 40], 'short': [True]}, Costs(participation=None), 'simple', RISK),
    ('sma_cross', {'fast': [3, 5], 'slow': [20, 40], 'short': [True]}, Costs.none(), 'simple', RISK),
    ('sma_cross', {'fast': [3, 5], 'slow': [20, 40], 'short': [True]}, Costs(participation=None, borrow_rate=2.0), 'simple', RISK),
    ('sma_cross', {'fast': [3, 5], 'slow': [20, 40], 'short': [True]}, Costs(participation=None), 'realistic', NO_STOPS),
    ('rsi_reversion', {'length': [7, 14], 'lower': [20.0, 30.0], 'short': [True]}, Costs(participation=None), 'simple', RISK),
    ('orb', {'minutes': [5, 15], 'exit_minute': [60, 120]}, Costs(participation=None), 'simple', RISK),
    ('bollinger_reversion', {'length': [10, 20], 'short': [True]}, Costs(slippage='bps', slippage_bps=5, participation=None), 'simple', RISK),
]


@pytest.mark.parametrize('name,grid,costs,fill,risk', CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_compiled_table_equals_vectorbt_path(bars, name, grid, costs, fill, risk):
    fast = sweep(name, bars, grid, costs=costs, risk=risk, fill=fill, equity=True, chunk=3)
    slow = sweep(name, bars, grid, costs=costs, risk=risk, fill=fill, equity=True, compiled=False)
    assert fast.inputs['path'] == 'compiled' and slow.inputs['path'] == 'vectorbt'
    assert fast.table.trades.sum() > 0
    assert_tables_close(fast.table, slow.table)
    pd.testing.assert_index_equal(fast.equity.columns, slow.equity.columns)
    np.testing.assert_allclose(fast.equity.to_numpy(), slow.equity.to_numpy(), rtol=1e-10, atol=1e-6)  # dollars: cash sums in another order differ by ~1e-10 where equity crosses zero


def test_session_strategy_gap_and_go(gap_bars):
    grid = {'gap_min': [0.02, 0.05], 'rvol_min': [1.0, 2.0], 'hold': [30, 60]}
    risk = RISK.update(sessions=('regular',))
    fast = sweep('gap_and_go', gap_bars, grid, costs=Costs(participation=None), risk=risk, fill='simple')
    slow = sweep('gap_and_go', gap_bars, grid, costs=Costs(participation=None), risk=risk, fill='simple', compiled=False)
    assert fast.inputs['path'] == 'compiled' and fast.table.trades.sum() > 0
    assert_tables_close(fast.table, slow.table)


@pytest.mark.parametrize('costs', [Costs(participation=None), Costs.none(), Costs(participation=None, borrow_rate=1.0)], ids=['default', 'none', 'borrow'])
def test_compiled_rows_equal_single_backtests(bars, costs):
    grid = {'fast': [3, 10], 'slow': [20, 40], 'short': [True]}
    sw = sweep('sma_cross', bars, grid, costs=costs, risk=RISK, fill='simple')
    assert sw.inputs['path'] == 'compiled'
    for _, row in sw.table.iterrows():
        r = backtest(get_strategy('sma_cross', fast=int(row.fast), slow=int(row.slow), short=True), bars, engine='vectorbt', costs=costs, risk=RISK, fill='simple')
        assert row.trades == len(r.trades)
        assert row.final_equity == pytest.approx(r.final_equity, rel=1e-12)
        for k in ('total_return', 'cagr', 'sharpe', 'sortino', 'max_drawdown', 'win_rate', 'profit_factor', 'expectancy', 'exposure'):
            a, b = row[k], r.stats[k]
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), k


def test_what_takes_the_vectorbt_path(bars):
    grid = {'fast': [3, 5], 'slow': [20]}
    # realistic fills with the default stops, a participation cap, keep_results: the vectorbt path, with the reason
    s1 = sweep('sma_cross', bars, grid, risk=RISK, fill='realistic')
    assert s1.inputs['path'] == 'vectorbt' and 'stops' in s1.inputs['why_vectorbt']
    s2 = sweep('sma_cross', bars, grid, costs=Costs(), risk=NO_STOPS, fill='realistic')
    assert s2.inputs['path'] == 'vectorbt' and 'participation' in s2.inputs['why_vectorbt']
    s3 = sweep('sma_cross', bars, grid, risk=RISK, fill='simple', keep_results=True)
    assert s3.inputs['path'] == 'vectorbt' and len(s3.results) == 2
    with pytest.raises(ConfigError, match='compiled sweep path cannot'):
        sweep('sma_cross', bars, grid, risk=RISK, fill='realistic', compiled=True)
    # realistic fills of a strategy with stop signals: those combinations alone go through vectorbt, the table is the same
    g = {'minutes': [5, 15], 'exit_minute': [60, 120]}
    a = sweep('orb', bars, g, costs=Costs(participation=None), risk=NO_STOPS, fill='realistic')
    b = sweep('orb', bars, g, costs=Costs(participation=None), risk=NO_STOPS, fill='realistic', compiled=False)
    assert a.inputs['path'] == 'compiled' and a.inputs['vectorbt_combinations'] == 4
    assert_tables_close(a.table, b.table)


@dataclass(frozen=True)
class RandomSignals(Strategy):
    "Random entries and exits of both sides (a fixed seed per configuration): every conflict and reversal the engine can meet."
    name: ClassVar[str] = '_random_signals'
    seed: int = param(0, grid=[0, 1])
    density: float = param(0.02, grid=[0.02])
    sized: bool = param(False, grid=[False])

    def signals(self, bars):
        rng = np.random.default_rng(self.seed)
        m = lambda: pd.DataFrame(rng.random(bars.close.shape) < self.density, index=bars.index, columns=bars.close.columns)
        kw = dict(entries_long=m(), exits_long=m(), entries_short=m(), exits_short=m())
        if self.sized: kw['size'] = bars.close * 0 + 0.05
        return Signals.from_frames(bars.close, **kw)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=3, unique=True), density=st.sampled_from([0.005, 0.03, 0.15]),
       borrow=st.sampled_from([0.0, 0.05, 3.0]), eod=st.booleans())
def test_random_signals(bars, seeds, density, borrow, eod):
    costs, risk = Costs(participation=None, borrow_rate=borrow), RISK.update(eod_flatten=eod)
    grid = {'seed': seeds, 'density': [density]}
    fast = sweep(RandomSignals, bars, grid, costs=costs, risk=risk, fill='simple', equity=True)
    slow = sweep(RandomSignals, bars, grid, costs=costs, risk=risk, fill='simple', equity=True, compiled=False)
    assert fast.inputs['path'] == 'compiled'
    assert_tables_close(fast.table, slow.table)
    np.testing.assert_allclose(fast.equity.to_numpy(), slow.equity.to_numpy(), rtol=1e-10, atol=1e-6)  # dollars: cash sums in another order differ by ~1e-10 where equity crosses zero


def test_sized_signals_go_through_vectorbt(bars):
    grid = {'seed': [4, 5], 'sized': [True, False]}
    fast = sweep(RandomSignals, bars, grid, costs=Costs(participation=None), risk=RISK, fill='simple')
    slow = sweep(RandomSignals, bars, grid, costs=Costs(participation=None), risk=RISK, fill='simple', compiled=False)
    assert fast.inputs['vectorbt_combinations'] == 2
    assert_tables_close(fast.table, slow.table)
