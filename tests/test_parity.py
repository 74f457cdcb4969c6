"""Engine parity: with the simple fill model the vectorbt and backtrader engines make the same trades (symbol, side, times,
qty, prices) and the same final equity (1e-6 relative) for every library strategy, on a small synthetic minute market.

Each case runs `backtest(..., engine='vectorbt', fill='simple')` and `backtest(..., engine='backtrader', fill='simple')`
with default parameters (shorts on where a strategy has a `short` parameter) and the core notebook's relaxed risk config
(fixed $10,000 per entry). Known differences of the vectorbt engine are marked xfail(strict=True) with their cause, so
the test turns red as soon as one is fixed and the marker can go.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from smallcap.strategy.base import get_strategy, list_strategies

warnings.filterwarnings('ignore')

MEMBERS = {'arbiter': dict(members=('gap_and_go', 'orb', 'vwap_reclaim')),
           'ensemble': dict(members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.5)}

# no known differences: a case the engines disagree on fails (strict xfail markers went when the vectorbt engine's
# conflict rule became position-aware and its cash uncapped)
KNOWN: dict[str, str] = {}


def _strategy(case: str):
    if case == 'sma_cross(fast=5,slow=20)': return get_strategy('sma_cross', fast=5, slow=20, short=True)
    kw = dict(MEMBERS.get(case, {}))
    if 'short' in get_strategy(case, **kw).params(): kw['short'] = True
    return get_strategy(case, **kw)


CASES = [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN[c])) if c in KNOWN else c
         for c in [*list_strategies(), 'sma_cross(fast=5,slow=20)']]


@pytest.fixture(scope='module')
def market():
    from smallcap.data.calendar import session_of
    from smallcap.data.panel import Panel
    from smallcap.data.synth import SynthConfig, generate
    from smallcap.risk import RiskConfig
    mk = generate(SynthConfig(seed=3, n_symbols=6, n_sessions=6, gap_prob=0.3))
    bars = Panel.from_bars(mk.bars[session_of(mk.bars.ts).to_numpy() == 'regular'])
    risk = RiskConfig(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                      max_positions=10, max_gross_pct=10.0, leverage=6.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)
    return bars, risk


@pytest.mark.parametrize('case', CASES)
def test_simple_fills_same_trades_and_equity(case, market):
    from smallcap.backtest.core import backtest
    bars, risk = market
    strat = _strategy(case)
    strat.signals(bars)        # load the strategy's numba kernels outside prepare's pure_calls guard (numba's cache opens files)
    a = backtest(strat, bars, engine='vectorbt', risk=risk, fill='simple')
    b = backtest(strat, bars, engine='backtrader', risk=risk, fill='simple')
    key = ['symbol', 'side', 'entry_time', 'exit_time', 'qty']
    ta, tb = (t.sort_values(['entry_time', 'symbol'], kind='stable').reset_index(drop=True) for t in (a.trades, b.trades))
    m = ta[key + ['entry_price', 'exit_price']].merge(tb[key + ['entry_price', 'exit_price']], on=key, how='outer', indicator=True, suffixes=('_vbt', '_bt'))
    odd = m[m._merge != 'both']
    assert odd.empty, f"{len(odd)} trades differ, first:\n{odd.head(6).to_string()}"
    for c in ('entry_price', 'exit_price'):
        np.testing.assert_allclose(m[f'{c}_bt'], m[f'{c}_vbt'], rtol=1e-6, atol=0, err_msg=c)
    assert abs(a.final_equity - b.final_equity) <= 1e-6 * abs(a.final_equity), (a.final_equity, b.final_equity)
    # the fills themselves agree too (same bars, sizes and prices)
    fa, fb = (f.sort_values(['ts', 'symbol', 'side'], kind='stable').reset_index(drop=True) for f in (a.fills, b.fills))
    assert fa[['ts', 'symbol', 'side', 'qty']].equals(fb[['ts', 'symbol', 'side', 'qty']])
    np.testing.assert_allclose(fb.price, fa.price, rtol=1e-9); np.testing.assert_allclose(fb.fees, fa.fees, rtol=1e-9, atol=1e-12)
    if case != 'gap_and_go': assert len(ta) > 0


def test_every_library_strategy_is_covered():
    assert {'sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go',
            'vwap_reclaim', 'arbiter', 'ensemble'} <= set(list_strategies())
