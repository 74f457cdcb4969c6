"""The backtrader engine against bare backtrader on the same signals: 20 symbols x ~5,000 minute bars.

Both sides run the same plan (`smallcap.backtest.plan.prepare`: sma_cross with shorts on a synthetic regular-session
minute market; signals, ATR, spreads are computed once, outside the timing):

- ours: `smallcap.backtest.bt.run(plan)`, the whole engine: feeds, the risk module's `decide()` at every busy bar
  (sizing, gates, limits, exits), orders with client ids, the fill rules (traded bars, participation, half-spread
  slippage, exact fees), the risk state updated by every fill, and the fills/orders frames;
- the reference: a bare backtrader strategy a user would write, with `bt.feeds.PandasData` per symbol, stock
  `BackBroker` with its default commission, trading the same precomputed signals with plain market orders
  (close on an exit or opposite signal, enter a fixed notional on an entry), runonce off.

The figure is ours / bare (target <= 1.25). A second figure gives the bare strategy our bulk-preloaded feed too, which
isolates the per-bar overhead of the engine (the risk decision, the order logic); it has no target. Each round times
each side once, alternating; figures are ratios of medians.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from benchmarks import medians


def market(n_symbols: int = 20, n_sessions: int = 13, seed: int = 5):
    "The synthetic market of the plan (also written to a store by the live benchmark, so both read the same bars)."
    from smallcap.data.synth import SynthConfig
    return SynthConfig(seed=seed, n_symbols=n_symbols, n_sessions=n_sessions, gap_prob=0.3)


def plan(n_symbols: int = 20, n_sessions: int = 13, seed: int = 5, bars=None):
    "A simple-fill plan of sma_cross (shorts on) on a synthetic regular-session minute market (~390 bars a session), or on `bars` (a Panel)."
    import pandas as pd
    from smallcap.backtest.plan import prepare
    from smallcap.data.calendar import session_of
    from smallcap.data.panel import Panel
    from smallcap.data.synth import generate
    from smallcap.risk import RiskConfig
    from smallcap.strategy.base import get_strategy
    if bars is None:
        mk = generate(market(n_symbols, n_sessions, seed))
        bars = Panel.from_bars(mk.bars[session_of(mk.bars.ts).to_numpy() == 'regular'])
    n_symbols = bars.close.shape[1]
    risk = RiskConfig(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                      max_positions=n_symbols, max_gross_pct=5.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)
    return prepare(get_strategy('sma_cross', short=True), bars, risk=risk, fill='simple')


def bare(p, fast_feed: bool = False) -> int:
    "Bare backtrader on the plan's signals: PandasData feeds, default broker and commission, market orders; returns the orders sent."
    import backtrader as bt
    import pandas as pd
    s = p.sig
    el, xl, es, xs = s['entries_long'], s['exits_long'], s['entries_short'], s['exits_short']
    any_ = (el | xl | es | xs).any(1)
    close, notional = p.close, p.risk.notional
    sent = [0]

    class Bare(bt.Strategy):
        def next(self):
            k = len(self) - 1
            if not any_[k]: return
            for j in np.flatnonzero(el[k] | xl[k] | es[k] | xs[k]):
                d = self.datas[j]
                pos = self.getposition(d).size
                if (pos > 0 and (xl[k, j] or es[k, j])) or (pos < 0 and (xs[k, j] or el[k, j])):
                    self.close(d); sent[0] += 1; pos = 0
                if pos == 0 and (el[k, j] ^ es[k, j]) and close[k, j] > 0:
                    n = int(notional / close[k, j])
                    (self.buy if el[k, j] else self.sell)(d, size=n); sent[0] += 1

    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=False)
    idx = p.index.tz_convert('UTC').tz_localize(None)
    if fast_feed:
        from smallcap.backtest.bt import _classes
        Feed = _classes().Feed
        dt = np.asarray([bt.date2num(t) for t in idx.to_pydatetime()], float)
    for j, sym in enumerate(p.symbols):
        df = pd.DataFrame({'open': p.open[:, j], 'high': p.high[:, j], 'low': p.low[:, j], 'close': p.close[:, j], 'volume': p.volume[:, j]}, index=idx)
        if fast_feed:
            arrays = dict(datetime=dt, **{c: df[c].to_numpy() for c in df.columns}, openinterest=np.zeros(len(df)))
            cerebro.adddata(Feed(dataname=df, arrays=arrays), name=sym)
        else: cerebro.adddata(bt.feeds.PandasData(dataname=df), name=sym)
    cerebro.broker.setcash(p.cash)
    cerebro.addstrategy(Bare)
    cerebro.run()
    return sent[0]


def run(rounds: int = 3) -> Iterator[dict]:
    "Our backtrader engine vs bare backtrader on the same signals, 20 symbols x ~5,000 minute bars."
    warnings.filterwarnings('ignore')
    from smallcap.backtest.bt import run as bt_run
    p = plan()
    T, N = p.shape
    fills, _, _ = bt_run(p)                                    # warm up (imports, first calls)
    n_bare = bare(p)
    m = medians(rounds, ours=lambda: bt_run(p), bare=lambda: bare(p), fast=lambda: bare(p, fast_feed=True))
    o, b, f = m['ours'], m['bare'], m['fast']
    label = f"{N} symbols x {T:,} minute bars, sma_cross signals"
    yield {'figure': f'backtrader engine (risk module, order logic, exact fills) vs bare backtrader, {label}', 'seconds': round(o, 3),
           'reference': 'bare backtrader: PandasData feeds, default broker and commission, market orders on the same signals',
           'reference_seconds': round(b, 3), 'ratio': round(o / b, 3), 'target_ratio': 1.25, 'rounds': rounds,
           'fills': len(fills), 'bare_orders': n_bare}
    yield {'figure': f'backtrader engine vs bare backtrader given our bulk-preloaded feed (per-bar overhead), {label}', 'seconds': round(o, 3),
           'reference': 'bare backtrader strategy on the engine\'s own feed class', 'reference_seconds': round(f, 3), 'ratio': round(o / f, 3),
           'rounds': rounds}
