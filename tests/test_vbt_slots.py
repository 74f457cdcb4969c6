"""The vectorbt engine enforces `max_positions` (issue 13, E1: "no engine exceeds max_positions").

Positions are read from the result (`res.positions`, built by `assemble` from the fills), not from the counter inside the
simulation, so a wrong count shows. Where max_positions does not bind, the grouped simulation that counts positions gives
the same fills as the per-symbol simulation it replaces; where it binds, and the other limits the vectorbt engine does not
enforce are off, its fills are the event engine's."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.backtest.core import backtest, prepare, run_plan, screening_limits
from smallcap.data.calendar import session_of
from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, generate
from smallcap.risk import RiskConfig
from smallcap.strategy.base import get_strategy

warnings.filterwarnings('ignore')
# only max_positions can bind: fixed notional sizing, no cooldown, no daily loss, gross and margin far away
FREE = RiskConfig(sizing='fixed_notional', notional=5_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                  max_positions=8, max_gross_pct=10.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=1000.0)
NO_CAP = {'participation': None}
_MARKETS: dict[int, Panel] = {}


def market(seed: int) -> Panel:
    "8 symbols x 4 regular sessions of minute bars, some bars missing (halts: no trade)."
    if seed not in _MARKETS:
        mk = generate(SynthConfig(seed=seed, n_symbols=8, n_sessions=4, gap_prob=0.3))
        _MARKETS[seed] = Panel.from_bars(mk.bars[session_of(mk.bars.ts).to_numpy() == 'regular'])
    return _MARKETS[seed]


def peak_open(res) -> int:
    return int((res.positions.to_numpy() != 0).sum(1).max(initial=0))


def peak_slots(res) -> int:
    "Slots in use at the peak: positions open at a bar's start or at its end (an exit filling in the bar still held its slot when the bar's entries were decided)."
    pos = res.positions.to_numpy() != 0
    return int((pos | np.vstack([np.zeros((1, pos.shape[1]), bool), pos[:-1]])).sum(1).max(initial=0))


def fills(res) -> pd.DataFrame:
    return res.fills[['ts', 'symbol', 'side', 'qty', 'price', 'intent']].sort_values(['ts', 'symbol', 'intent']).reset_index(drop=True)


STRATS = [('sma_cross', dict(fast=5, slow=20, short=True)), ('sma_cross', dict(fast=3, slow=10, short=True)), ('rsi_reversion', {})]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(1, 4), k=st.integers(1, 5), strat=st.sampled_from(STRATS), fill=st.sampled_from(['simple', 'realistic']),
       stops=st.sampled_from([dict(), dict(stop_pct=None, target_r=None), dict(trail_pct=0.01)]), cap=st.booleans())
def test_never_more_positions_than_max_positions(seed, k, strat, fill, stops, cap):
    "Any market, strategy, fill model, stops and participation cap: the vectorbt engine never holds more than max_positions, and its count never missed."
    risk = FREE.update(max_positions=k, **stops)
    res = backtest(get_strategy(strat[0], **strat[1]), market(seed), engine='vectorbt', risk=risk, fill=fill, costs=None if cap else NO_CAP)
    assert peak_open(res) <= peak_slots(res) <= k, (peak_open(res), peak_slots(res), k, res.notes)
    assert not any('missed' in n or 'max_positions' in b for n in res.notes for b in res.inputs['approximate']), res.notes
    assert not any('max_positions' in b for b in res.inputs['approximate'])


@pytest.mark.parametrize('fill, risk', [('simple', FREE), ('realistic', FREE), ('realistic', FREE.update(trail_pct=0.01))])
@pytest.mark.parametrize('seed, strat', [(1, ('sma_cross', dict(fast=5, slow=20))), (2, ('vwap_reclaim', {})), (1, ('orb', {}))])
def test_unchanged_where_max_positions_does_not_bind(seed, strat, fill, risk):
    "max_positions at the peak the unlimited run reached: the grouped, counting simulation gives exactly the per-symbol simulation's fills and orders."
    s = get_strategy(strat[0], **strat[1])
    free = backtest(s, market(seed), engine='vectorbt', risk=risk, fill=fill)       # max_positions=8 = the symbols: the per-symbol path
    k = peak_slots(free)
    assert 1 < k < 8
    tight = backtest(s, market(seed), engine='vectorbt', risk=risk.update(max_positions=k), fill=fill)
    pd.testing.assert_frame_equal(tight.fills, free.fills)
    pd.testing.assert_frame_equal(tight.orders, free.orders)
    assert tight.final_equity == free.final_equity
    once_less = backtest(s, market(seed), engine='vectorbt', risk=risk.update(max_positions=k - 1), fill=fill)
    assert peak_slots(once_less) == k - 1 and len(once_less.fills) != len(free.fills)     # and one slot less binds


@pytest.mark.parametrize('fill', ['simple', 'realistic'])
@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('seed', [1, 3])
def test_same_fills_as_the_event_engine_where_max_positions_binds(seed, k, fill):
    "max_positions binds and every other limit is off (no stops, no participation cap): the event engine's fills, and the same entries rejected for max_positions."
    s = get_strategy('sma_cross', fast=5, slow=20, short=True)
    risk = FREE.update(max_positions=k, stop_pct=None, target_r=None)
    vb, ev = (backtest(s, market(seed), engine=e, risk=risk, fill=fill, costs=NO_CAP) for e in ('vectorbt', 'event'))
    assert peak_slots(ev) == k and peak_slots(vb) == k
    pd.testing.assert_frame_equal(fills(vb), fills(ev), check_dtype=False, check_exact=False, rtol=1e-9)
    np.testing.assert_allclose(vb.final_equity, ev.final_equity, rtol=1e-9)
    rej = lambda r: set(map(tuple, r.orders.loc[r.orders.reason.str.contains('rejected_max_positions'), ['ts', 'symbol']].astype(str).to_numpy()))
    assert rej(vb) == rej(ev) and rej(vb)


def test_stops_checked_from_the_bar_after_the_entry_are_the_one_difference():
    "With stops (vectorbt checks them from the bar after the entry, the event engine from the entry bar): both hold max_positions, trades differ."
    s = get_strategy('sma_cross', fast=5, slow=20, short=True)
    vb, ev = (backtest(s, market(3), engine=e, risk=FREE.update(max_positions=2), fill='realistic', costs=NO_CAP) for e in ('vectorbt', 'event'))
    assert peak_open(vb) <= 2 and peak_open(ev) <= 2
    assert any('from the bar after the entry' in n for n in vb.notes)


def test_a_miss_of_the_count_is_reported(monkeypatch):
    "The counter predicts each position after a bar; if vectorbt did something else (here: stops made to reverse), the result says so."
    import smallcap.backtest.vbt as m
    monkeypatch.setattr(m, '_FIXED', {**m._FIXED, 'upon_stop_exit': 'reverse'})
    res = backtest(get_strategy('sma_cross', fast=5, slow=20, short=True), market(1), engine='vectorbt', risk=FREE.update(max_positions=2, stop_pct=0.002),
                   fill='realistic', costs=NO_CAP)
    assert any('missed' in n for n in res.notes), res.notes


def test_screening_limits_no_longer_name_max_positions():
    "max_positions is enforced; the limits the vectorbt path still does not enforce are still named (and the gate refuses the engine)."
    risk = FREE.update(max_positions=2, cooldown_minutes=5, max_daily_loss_pct=0.01, max_gross_pct=1.0)
    assert screening_limits(risk, 8) == ['gross exposure', 'daily loss limit', 'cooldown_minutes=5.0']


def test_sweep_respects_max_positions():
    "A sweep where max_positions can bind runs the vectorbt path (the compiled one does not count positions): each row is the vectorbt engine's backtest."
    from smallcap.backtest.sweep import sweep
    risk = FREE.update(max_positions=2)
    sw = sweep('sma_cross', market(2), {'fast': [3, 5], 'slow': [20], 'short': [True]}, risk=risk, fill='simple', keep_results=False)
    assert sw.inputs['path'] == 'vectorbt' and 'max_positions=2' in sw.inputs['why_vectorbt']
    for j in range(len(sw.table)):
        one = backtest(get_strategy('sma_cross', fast=int(sw.table.fast[j]), slow=20, short=True), market(2), engine='vectorbt', risk=risk, fill='simple')
        assert peak_open(one) <= 2
        np.testing.assert_allclose(sw.table.final_equity[j], one.final_equity, rtol=1e-9)
    assert sweep('sma_cross', market(2), {'fast': [3, 5], 'slow': [20], 'short': [True]}, risk=FREE, fill='simple').inputs['path'] == 'compiled'
