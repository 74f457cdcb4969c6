"""The live decision path: every library strategy's signals for a 5,000-symbol panel when one new minute bar arrives.

Live trading recomputes signals on a trailing window of minute bars ending at the new bar, for the whole universe at
once: each strategy on the window its declared warmup asks for (`Strategy.warmup_start`), within the `window` bars
held here (a row per strategy says how many bars it used and whether the panel held all its warmup). The figure is the wall time of all nine library strategies on that window,
target <= 250 ms, plus the risk module's decide() for that bar; the reference is one plain vectorised numpy pass over the same window (a 20-bar moving
average of every symbol), to show the machine's speed in the same run.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

from benchmarks import medians

LIBRARY = ['sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go', 'vwap_reclaim']


def panel(n_symbols: int = 5000, window: int = 400, seed: int = 0):
    "A synthetic minute panel: `window` bars ending mid-session, `n_symbols` symbols, prices on a $0.01 grid."
    import numpy as np, pandas as pd
    from smallcap.data.panel import Panel
    rng = np.random.default_rng(seed)
    end = pd.Timestamp('2026-03-03 11:00', tz='America/New_York').tz_convert('UTC')
    idx = pd.date_range(end=end, periods=window, freq='1min')
    cols = [f"S{i:04d}" for i in range(n_symbols)]
    c = np.round(np.exp(np.log(rng.uniform(1, 20, n_symbols)) + np.cumsum(rng.normal(0, 0.003, (window, n_symbols)), 0)), 2).clip(0.01)
    spread = np.round(np.abs(rng.normal(0, 0.01, (window, n_symbols))), 2)
    f = lambda a: pd.DataFrame(a, index=idx, columns=cols)
    v = rng.integers(0, 50, (window, n_symbols)) * 100.0
    return Panel(f(c), f(c + spread), f((c - spread).clip(0.01)), f(c), f(v), vwap=f(c))


def run(rounds: int = 5, n_symbols: int = 5000, window: int = 400) -> Iterator[dict]:
    "All library strategies on a 5,000-symbol window, against a plain numpy pass."
    import numpy as np, pandas as pd
    from smallcap.strategy.base import get_strategy
    p = panel(n_symbols, window)
    strats = [get_strategy(n) for n in LIBRARY]
    start = {s.name: s.warmup_start(p.index, -1) for s in strats}     # the window each strategy's declared warmup needs (every bar counted)
    own = lambda df: pd.DataFrame(np.ascontiguousarray(df.to_numpy().T).T, index=df.index, columns=df.columns)   # its own (symbols, bars) block, as a live buffer holds it
    win = {s.name: p.between(p.index[start[s.name]]).map(own) for s in strats}
    for s in strats: s.signals(win[s.name])                        # compile kernels, load calendars
    def ours():
        for s in strats: s.signals(win[s.name])
    def plain():
        c = p.close.to_numpy(); cs = np.cumsum(c, 0); (cs[20:] - cs[:-20]) / 20
    m = medians(rounds, ours=ours, plain=plain)
    o, r = m['ours'], m['plain']
    yield {'figure': f'all {len(LIBRARY)} library strategies, {n_symbols:,} symbols, one new minute bar ({window}-bar window)', 'seconds': round(o, 4),
           'reference': 'plain numpy 20-bar moving average of the same panel', 'reference_seconds': round(r, 4), 'ratio': round(o / r, 1),
           'target_seconds': 0.25, 'rounds': rounds}
    from smallcap.risk import RiskConfig, RiskEngine, RiskState, iter_bars
    import dataclasses
    bar = list(iter_bars(p.between(p.index[-2])))[-1]                # the new bar
    bar = dataclasses.replace(bar, entries_long=np.ones(n_symbols, bool))   # every symbol asks to enter: the heaviest decision
    eng, state = RiskEngine(RiskConfig()), RiskState.new(p.symbols, 1_000_000.0)
    eng.decide(state.copy(), bar)
    ts = []
    for _ in range(rounds):
        st = state.copy(); t = time.perf_counter(); eng.decide(st, bar); ts.append(time.perf_counter() - t)
    yield {'figure': f'risk decide() on {n_symbols:,} symbols, every symbol signalling an entry', 'seconds': round(statistics.median(ts), 5), 'rounds': rounds}
    for s in strats:
        ts = []
        for _ in range(rounds):
            t = time.perf_counter(); s.signals(win[s.name]); ts.append(time.perf_counter() - t)
        yield {'figure': f'  {s.name}', 'seconds': round(statistics.median(ts), 4), 'rounds': rounds, 'warmup': str(s.warmup),
               'window_bars': len(win[s.name]), 'warmup_held': start[s.name] > 0}
