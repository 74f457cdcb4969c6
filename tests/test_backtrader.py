"""The backtrader engine (smallcap.backtest.bt): order types, partial fills, halts, fees, timing and the shared risk limits.

Hand-made bars give numbers that can be checked by hand; a hypothesis test runs random signals on random bars and checks
the invariants every run must keep (no fill in the bar of its decision, fills only in traded bars, no position flipped
by one execution, exits never larger than the position, fees exactly `Costs.fees`).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smallcap.backtest.bt import run
from smallcap.execution.costs import Costs
from smallcap.backtest.plan import prepare
from smallcap.backtest.result import assemble, trades_from_fills
from smallcap.data.panel import Panel
from smallcap.risk import RiskConfig
from smallcap.strategy.base import Signals

warnings.filterwarnings('ignore')

T0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')         # 09:30 New York
X = RiskConfig(sizing='fixed_notional', notional=1_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
               max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0, stop_pct=0.05, target_r=2.0, max_positions=50,
               max_gross_pct=10.0, leverage=4.0)
C = Costs(slippage='bps', slippage_bps=10, participation=None)
FLAT = (10.0, 10.1, 9.9, 10.0, 1e4)
ENTRY_KINDS = ('enter_long', 'enter_short', 'exit_long', 'exit_short', 'flatten')


def panel(ohlcv: dict, start: pd.Timestamp = T0, days: int | None = None) -> Panel:
    "{symbol: [(open, high, low, close, volume) or None]} -> Panel, one bar a minute (bars from `days` on the next day)."
    n = len(next(iter(ohlcv.values())))
    idx = pd.date_range(start, periods=n, freq='1min', tz='UTC')
    if days: idx = idx[:days].append(pd.date_range(start + pd.Timedelta(days=1), periods=n - days, freq='1min', tz='UTC'))
    f = {k: pd.DataFrame({s: [np.nan if b is None else b[i] for b in bs] for s, bs in ohlcv.items()}, index=idx) for i, k in enumerate('ohlcv')}
    f['v'] = f['v'].fillna(0.0)
    return Panel(f['o'], f['h'], f['l'], f['c'], f['v'])


def sig(p: Panel, **frames) -> Signals:
    "Signals from {field: {symbol: {bar: value}}}."
    out = {}
    for k, d in frames.items():
        fl = k in ('limit', 'stop', 'size')
        df = pd.DataFrame(np.nan if fl else False, index=p.index, columns=p.close.columns)
        for sym, at in d.items():
            for i, v in at.items(): df.iloc[i, df.columns.get_loc(sym)] = v
        out[k] = df
    return Signals.from_frames(p.close, **out)


def go(p, s, risk=X, costs=C, fill='realistic', cash=100_000.0):
    pl = prepare(s, p, costs=costs, risk=risk, fill=fill, cash=cash)
    f, o, n = run(pl)
    return pl, f, o, n


# ---- order types ------------------------------------------------------------------------------------------------

def test_limit_entry_that_never_fills_expires_at_the_session_end():
    p = panel({'AAA': [FLAT] * 6}, days=4)
    pl, f, o, n = go(p, sig(p, entries_long={'AAA': {0: True}}, limit={'AAA': {0: 9.0}}))
    assert f.empty
    assert o[['type', 'status', 'limit']].values.tolist() == [['limit', 'expired', 9.0]]
    assert any('expired at the end of their session' in x for x in n)


def test_limit_entry_fills_at_the_limit_or_the_better_open():
    p = panel({'AAA': [FLAT, FLAT, (9.5, 9.6, 8.9, 9.2, 1e4), FLAT]})
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}, limit={'AAA': {0: 9.0}}))
    assert f.ts.iloc[0] == p.index[2] and f.price.iloc[0] == pytest.approx(9.0 * 1.001, rel=1e-12)
    p = panel({'AAA': [FLAT, FLAT, (8.8, 9.6, 8.7, 9.2, 1e4), FLAT]})      # opens below the limit: the open
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}, limit={'AAA': {0: 9.0}}))
    assert f.price.iloc[0] == pytest.approx(8.8 * 1.001, rel=1e-12)


def test_bracket_stop_gapped_through_fills_at_the_open():
    p = panel({'AAA': [FLAT, FLAT, (10.0, 10.1, 9.8, 9.9, 1e4), (9.0, 9.2, 8.9, 9.1, 1e4), FLAT]})
    pl, f, o, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f[['ts', 'side', 'qty', 'intent', 'reason']].values.tolist() == [
        [p.index[1], 'buy', 100, 'enter_long', 'approved'], [p.index[3], 'sell', 100, 'stop_loss', 'exit_stop']]
    assert f.price.tolist() == pytest.approx([10.0 * 1.001, 9.0 * 0.999], rel=1e-12)
    assert o.set_index('type').status.to_dict() == {'market': 'filled', 'stop': 'filled', 'limit': 'canceled'}
    assert o.set_index('type').loc['stop', 'stop'] == 9.5 and o.set_index('type').loc['limit', 'target'] == 11.0


def test_bracket_stop_inside_the_bar_fills_at_the_stop_and_short_mirror():
    p = panel({'AAA': [FLAT, FLAT, (9.8, 9.9, 9.4, 9.6, 1e4), FLAT]})
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.price.iloc[1] == pytest.approx(9.5 * 0.999, rel=1e-12) and f.ts.iloc[1] == p.index[2]
    p = panel({'AAA': [FLAT, FLAT, (10.2, 10.6, 10.1, 10.4, 1e4), FLAT]})      # short: stop 10.50 above
    _, f, _, _ = go(p, sig(p, entries_short={'AAA': {0: True}}))
    assert f.side.tolist() == ['sell', 'buy'] and f.price.iloc[1] == pytest.approx(10.5 * 1.001, rel=1e-12)


def test_stop_is_checked_in_the_entry_bar():
    p = panel({'AAA': [FLAT, (10.0, 10.1, 9.3, 9.4, 1e4), FLAT]})             # the entry bar itself trades through the stop
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.ts.tolist() == [p.index[1], p.index[1]] and f.intent.tolist() == ['enter_long', 'stop_loss']


def test_target_hit():
    p = panel({'AAA': [FLAT, FLAT, (10.5, 11.2, 10.4, 11.1, 1e4), FLAT]})
    _, f, o, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.intent.tolist() == ['enter_long', 'take_profit'] and f.reason.iloc[1] == 'exit_target'
    assert f.price.iloc[1] == pytest.approx(11.0 * 0.999, rel=1e-12)
    p = panel({'AAA': [FLAT, FLAT, (11.5, 11.6, 11.3, 11.4, 1e4), FLAT]})      # gapped above the target: the better open
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.price.iloc[1] == pytest.approx(11.5 * 0.999, rel=1e-12)


def test_bar_touching_stop_and_target_is_a_stop():
    p = panel({'AAA': [FLAT, FLAT, (10.0, 11.5, 9.0, 10.0, 1e4), FLAT]})
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.intent.tolist() == ['enter_long', 'stop_loss']


def test_trailing_stop():
    p = panel({'AAA': [FLAT, (10.0, 10.5, 9.9, 10.4, 1e4), (10.4, 11.0, 10.3, 10.9, 1e4), (10.8, 10.9, 10.3, 10.4, 1e4), FLAT]})
    _, f, o, _ = go(p, sig(p, entries_long={'AAA': {0: True}}), risk=X.update(stop_pct=0.2, target_r=None, trail_pct=0.05))
    assert f.reason.tolist() == ['approved', 'exit_trailing'] and f.ts.iloc[1] == p.index[3]
    assert f.price.iloc[1] == pytest.approx(11.0 * 0.95 * 0.999, rel=1e-12)
    assert o.type.tolist() == ['market', 'trailing_stop']


# ---- partial fills and halts ------------------------------------------------------------------------------------

def test_participation_cap_partial_fill_completes_in_later_bars():
    vols = [500, 300, 0, 400, 500, 500]
    p = panel({'AAA': [(10.0, 10.1, 9.9, 10.0, v) if v else None for v in vols]})
    pl, f, o, n = go(p, sig(p, entries_long={'AAA': {0: True}}), costs=dataclasses.replace(C, participation=0.1))
    assert f.qty.tolist() == [30, 40, 30] and f.ts.tolist() == [p.index[1], p.index[3], p.index[4]]   # 10% of 300, 400, then the rest
    assert f.order_id.nunique() == 1 and o.loc[o.type == 'market', 'status'].item() == 'filled'
    assert any('filled in parts' in x for x in n)
    per = pl.costs.fees(f.qty, f.price, f.side == 'sell').sum(axis=1)
    assert np.array_equal(f.fees.to_numpy(), per.to_numpy())                    # fees per execution


def test_no_fill_in_a_bar_without_a_trade():
    p = panel({'AAA': [FLAT, None, None, FLAT, FLAT]})
    for fill in ('simple', 'realistic'):
        pl, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}), fill=fill)
        assert f.ts.tolist()[:1] == [p.index[3]], fill
        assert pl.traded[pl.index.get_indexer(f.ts), 0].all()


def test_resting_stop_waits_for_a_traded_bar():
    p = panel({'AAA': [FLAT, FLAT, None, (9.2, 9.3, 9.1, 9.2, 1e4), FLAT]})
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}))
    assert f.ts.iloc[1] == p.index[3] and f.price.iloc[1] == pytest.approx(9.2 * 0.999, rel=1e-12)


def test_one_exit_however_often_it_is_asked_for():
    p = panel({'AAA': [FLAT, FLAT, None, None, None, FLAT, FLAT]})
    _, f, o, _ = go(p, sig(p, entries_long={'AAA': {0: True}}, exits_long={'AAA': {2: True, 3: True, 4: True}}), fill='simple')
    assert f[['ts', 'side', 'qty']].values.tolist() == [[p.index[1], 'buy', 100], [p.index[5], 'sell', 100]]


def test_reversal_is_exit_then_entry():
    p = panel({'AAA': [FLAT] * 5})
    _, f, _, _ = go(p, sig(p, entries_long={'AAA': {0: True}}, entries_short={'AAA': {2: True}}), fill='simple')
    assert f[['ts', 'side', 'qty', 'intent']].values.tolist() == [[p.index[1], 'buy', 100, 'enter_long'], [p.index[3], 'sell', 100, 'exit_long'],
                                                               [p.index[3], 'sell', 100, 'enter_short']]


# ---- fees -------------------------------------------------------------------------------------------------------

def test_fees_are_exactly_costs_fees():
    from smallcap.data.synth import SynthConfig, generate
    from smallcap.strategy.base import get_strategy
    bars = Panel.from_bars(generate(SynthConfig(seed=1, n_symbols=4, n_sessions=2)).bars.drop(columns='timeframe'))
    strat = get_strategy('sma_cross', fast=5, slow=20, short=True); strat.signals(bars)
    pl = prepare(strat, bars, risk=X.update(notional=5_000), costs=Costs())
    f, o, n = run(pl)
    assert len(f) > 20 and (f.side == 'sell').any()
    parts = Costs().fees(f.qty, f.price, f.side == 'sell')
    assert np.array_equal(f.fees.to_numpy(), parts.sum(axis=1).to_numpy())
    assert (parts.sec_fee[f.side == 'buy'] == 0).all() and (parts.taf[f.side == 'buy'] == 0).all()
    r, c = pl.index.get_indexer(f.ts), pd.Index(pl.symbols).get_indexer(f.symbol)
    unslipped = np.where(f.side == 'buy', f.price / (1 + pl.half_spread[r, c]), f.price / (1 - pl.half_spread[r, c]))
    np.testing.assert_allclose(f.slippage, f.qty * np.abs(f.price - unslipped), rtol=1e-9)
    res = assemble(pl, f, 'backtrader', o, n)
    assert res.costs['commission'] == pytest.approx(parts.commission.sum())


# ---- timing: a property over random signals ---------------------------------------------------------------------

@st.composite
def market_and_signals(draw):
    n_sym, n_bars = draw(st.integers(1, 3)), draw(st.integers(6, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    c = np.round(np.exp(np.log(5) + np.cumsum(rng.normal(0, 0.01, (n_bars, n_sym)), 0)), 2)
    o = np.round(c * (1 + rng.normal(0, 0.005, c.shape)), 2)
    h, l = np.maximum(o, c) + 0.02, np.minimum(o, c) - 0.02
    v = rng.integers(50, 2000, c.shape).astype(float)
    gone = rng.random(c.shape) < draw(st.sampled_from([0.0, 0.2, 0.5]))
    cols = [f'S{i}' for i in range(n_sym)]
    idx = pd.date_range(T0, periods=n_bars, freq='1min', tz='UTC')
    fr = lambda a: pd.DataFrame(np.where(gone, np.nan, a), index=idx, columns=cols)
    p = Panel(fr(o), fr(h), fr(l), fr(c), pd.DataFrame(np.where(gone, 0.0, v), index=idx, columns=cols))
    b = lambda q: pd.DataFrame(rng.random(c.shape) < q, index=idx, columns=cols)
    q = draw(st.sampled_from([0.05, 0.2, 0.5]))
    s = Signals.from_frames(p.close, entries_long=b(q), exits_long=b(q), entries_short=b(q), exits_short=b(q))
    fill = draw(st.sampled_from(['simple', 'realistic']))
    part = draw(st.sampled_from([None, 0.1, 0.5]))
    return p, s, fill, part


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_and_signals())
def test_a_signal_at_bar_t_never_fills_at_bar_t(case):
    p, s, fill, part = case
    pl = prepare(s, p, costs=dataclasses.replace(Costs(), participation=part), risk=X.update(notional=2_000), fill=fill)
    f, o, n = run(pl)
    if f.empty: return
    r, c = pl.index.get_indexer(f.ts), pd.Index(pl.symbols).get_indexer(f.symbol)
    assert (r >= 1).all() and pl.traded[r, c].all()                           # fills only in traded bars, never in bar 0
    decided = o.drop_duplicates('order_id').set_index('order_id').ts
    m = f.intent.isin(ENTRY_KINDS).to_numpy()
    assert (f.ts[m].to_numpy() > decided.loc[f.order_id[m]].to_numpy()).all()  # after the bar whose decision sent the order
    trades_from_fills(f, pl.index)                                            # never flips a position in one execution
    sq = np.where(f.side == 'buy', 1, -1) * f.qty
    pos = pd.Series(sq.to_numpy()).groupby(f.symbol.to_numpy()).cumsum().to_numpy()
    before = pos - sq.to_numpy()
    closing = ~f.intent.str.startswith('enter').to_numpy()
    assert (np.abs(sq.to_numpy()[closing]) <= np.abs(before[closing])).all()   # an exit never exceeds the position
    assert np.array_equal(f.fees.to_numpy(), pl.costs.fees(f.qty, f.price, f.side == 'sell').sum(axis=1).to_numpy())


# ---- risk limits hold in the engine ------------------------------------------------------------------------------

def _random_market(n_sym=8, n_bars=120, seed=0, constant=False):
    rng = np.random.default_rng(seed)
    c = np.full((n_bars, n_sym), 5.0) if constant else np.round(np.exp(np.log(5) + np.cumsum(rng.normal(0, 0.01, (n_bars, n_sym)), 0)), 2)
    cols = [f'S{i}' for i in range(n_sym)]
    idx = pd.date_range(T0, periods=n_bars, freq='1min', tz='UTC')
    fr = lambda a: pd.DataFrame(a, index=idx, columns=cols)
    p = Panel(fr(c), fr(c + 0.01), fr(c - 0.01), fr(c), fr(np.full(c.shape, 1e5)))
    b = lambda q: pd.DataFrame(rng.random(c.shape) < q, index=idx, columns=cols)
    return p, Signals.from_frames(p.close, entries_long=b(0.05), exits_long=b(0.03), entries_short=b(0.05), exits_short=b(0.03))


def test_max_positions_holds():
    p, s = _random_market()
    pl, f, o, n = go(p, s, risk=X.update(max_positions=3, stop_pct=None, target_r=None, eod_flatten=False), fill='simple')
    res = assemble(pl, f, 'backtrader', o, n)
    assert len(f) > 10
    assert (res.positions != 0).sum(axis=1).max() <= 3
    assert (o.reason.str.contains('rejected_max_positions')).any()


def test_gross_exposure_holds():
    p, s = _random_market(constant=True)
    pl, f, o, n = go(p, s, risk=X.update(notional=10_000, max_gross_pct=0.25, stop_pct=None, target_r=None, eod_flatten=False), costs=Costs.none(),
                     fill='simple')
    res = assemble(pl, f, 'backtrader', o, n)
    gross = (res.positions.abs() * 5.0).sum(axis=1)
    assert gross.max() <= 0.25 * 100_000 + 1e-6 and gross.max() >= 0.2 * 100_000
    assert o.reason.str.contains('gross_exposure').any()


def test_max_positions_and_gross_on_simultaneous_signals():
    p = panel({s: [FLAT] * 4 for s in 'ABCDE'})
    s5 = sig(p, entries_long={s: {0: True} for s in 'ABCDE'})
    _, f, o, _ = go(p, s5, risk=X.update(max_positions=2), fill='simple')
    assert f.symbol.tolist() == ['A', 'B'] and set(o[o.status == 'rejected'].reason) == {'rejected_max_positions'}
    _, f, o, _ = go(p, s5, risk=X.update(notional=10_000, max_gross_pct=0.25), fill='simple')
    assert f.qty.tolist() == [1000, 1000, 500]


# ---- the skipped bars are exact ----------------------------------------------------------------------------------

@pytest.mark.parametrize('fill', ['simple', 'realistic'])
def test_skipping_quiet_bars_changes_nothing(fill, monkeypatch):
    import smallcap.backtest.bt as B
    from smallcap.strategy.base import get_strategy
    p, _ = _random_market(n_sym=4, n_bars=400, seed=3)
    for strat in (get_strategy('rsi_reversion', short=True), get_strategy('sma_cross', fast=5, slow=20, short=True)):
        strat.signals(p)        # load numba kernels outside prepare's pure_calls guard (numba's cache opens files)
        pl = prepare(strat, p, risk=X.update(stop_pct=None, target_r=None) if fill == 'simple' else X, fill=fill)
        monkeypatch.setattr(B, '_SKIP', True); a = run(pl)
        monkeypatch.setattr(B, '_SKIP', False); b = run(pl)
        assert a[0].equals(b[0]) and a[1].equals(b[1]) and a[2] == b[2]
