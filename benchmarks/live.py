"""The live engine (issue 15): replay throughput, decision latency at 5,000 symbols, and restart-to-ready.

1. Replay throughput in symbol-bars per second through the whole engine (the store read by `ReplayFeed`, the rolling
   window, the strategy's signals on its warmup window at every minute, the trading loop, the paper broker and a durable
   journal), against bare backtrader running the same strategy (sma_cross) on the same bars. Target: at least 10x.
2. Latency from a minute's last bar to the orders handed to the broker (`EngineStats.decide_ms`: window, risk inputs,
   signals, decide, orders), 5,000 symbols, each library strategy, p50 and p99. Target: p99 <= 250 ms.
3. Restart-to-ready: a `LiveEngine` on a journal of 100,000 records (its state rebuilt from the journal, then
   reconciled with the broker) until it could send its first order. Target: <= 2 s.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians

LIBRARY = ['sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go', 'vwap_reclaim']


def _throughput(rounds: int, tmp: Path) -> dict:
    from smallcap.backtest.plan import prepare
    from smallcap.data.panel import Panel
    from smallcap.data.synth import SynthConfig, build_store
    from smallcap.live.engine import replay
    from smallcap.live.journal import Journal
    from smallcap.strategy.base import get_strategy
    from benchmarks.backtrader import bare
    st = build_store(tmp / 'st.duckdb', SynthConfig(seed=5, n_symbols=40, start='2025-11-03', n_sessions=3, n_delisted=0, min_splits=0))
    s = get_strategy('sma_cross', short=True)
    bars = Panel.from_bars(st.bars(None, '2025-11-03', '2025-11-06'))
    p = prepare(s, bars, fill='simple')
    n = [0]
    def ours():
        n[0] += 1
        j = Journal(tmp / f"j{n[0]}.sqlite", 'bench', s.id)
        replay(s, st, '2025-11-03', '2025-11-06', journal=j); j.close()
    ours(); bare(p)
    m = medians(rounds, True, ours=ours, bare=lambda: bare(p))
    sb = bars.close.shape[0] * bars.close.shape[1]
    return {'figure': f"replay throughput through the whole engine (feed, window, signals, loop, paper broker, journal), sma_cross, {bars.close.shape[1]} symbols x {len(bars):,} minute bars",
            'seconds': round(m['ours'], 3), 'symbol_bars_per_second': round(sb / m['ours']),
            'reference': 'bare backtrader on the same bars and signals (PandasData feeds, market orders)', 'reference_seconds': round(m['bare'], 3),
            'reference_symbol_bars_per_second': round(sb / m['bare']), 'ratio': round(m['bare'] / m['ours'], 2), 'target_ratio': 10.0, 'better': 'higher', 'rounds': rounds}


def _latency(n_symbols: int = 5000, minutes: int = 40, measured: int = 20) -> Iterator[dict]:
    import datetime as dt
    import numpy as np
    import pandas as pd
    from smallcap.live.engine import LiveEngine
    from smallcap.live.feed import Bar
    from smallcap.risk import RiskConfig
    from smallcap.strategy.base import get_strategy
    rng = np.random.default_rng(0)
    syms = [f"S{i:04d}" for i in range(n_symbols)]
    t0 = pd.Timestamp('2026-03-03 10:00', tz='America/New_York').tz_convert('UTC')
    c = np.round(np.exp(np.log(rng.uniform(1, 20, n_symbols)) + np.cumsum(rng.normal(0, 0.003, (minutes, n_symbols)), 0)), 2).clip(0.01)
    one = dt.timedelta(minutes=1)
    events = [[Bar(s, t, t + one, float(x), float(x) * 1.005, float(x) * 0.995, float(x), 1000, float(x), 10) for s, x in zip(syms, c[k])]
              for k, t in ((k, (t0 + pd.Timedelta(minutes=k)).to_pydatetime()) for k in range(minutes))]
    for name in LIBRARY:
        eng = LiveEngine(get_strategy(name), syms, risk=RiskConfig(min_avg_volume=0, min_avg_dollar_volume=0, max_adv_pct=None), keep=False)
        for k in range(minutes):
            for b in events[k]: eng._bar(b)
            eng._close()
        ms = np.array(eng.stats.decide_ms[-measured:])
        yield {'figure': f"latency from a minute's last bar to its orders handed to the broker, {name}, {n_symbols:,} symbols ({minutes}-minute history, last {measured} minutes)",
               'p50_ms': round(float(np.percentile(ms, 50)), 1), 'p99_ms': round(float(np.percentile(ms, 99)), 1), 'seconds': round(float(np.percentile(ms, 99)) / 1e3, 4),
               'target_seconds': 0.25}


def _restart(tmp: Path, n: int = 100_000) -> dict:
    import pandas as pd
    from smallcap.core import Fill, Intent, Order, OrderType, Side
    from smallcap.execution.broker import EventKind, OrderEvent
    from smallcap.execution.sim import SimBroker
    from smallcap.live.engine import LiveEngine
    from smallcap.live.journal import Journal, record
    from smallcap.strategy.base import get_strategy
    s = get_strategy('sma_cross')
    syms = [f"S{i:03d}" for i in range(200)]
    j = Journal(tmp / 'big.sqlite', 'bench', s.id)
    t = pd.Timestamp('2026-03-03 15:00', tz='UTC')
    rows = []
    for k in range(n // 4):                                            # each order: intent, answer, fill event and its fill (round trips: flat at the end)
        sym, buy = syms[k % len(syms)], (k // len(syms)) % 2 == 0
        ts = t + pd.Timedelta(seconds=k)
        o = Order(s.id, sym, Side.BUY if buy else Side.SELL, 100, ts, Intent.ENTER_LONG if buy else Intent.EXIT_LONG, type=OrderType.MARKET, client_id=f"c{k}")
        f = Fill(o.client_id, sym, o.side, 100, 2.0, ts)
        rows += [('intent', record(o), ts, o.client_id), ('answer', {'op': 'submit', 'status': 'filled', 'filled': 100, 'avg_price': 2.0}, ts, o.client_id),
                 ('event', record(OrderEvent(EventKind.FILLED, o.client_id, ts, f, 100, 0)), ts, o.client_id), ('fill', record(f), ts, o.client_id)]
    j.write(rows)
    j.close()
    def ready():
        jj = Journal(tmp / 'big.sqlite', 'bench', s.id)
        eng = LiveEngine(s, syms, SimBroker(syms), journal=jj, keep=False)
        assert eng.reconciliation is not None
        jj.close()
    t1 = time.perf_counter(); ready(); sec = time.perf_counter() - t1
    return {'figure': f"restart to ready on a journal of {n:,} records ({n // 4:,} orders): state rebuilt from the journal, journal and broker reconciled", 'seconds': round(sec, 3),
            'target_seconds': 2.0}


def run(rounds: int = 3) -> Iterator[dict]:
    "Replay throughput vs bare backtrader, latency at 5,000 symbols per library strategy, restart-to-ready."
    warnings.filterwarnings('ignore')
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        yield _throughput(rounds, tmp)
        yield _restart(tmp)
    yield from _latency()
