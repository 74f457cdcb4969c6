"""Properties of the real trading loop (`TradingLoop` + `OrderManager` + `SimBroker`, through the event engine) on random markets.

Hypothesis draws a small minute market over two New York sessions with halts (bars without a trade, in which nothing may
fill), thin bars (the participation cap leaves orders partly filled), gaps, and random signals including limit entries
that may never be reached, under a random risk configuration with stops, targets, trailing stops, daily loss limits,
cooldowns and gross caps. Exits therefore miss bars (halted, limit not reached, partial fills). After the run, checked
from the broker's own book and the engine's records, independently of the risk state:

1. at no bar do open positions exceed `max_positions`;
2. nothing fills in a bar in which the symbol did not trade;
3. no fill is counted twice: every order's fills sum to at most its shares, every fill belongs to one order sent, and the
   broker's positions and cash equal the risk state's and the result's;
4. a closing order never reverses a position, and a symbol never has two working market exits;
5. after the first bar of a New York day at which the day's loss reached its limit (the risk state's `day_halted`),
   no position grows for the rest of that day;
6. every order's client id is unique and deterministic: the same run twice gives the same ids.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.risk import RiskConfig


def _market(n_sym: int, seed: int, halt_p: float, thin_p: float):
    "Two sessions of regular-hours minute bars (the last 40 minutes of one day, the first 40 of the next), as a Panel."
    from smallcap.data.panel import Panel
    rng = np.random.default_rng(seed)
    d1 = pd.date_range('2026-03-02 20:20', periods=40, freq='1min', tz='UTC')
    d2 = pd.date_range('2026-03-03 14:30', periods=40, freq='1min', tz='UTC')
    idx = d1.append(d2)
    T = len(idx)
    cols = [f'S{j}' for j in range(n_sym)]
    r = rng.normal(0, 0.01, (T, n_sym)) + np.where(rng.random((T, n_sym)) < 0.05, rng.normal(0, 0.08, (T, n_sym)), 0)
    r[40] += rng.normal(0, 0.08, n_sym)                                    # the overnight gap
    c = 5 * np.exp(np.cumsum(r, 0))
    o = np.vstack([c[:1], c[:-1]]) * np.exp(rng.normal(0, 0.003, (T, n_sym)))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.02, (T, n_sym))); l = np.minimum(o, c) * (1 - rng.uniform(0, 0.02, (T, n_sym)))
    v = np.where(rng.random((T, n_sym)) < thin_p, rng.integers(100, 2_000, (T, n_sym)), rng.integers(20_000, 200_000, (T, n_sym))).astype(float)
    gone = rng.random((T, n_sym)) < halt_p
    gone[0] = False
    fr = lambda a: pd.DataFrame(np.where(gone, np.nan, a), index=idx, columns=cols)
    return Panel(fr(o), fr(h), fr(l), fr(c), pd.DataFrame(np.where(gone, 0.0, v), index=idx, columns=cols)), rng


def _signals(bars, rng, limit_p: float):
    from smallcap.strategy.base import Signals
    T, N = bars.close.shape
    b = lambda p: pd.DataFrame(rng.random((T, N)) < p, index=bars.index, columns=bars.close.columns)
    lim = pd.DataFrame(np.where(rng.random((T, N)) < limit_p, bars.close.to_numpy() * rng.uniform(0.97, 1.0, (T, N)), np.nan),
                       index=bars.index, columns=bars.close.columns)
    return Signals(b(0.15), b(0.08), b(0.10), b(0.08), limit=lim)


CFG = dict(
    sizing=st.sampled_from(['fixed_fraction', 'fixed_notional']), fraction=st.sampled_from([0.1, 0.4]), notional=st.sampled_from([3_000.0, 30_000.0]),
    max_positions=st.integers(1, 3), max_gross_pct=st.sampled_from([0.3, 1.0]), max_daily_loss_pct=st.sampled_from([None, 0.002, 0.01]),
    cooldown_minutes=st.sampled_from([0.0, 3.0]), stop_pct=st.sampled_from([None, 0.02]), target_r=st.sampled_from([None, 2.0]),
    trail_pct=st.sampled_from([None, 0.03]), max_bars_held=st.sampled_from([None, 6]), flatten_on_daily_loss=st.booleans(),
    leverage=st.sampled_from([1.0, 4.0]), eod_minutes=st.sampled_from([0.0, 5.0]))


@st.composite
def scenarios(draw):
    kw = {k: draw(v) for k, v in CFG.items()}
    cfg = RiskConfig(max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0, min_price=0.1, max_price=1_000.0, **kw)
    return (cfg, draw(st.integers(1, 5)), draw(st.integers(0, 2**31 - 1)), draw(st.sampled_from([0.0, 0.1, 0.3])),
            draw(st.sampled_from([0.0, 0.3])), draw(st.sampled_from([0.0, 0.5])), draw(st.sampled_from(['simple', 'realistic'])))


def _run(scn):
    from smallcap.execution.costs import Costs
    from smallcap.backtest.plan import prepare
    from smallcap.backtest.core import run_plan
    from smallcap.backtest import event
    cfg, n, seed, halt_p, thin_p, limit_p, fill = scn
    if fill == 'simple' and cfg.sizing == 'fixed_risk': fill = 'realistic'
    bars, rng = _market(n, seed, halt_p, thin_p)
    sig = _signals(bars, rng, limit_p)
    plan = prepare(sig, bars, costs=Costs(participation=0.1), risk=cfg, fill=fill)
    seen = {}
    orig = event.TradingLoop.step

    def step(self, bar):                                            # record the risk state's day halt at every decided bar
        out = orig(self, bar)
        seen[bar.time] = (self.state.day_halted, self.state.qty.copy(), self.broker.qty.copy(), self.state.cash, self.broker.cash)
        return out
    event.TradingLoop.step = step
    try: res = run_plan(plan, 'event')
    finally: event.TradingLoop.step = orig
    return plan, res, seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_no_sequence_of_prices_fills_and_events_breaks_a_limit_or_counts_a_fill_twice(scn):
    _check(scn[0], *_run(scn))


def test_the_property_can_fail():
    "The same checks catch an engine that allows more positions than the configuration being checked."
    cfg = RiskConfig(sizing='fixed_fraction', fraction=0.1, max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                     min_price=0.1, max_price=1_000.0, max_positions=5, max_daily_loss_pct=None, cooldown_minutes=0.0, max_gross_pct=2.0)
    plan, res, seen = _run((cfg, 5, 1, 0.0, 0.0, 0.0, 'simple'))
    with pytest.raises(AssertionError, match='open positions'): _check(cfg.update(max_positions=1), plan, res, seen)


def _check(cfg, plan, res, seen):
    pos = res.positions.to_numpy()
    # 1. open positions
    n_open = (pos != 0).sum(1)
    assert n_open.max(initial=0) <= cfg.max_positions, f"{int(n_open.max())} open positions > max_positions={cfg.max_positions}"
    f = res.fills
    if len(f):
        # 2. no fill in an untraded bar
        k = plan.index.get_indexer(pd.DatetimeIndex(f.ts)); j = pd.Index(plan.symbols).get_indexer(f.symbol)
        assert plan.traded[k, j].all(), f"a fill in a bar without a trade: {f[~plan.traded[k, j]].head(3).to_string()}"
        # 3. each order's fills sum to at most its shares; each fill belongs to one order sent
        o = res.orders[res.orders.order_id != '']
        assert o.order_id.is_unique, "an order id was sent twice"
        got = f.groupby('order_id').qty.sum()
        sent = o.set_index('order_id')
        assert set(got.index) <= set(sent.index), "a fill of an order never sent"
        assert (got <= sent.qty.reindex(got.index)).all() or (got <= sent.requested.reindex(got.index)).all(), "an order filled beyond its shares"
        assert (got == sent.filled.reindex(got.index)).all(), "the broker's filled shares differ from the fills"
        # 4. a closing fill never reverses a position
        sq = np.where(f.side == 'buy', 1, -1) * f.qty.to_numpy()
        closing = ~f.intent.isin(['enter_long', 'enter_short']).to_numpy()
        for s in np.unique(f.symbol):
            m = (f.symbol == s).to_numpy()
            after = np.cumsum(sq[m]); before = after - sq[m]
            assert not np.any(closing[m] & (np.sign(before) * np.sign(after) < 0)), f"{s}: a closing order reversed the position"
            assert not np.any(closing[m] & (before == 0)), f"{s}: a closing order opened a position"
    # 3'. the broker's book is the risk state's, bar after bar, and the result's at the end
    for t, (halted, q_state, q_broker, c_state, c_broker) in seen.items():
        assert np.array_equal(q_state, q_broker), f"{t}: risk state shares {q_state} != broker {q_broker}"
        assert abs(c_state - c_broker) <= 1e-6 * max(1.0, abs(c_broker)), f"{t}: cash {c_state} != {c_broker}"
    # 5. after the day is halted no position grows that day
    days = plan.index.tz_convert('America/New_York').normalize()
    halted_at = {}
    for t, v in seen.items():
        d = t.tz_convert('America/New_York').normalize()
        if v[0] and d not in halted_at: halted_at[d] = t
    for d, t in halted_at.items():
        rows = np.flatnonzero((days == d) & (plan.index > t))
        if len(rows) == 0: continue
        a = np.abs(pos[np.r_[rows[0] - 1, rows]])
        assert (np.diff(a, axis=0) <= 0).all(), f"a position grew after the daily loss halt of {d.date()} at {t}"


def test_the_property_exercises_halts_partial_fills_and_missed_exits():
    "The scenarios are not vacuous: exits that miss bars, partial fills, limit entries never reached, daily halts and binding slot limits occur."
    from smallcap.risk import RiskConfig
    cfg = RiskConfig(sizing='fixed_fraction', fraction=0.4, max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                     min_price=0.1, max_price=1_000.0, max_positions=2, max_daily_loss_pct=0.002, stop_pct=0.02, target_r=2.0, cooldown_minutes=0.0)
    tot = dict(partial=0, unfilled_entries=0, rejected_max_positions=0, rejected_daily_loss=0, waited=0)
    for seed in range(4):
        plan, res, seen = _run((cfg, 5, seed, 0.3, 0.3, 0.5, 'realistic'))
        o = res.orders
        tot['partial'] += int(((o.filled > 0) & (o.filled < o.qty)).sum())
        tot['unfilled_entries'] += int((o.intent.isin(['enter_long', 'enter_short']) & o.status.isin(['expired', 'canceled']) & (o.filled < o.qty)).sum())
        tot['rejected_max_positions'] += int(o.reason.astype(str).str.contains('rejected_max_positions').sum())
        tot['rejected_daily_loss'] += int(o.reason.astype(str).str.contains('rejected_daily_loss').sum())
        ex = o[(o.type == 'market') & ~o.intent.isin(['enter_long', 'enter_short'])]
        f = res.fills.groupby('order_id').ts.min()
        tot['waited'] += int((pd.DatetimeIndex(f.reindex(ex.order_id).dropna()) > pd.DatetimeIndex(ex.ts[ex.order_id.isin(f.index)]) + pd.Timedelta('1min')).sum())
    assert all(v > 0 for v in tot.values()), tot


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(), st.integers(0, 79))
def test_a_restart_anywhere_gives_the_same_fills_with_the_same_ids(scn, k):
    "A process restart after any bar (state through its JSON snapshot, working orders adopted from the broker) never loses, doubles or renames an order."
    from smallcap.execution.costs import Costs
    from smallcap.backtest.plan import prepare
    from smallcap.backtest.event import run
    cfg, n, seed, halt_p, thin_p, limit_p, fill = scn
    bars, rng = _market(n, seed, halt_p, thin_p)
    plan = prepare(_signals(bars, rng, limit_p), bars, costs=Costs(participation=0.1), risk=cfg, fill=fill)
    a, oa, _ = run(plan)
    b, ob, _ = run(plan, restart_after=k)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(oa, ob)
