"""ta(): five pandas-ta-only indicators (no native kernel) on a 1,000 x 1,000 panel, against pandas-ta called once per
symbol (talib=False) and the results put side by side (pd.concat: a panel, as ta() returns), the way a researcher would
otherwise run them: the ratio is per-symbol seconds / ta() seconds (a speed-up; target >= 1, i.e. no slower).

cci, willr and aroon are measured stackable (one pandas-ta call on all symbols laid end to end gives the per-symbol
values); cci and aroon also run their rolling windows with pandas' numba engine (NUMBA_WINDOWS: same values to 1e-11).
mfi and psar are not stackable (their state crosses the gap between symbols) and run per symbol inside ta(), so their
ratio shows ta()'s overhead over bare per-symbol calls: about 1, since pandas-ta's own work is the same.
supertrend has had a native kernel since issue 21 (pandas-ta's recurrence on every symbol at once), so it is reported
apart, against the same per-symbol reference, and not counted in the five. Every result is checked equal before timing.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import numpy as np

INDICATORS = ('cci', 'willr', 'aroon', 'mfi', 'psar')
NATIVE = ('supertrend',)   # once pandas-ta-only; reported apart


def _panel(T: int = 1000, m: int = 1000, seed: int = 0):
    "A random-walk OHLCV panel on a $0.01 grid, one-minute bars."
    import pandas as pd
    from smallcap.data.panel import Panel
    rng = np.random.default_rng(seed)
    c = np.round(5 * np.exp(np.cumsum(rng.normal(0, 0.002, (T, m)), 0)), 2)
    o = np.round(c * (1 + rng.normal(0, 0.001, (T, m))), 2)
    h = np.maximum(o, c) + rng.integers(0, 3, (T, m)) * 0.01
    l = np.maximum(np.minimum(o, c) - rng.integers(0, 3, (T, m)) * 0.01, 0.01)
    v = rng.integers(1, 100, (T, m)) * 100.0
    idx = pd.date_range('2026-03-02 14:30', periods=T, freq='1min', tz='UTC')
    cols = [f"S{i:04d}" for i in range(m)]
    f = lambda a: pd.DataFrame(a, index=idx, columns=cols)
    return Panel(open=f(o), high=f(h), low=f(l), close=f(c), volume=f(v))


def _per_symbol(P, name):
    "pandas-ta once per symbol: the reference."
    import inspect
    import pandas_ta
    fn = getattr(pandas_ta, name)
    ps = inspect.signature(fn).parameters
    need = [k for k in ('open_', 'high', 'low', 'close', 'volume') if k in ps and ps[k].default is inspect.Parameter.empty]
    kw = {'talib': False} if 'talib' in ps else {}
    fields = {k: getattr(P, 'open' if k == 'open_' else k) for k in need}
    import pandas as pd
    return lambda: pd.concat([fn(**{k: f[s] for k, f in fields.items()}, **kw) for s in P.symbols], axis=1, keys=P.symbols)   # a panel, as ta() returns


def _same(ours, ref, P) -> None:
    "ta()'s panel equals the per-symbol results (first output; every symbol)."
    first = ours if not hasattr(ours, 'names') else ours[0]
    want = ref.T.groupby(level=0, sort=False).head(1).T.to_numpy(float) if ref.columns.nlevels > 1 else ref.to_numpy(float)
    np.testing.assert_allclose(first.to_numpy(), want, rtol=1e-9, atol=1e-9, equal_nan=True)


def run(rounds: int = 1) -> Iterator[dict]:
    "Each indicator: ta() on the panel against per-symbol pandas-ta; and the five together."
    import warnings
    warnings.filterwarnings('ignore')
    from smallcap.indicators_ta import list_indicators, ta
    P = _panel()
    engines = list_indicators()['engine']
    tot = {'ta': 0.0, 'ref': 0.0}
    for name in INDICATORS + NATIVE:
        ours, ref = (lambda n=name: ta(n, P)), _per_symbol(P, name)
        _same(ours(), ref(), P)                                              # also warms up
        t = {'ta': [], 'ref': []}
        for i in range(rounds):
            for k in (('ta', 'ref') if i % 2 == 0 else ('ref', 'ta')):
                f = ours if k == 'ta' else ref
                t0 = time.perf_counter(); f(); t[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in t.items()}
        if name in INDICATORS: tot['ta'] += med['ta']; tot['ref'] += med['ref']
        yield {'figure': f"ta('{name}') on 1,000 symbols x 1,000 bars ({engines[name]})", 'seconds': round(med['ta'], 4),
               'reference': 'pandas-ta 0.4 (talib=False), one call per symbol', 'reference_seconds': round(med['ref'], 4),
               'ratio': round(med['ref'] / med['ta'], 2), 'target_ratio': 1, 'better': 'higher', 'rounds': rounds}
    yield {'figure': f"ta() five pandas-ta-only indicators ({', '.join(INDICATORS)}) on 1,000 symbols x 1,000 bars", 'seconds': round(tot['ta'], 4),
           'reference': 'pandas-ta 0.4 (talib=False), one call per symbol', 'reference_seconds': round(tot['ref'], 4),
           'ratio': round(tot['ref'] / tot['ta'], 2), 'target_ratio': 1, 'better': 'higher', 'rounds': rounds}
