"""The live engine (issue 15): replay throughput, decision latency at 5,000 symbols, and restart-to-ready.

What each figure measures:

1. **Replay throughput**, in symbol-bars per second (bars the store holds for the range, the same count on both
   sides), through the whole engine: `smallcap.live.engine.replay` reads the store with `ReplayFeed`, folds each bar
   into the rolling `BarWindow`, computes the strategy's signals on its warmup window at every minute, steps the
   `TradingLoop` (risk decision, orders) and the `SimBroker`, and writes every decision, intent, answer, event, fill
   and snapshot to a durable `Journal` (WAL, `synchronous=FULL`). The paper broker is in the engine's process, so the
   journal is group-committed once a second and at the stop (a crash loses the broker's book with the engine; with a
   broker in another process every record is committed before the next step, which `journal` measures). The feed
   hands the engine runs of events as arrays (`Batch`), and sma_cross steps its averages bar by bar (`stepper`).
   The reference is bare backtrader (`benchmarks.backtrader.bare`) on the plan of the same strategy (sma_cross with
   shorts, `benchmarks.backtrader.plan`: the same risk configuration) built from the very bars the store replays,
   the same symbols; its signals are precomputed outside the timing (which favours it). Both sides fill an order in
   one piece (the engine's paper broker runs without the participation cap, as backtrader's broker fills).
   `seconds` is the engine's run (`EngineStats.seconds`: the feed read and every minute decided, journalled and
   committed); `replay_seconds` is all of `replay()`, which also assembles the result in the backtest schema
   (`replay_ratio`). Measured at 20, 400 and 2,000 symbols: the engine's cost per minute is shared by the symbols,
   backtrader's grows with each one. Target: at least 10x the reference's symbol-bars per second.
2. **Decision latency**: from a minute's last bar to its orders handed to the broker (`EngineStats.decide_ms`: the
   window append, the risk inputs, the paper market, the signals on the warmup window, the decision, the orders), with
   5,000 symbols in the window, for each library strategy and both combinators, p50 and p99 over the measured
   minutes. The window is first filled with as much history as the strategy's warmup asks (whole sessions for the
   day-based ones) without deciding, then the measured minutes go through the engine bar by bar.
   Target: p99 <= 250 ms.
3. **Durable journal events per second** is `benchmarks/journal.py` (run `python -m benchmarks live journal`).
4. **Restart-to-ready**: a `LiveEngine` constructed on a journal of 100,000 records (its risk state rebuilt from the
   journal, then journal and broker reconciled) until it could send its first order. The journal is one the engine
   could have written: 25,000 filled orders (intent, answer, event, fill each), flat at the end, a snapshot every 30
   minutes and none at the end (as after a kill -9). Target: <= 2 s. A second figure, without a target, has no
   snapshot at all (every fill replayed).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians

LIBRARY = ['sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go', 'vwap_reclaim']


def _throughput(rounds: int, tmp: Path, n_symbols: int = 20, n_sessions: int = 3) -> dict:
    import pandas as pd
    from smallcap.data.panel import Panel
    from smallcap.data.synth import build_store
    from smallcap.execution.costs import Costs
    from smallcap.live.engine import replay
    from smallcap.live.journal import Journal
    from benchmarks.backtrader import bare, market, plan
    st = build_store(tmp / 'st.duckdb', market(n_symbols, n_sessions))
    rows = st.bars()
    start, end = rows.ts.min(), rows.ts.max() + pd.Timedelta(minutes=1)
    p = plan(bars=Panel.from_bars(rows))                                  # the same bars, symbols, strategy and risk on both sides
    costs = dataclasses.replace(Costs(), participation=None)              # orders fill in one piece, as backtrader's broker fills them
    n = [0]
    def ours():
        n[0] += 1
        j = Journal(tmp / f"j{n[0]}.sqlite", 'bench', p.strategy.id)
        assert j.con.execute('PRAGMA synchronous').fetchone()[0] == 2 and j.con.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
        r = replay(p.strategy, st, start, end, risk=p.risk, costs=costs, cash=p.cash, journal=j)
        j.close()
        assert r.engine.stats.bars == p.shape[0], (r.engine.stats.bars, p.shape)
        out[0] = r; engine_s.append(r.engine.stats.seconds)
    out, engine_s = [None], []
    ours(); n_bare = bare(p)                                              # warm up (imports, first calls)
    engine_s.clear()
    m = medians(rounds, True, ours=ours, bare=lambda: bare(p))
    e = sorted(engine_s)[len(engine_s) // 2]                              # the engine's run (`EngineStats.seconds`) in the median round
    sb = len(rows)
    T, N = p.shape
    return {'figure': f"replay throughput through the whole engine (feed, window, signals, loop, paper broker, durable journal), sma_cross, {N} symbols x {T:,} minutes ({sb:,} bars)",
            'seconds': round(e, 3), 'symbol_bars_per_second': round(sb / e),
            'replay_seconds': round(m['ours'], 3), 'replay_note': "all of `replay()`: also the store's range query, the feed's checks, and the result in the backtest schema assembled by the backtest's code (the full-history signals it compares with, the quoted spreads from the store)",
            'reference': 'bare backtrader on the same bars and signals (PandasData feeds, market orders)', 'reference_seconds': round(m['bare'], 3),
            'reference_symbol_bars_per_second': round(sb / m['bare']), 'ratio': round(m['bare'] / e, 3), 'replay_ratio': round(m['bare'] / m['ours'], 3),
            'target_ratio': 10.0, 'better': 'higher',
            'rounds': rounds, 'orders': len(out[0].engine.loop.orders.sent), 'fills': len(out[0].engine.loop.orders.fills), 'bare_orders': n_bare}


def _history(n_symbols: int, days: int, seed: int = 0):
    "A synthetic regular-session minute history of `days` sessions for `n_symbols` symbols: bar times (UTC ns) and closes (minutes, symbols)."
    import numpy as np
    import pandas as pd
    from smallcap.data.calendar import trading_sessions
    s = trading_sessions('2026-02-01', '2026-03-31').tail(days)
    t = np.concatenate([np.arange(pd.Timestamp(o).value, pd.Timestamp(c).value, 60_000_000_000, dtype=np.int64) for o, c in zip(s.open, s.close)])
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.002, (len(t), n_symbols))
    first = np.r_[True, np.diff(t) > 60_000_000_000]                      # a session's first bar: sometimes a gap
    r[first] += rng.normal(0, 0.04, (first.sum(), n_symbols)) * (rng.random((first.sum(), n_symbols)) < 0.2)
    c = np.round(np.exp(np.log(rng.uniform(1, 20, n_symbols)) + np.cumsum(r, 0)), 2).clip(0.01)
    return t, c


def _warm(eng, t, c, rng) -> None:
    "Fill the engine's window and risk inputs with history bars, deciding nothing (as if it had run through them)."
    import numpy as np
    import pandas as pd
    for k in range(len(t)):
        x = c[k]
        bar = {'open': x, 'high': x * 1.002, 'low': x * 0.998, 'close': x, 'volume': rng.integers(500, 5000, len(x)).astype(float), 'vwap': x, 'trades': np.full(len(x), 10.0)}
        eng.window.append(int(t[k]), bar)
        eng.inputs.update(pd.Timestamp(int(t[k]), tz='UTC'), bar['high'], bar['low'], x, bar['volume'])
        eng._last = x
        if eng.stepper is not None: eng.stepper.step(bar)                  # a strategy's incremental path sees the history too
    start = eng.window.dropped + eng.strategy.warmup_start(eng.window.panel(), -1, all_symbols=True)
    eng.window.forget(start)


def _latency(n_symbols: int = 5000, measured: int = 12) -> Iterator[dict]:
    import datetime as dt
    import numpy as np
    from smallcap.live.engine import LiveEngine
    from smallcap.live.feed import Bar
    from smallcap.risk import RiskConfig
    from smallcap.strategy.base import get_strategy
    from smallcap.strategy.combine import Arbiter, Ensemble
    strategies = {n: get_strategy(n) for n in LIBRARY}
    strategies['arbiter(sma_cross, rsi_reversion)'] = Arbiter(members=('sma_cross', 'rsi_reversion'))
    strategies['ensemble(sma_cross, bollinger_reversion, dual_momentum)'] = Ensemble(members=('sma_cross', 'bollinger_reversion', 'dual_momentum'))
    t, c = _history(n_symbols, 7)
    syms = [f"S{i:04d}" for i in range(n_symbols)]
    last = np.flatnonzero(np.r_[True, np.diff(t) > 60_000_000_000])[-1]  # the last session's first bar
    m0 = last + 60                                                          # measure from 10:30 New York time: opening ranges done, gap holds running
    one = dt.timedelta(minutes=1)
    import pandas as pd
    stamps = [pd.Timestamp(int(x), tz='UTC').to_pydatetime() for x in t[m0:m0 + measured + 1]]
    events = [[Bar(s, ts, ts + one, float(x), float(x) * 1.002, float(x) * 0.998, float(x), 1000, float(x), 10) for s, x in zip(syms, c[m0 + k])]
              for k, ts in enumerate(stamps)]
    for name, s in strategies.items():
        eng = LiveEngine(s, syms, risk=RiskConfig(min_avg_volume=0, min_avg_dollar_volume=0, max_adv_pct=None), keep=False, capacity=4096)
        need = s.warmup_bars(pd.DatetimeIndex(t[:m0].view('datetime64[ns]')).tz_localize('UTC'))
        h0 = max(0, m0 - need - 30)                                        # the warmup, and a half hour more for the risk inputs
        _warm(eng, t[h0:m0], c[h0:m0], np.random.default_rng(1))
        for k in range(measured + 1):                                      # the first minute is not counted (first calls)
            for b in events[k]: eng._bar(b)
            eng._close()
        ms = np.array(eng.stats.decide_ms[1:])
        yield {'figure': f"latency from a minute's last bar to its orders handed to the broker, {name}, {n_symbols:,} symbols, {'incremental (its stepper)' if eng.stepper is not None else f'{len(eng.window):,}-bar window'} ({m0 - h0:,} minutes of history), {measured} minutes measured",
               'p50_ms': round(float(np.percentile(ms, 50)), 1), 'p99_ms': round(float(np.percentile(ms, 99)), 1), 'seconds': round(float(np.percentile(ms, 99)) / 1e3, 4),
               'target_seconds': 0.25, 'orders': len(eng.loop.orders.sent)}
        del eng


def _restart(tmp: Path, n: int = 100_000, snapshots: bool = True) -> dict:
    import pandas as pd
    from smallcap.core import Fill, Intent, Order, OrderType, Side
    from smallcap.execution.broker import EventKind, OrderEvent
    from smallcap.execution.sim import SimBroker
    from smallcap.live.engine import LiveEngine
    from smallcap.live.journal import Journal, record
    from smallcap.risk import RiskState
    from smallcap.strategy.base import get_strategy
    s = get_strategy('sma_cross')
    syms = [f"S{i:03d}" for i in range(250)]                           # 100 blocks of 250 orders for 100,000 records: buys, then sells (flat at the end)
    path = tmp / f"big{int(snapshots)}.sqlite"
    j = Journal(path, 'bench', s.id)
    t = pd.Timestamp('2026-03-03 15:00', tz='UTC')
    state, rows, fills, every = RiskState.new(syms, 100_000.0), [], [], 1800          # one order a second: a snapshot every 30 minutes, as the engine writes them
    for k in range(n // 4):                                            # each order: intent, answer, fill event and its fill (round trips: flat at the end)
        sym, buy = syms[k % len(syms)], (k // len(syms)) % 2 == 0
        ts = t + pd.Timedelta(seconds=k)
        o = Order(s.id, sym, Side.BUY if buy else Side.SELL, 100, ts, Intent.ENTER_LONG if buy else Intent.EXIT_LONG, type=OrderType.MARKET, client_id=f"c{k}")
        f = Fill(o.client_id, sym, o.side, 100, 2.0, ts)
        rows += [('intent', record(o), ts, o.client_id), ('answer', {'op': 'submit', 'status': 'filled', 'filled': 100, 'avg_price': 2.0}, ts, o.client_id),
                 ('event', record(OrderEvent(EventKind.FILLED, o.client_id, ts, f, 100, 0)), ts, o.client_id), ('fill', record(f), ts, o.client_id)]
        fills.append(f)
        if snapshots and (k + 1) % every == 0:                         # the last one up to 30 minutes before the end (a kill -9, not a clean stop)
            j.write(rows); state.apply_fills(fills); j.snapshot(state, ts); rows, fills = [], []
    j.write(rows)
    j.close()
    def ready():
        jj = Journal(path, 'bench', s.id)
        eng = LiveEngine(s, syms, SimBroker(syms), journal=jj, keep=False)
        assert eng.reconciliation is not None and not eng.reconciliation.halted
        jj.close()
    t1 = time.perf_counter(); ready(); sec = time.perf_counter() - t1
    how = (f"a snapshot every 30 minutes as the engine writes them, the fills after the last one ({(n // 4) % every:,}) replayed" if snapshots
           else "no snapshot: every fill replayed (worst case)")
    return {'figure': f"restart to ready on a journal of {n:,} records ({n // 4:,} orders; {how}): state rebuilt from the journal, journal and broker reconciled",
            'seconds': round(sec, 3), **({'target_seconds': 2.0} if snapshots else {})}


def run(rounds: int = 3) -> Iterator[dict]:
    "Replay throughput vs bare backtrader, latency at 5,000 symbols per library strategy and combinator, restart-to-ready."
    warnings.filterwarnings('ignore')
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        yield _throughput(rounds, tmp)
        for n in (400, 2000):                                                # a scanner's universe, a whole small-cap universe: the engine's cost per minute is shared by many symbols
            (tmp / f'w{n}').mkdir()
            yield _throughput(1, tmp / f'w{n}', n_symbols=n, n_sessions=1)
        yield _restart(tmp)
        yield _restart(tmp, snapshots=False)
    yield from _latency()
