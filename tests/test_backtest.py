"""The backtest core and the vectorbt engine: timing, costs, halts, SSR, result bookkeeping, sweeps, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import functools

from smallcap.execution.costs import Costs
from smallcap.backtest.plan import next_traded, prepare
from smallcap.backtest.result import BacktestResult
from smallcap.backtest.core import run_plan
from smallcap.backtest.core import backtest as _backtest
from smallcap.core import ConfigError, DataError
from smallcap.data.calendar import session_of
from smallcap.data.panel import Panel
from smallcap.risk import RiskConfig
from smallcap.strategy.base import Signals, get_strategy

RISK = RiskConfig(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                  max_positions=10, max_gross_pct=5.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)


backtest = functools.partial(_backtest, engine='vectorbt')   # these tests are of the vectorbt screening engine


@pytest.fixture(scope='module')
def market():
    from smallcap.data.synth import SynthConfig, generate
    return generate(SynthConfig(seed=5, n_symbols=5, n_sessions=4, gap_prob=0.3))


@pytest.fixture(scope='module')
def bars(market):
    b = market.bars
    return Panel.from_bars(b[session_of(b.ts).to_numpy() == 'regular'])


def _rows(plan, fills):
    return plan.index.get_indexer(pd.DatetimeIndex(fills.ts)), pd.Index(plan.symbols).get_indexer(fills.symbol)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), p=st.floats(0.002, 0.05))
def test_signal_never_fills_in_its_own_bar(bars, seed, p):
    rng = np.random.default_rng(seed)
    like = bars.close
    f = lambda: pd.DataFrame(rng.random(like.shape) < p, index=like.index, columns=like.columns)
    sig = Signals.from_frames(like, entries_long=f(), exits_long=f(), entries_short=f(), exits_short=f())
    plan = prepare(sig, bars, risk=RISK, fill='simple')
    res = run_plan(plan, 'vectorbt')
    assert len(res.fills)
    r, c = _rows(plan, res.fills)
    assert plan.traded[r, c].all()                                   # only where the symbol traded
    nxt = next_traded(plan.traded)
    s = plan.sig
    ent = res.fills.intent.isin(['enter_long', 'enter_short']).to_numpy()
    want = {(int(nxt[t, j]), j) for t, j in zip(*np.nonzero(s['entries_long'] | s['entries_short']))}
    assert all((int(a), int(b)) in want for a, b in zip(r[ent], c[ent]))   # each entry fill is the next traded bar after an entry signal
    assert (r >= 1).all()


def test_fees_and_slippage_exact(bars):
    res = backtest(get_strategy('sma_cross', fast=5, slow=20, short=True), bars, risk=RISK)
    f = res.fills
    fees = Costs().fees(f.qty, f.price, f.side == 'sell').sum(axis=1).to_numpy()
    np.testing.assert_allclose(f.fees.to_numpy(), fees, rtol=0, atol=1e-12)
    assert (f.slippage > 0).all() and (f.fees > 0).all()
    # the end-of-day flatten leaves nothing open, and trades' P&L are exact cash flows
    assert (res.positions.iloc[-1] == 0).all()
    np.testing.assert_allclose(res.final_equity, 100_000 + res.trades.pnl.sum() - res.costs.borrow, rtol=1e-12)


def test_costs_move_the_result(bars):
    s = get_strategy('sma_cross', fast=5, slow=20)
    free = backtest(s, bars, costs=Costs.none(), risk=RISK, fill='simple')
    paid = backtest(s, bars, risk=RISK, fill='simple')
    assert len(free.trades) == len(paid.trades) > 0
    assert paid.final_equity < free.final_equity
    assert free.costs.total == 0


def test_halted_bars_never_fill(bars):
    plan = prepare(get_strategy('sma_cross', fast=3, slow=10), bars, risk=RISK)
    res = backtest(get_strategy('sma_cross', fast=3, slow=10), bars, risk=RISK)
    r, c = _rows(plan, res.fills)
    assert plan.traded[r, c].all() and (~plan.traded).any()


def test_unenforced_limits_are_reported(bars):
    "max_positions is enforced (no note, not approximate, entries rejected for it); a limit the engine does not enforce that binds is still reported."
    res = backtest(get_strategy('sma_cross', fast=3, slow=10), bars, risk=RISK.update(max_positions=1))
    assert not any('max_positions=1 NOT enforced' in n for n in res.notes) and res.inputs['approximate'] == []
    assert (res.positions.to_numpy() != 0).sum(1).max() <= 1 and res.orders.reason.str.contains('rejected_max_positions').any()
    res = backtest(get_strategy('sma_cross', fast=3, slow=10), bars, risk=RISK.update(max_positions=1, cooldown_minutes=30))
    assert any('cooldown_minutes=30.0 NOT enforced' in n for n in res.notes) and res.inputs['approximate'] == ['cooldown_minutes=30.0']


def test_save_load_roundtrip(bars, tmp_path):
    res = backtest(get_strategy('rsi_reversion'), bars, risk=RISK)
    back = BacktestResult.load(res.save(tmp_path / 'r'))
    assert back.final_equity == res.final_equity
    pd.testing.assert_frame_equal(back.trades, res.trades)
    assert back.inputs == res.inputs
    assert not (tmp_path / 'r' / '.partial').exists()


def test_bad_input(bars):
    s = get_strategy('sma_cross')
    with pytest.raises(ConfigError, match='cash'): backtest(s, bars, cash=-1)
    with pytest.raises(ConfigError, match='engine'): backtest(s, bars, engine='zipline')
    with pytest.raises(ConfigError, match='fixed_risk'): backtest(s, bars, risk=RiskConfig(), fill='simple')
    with pytest.raises(ConfigError, match='Costs has no fields'): backtest(s, bars, costs={'comission': 1})
    sig = get_strategy('sma_cross').signals(bars.select(bars.symbols[:2]))
    with pytest.raises(DataError, match='not aligned'): backtest(sig, bars)


def test_ssr_blocks_short_entries(bars):
    like = bars.close
    ent = pd.DataFrame(False, index=like.index, columns=like.columns); ent.iloc[50:60, 0] = True
    sig = Signals.from_frames(like, entries_short=ent)
    plan = prepare(sig, bars, risk=RISK)
    plan.ssr[:, 0] = True
    res = run_plan(plan, 'vectorbt')
    assert (res.fills.intent != 'enter_short').all()
    assert res.orders.reason.str.contains('rejected_ssr').all()


def test_quoted_spread_from_store(tmp_path):
    from smallcap.data.synth import SynthConfig, build_store
    from smallcap.data.store import TickStore
    from smallcap.execution.costs import quoted_half_spread
    st_ = build_store(tmp_path / 's.duckdb', SynthConfig(seed=1, n_symbols=3, n_sessions=2))
    b = Panel.from_bars(st_.bars(None, None, None, timeframe='1min', session='regular'))
    q = quoted_half_spread(st_, b)
    assert q.notna().mean().mean() > 0.5 and (q.stack().dropna() >= 0).all() and q.stack().dropna().median() > 0
    plan = prepare(get_strategy('sma_cross'), b, risk=RISK, store=st_)
    ok = np.isfinite(q.to_numpy())
    np.testing.assert_allclose(plan.half_spread[ok], q.to_numpy()[ok])
    assert plan.meta['synthetic'] is True


def test_sweep_matches_single_backtests(bars):
    from smallcap.backtest.sweep import sweep
    sw = sweep('rsi_reversion', bars, {'length': [7, 14], 'lower': [20.0, 30.0]}, risk=RISK, chunk=3, keep_results=True)
    assert len(sw.table) == 4
    for k in range(4):
        one = backtest(get_strategy('rsi_reversion', length=int(sw.table.length[k]), lower=float(sw.table.lower[k])), bars, risk=RISK)
        pd.testing.assert_frame_equal(one.trades, sw.results[k].trades)
        assert one.final_equity == pytest.approx(sw.table.final_equity[k], rel=1e-12)
