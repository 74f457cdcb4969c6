"""Indicators: the core set (RSI 14, EMA 20, ATR 14, Bollinger 20/2, MACD 12/26/9) on a million bars, as a panel of
1,000 symbols x 1,000 bars and as one 1,000,000-bar series, against

- pandas-ta 0.4 (talib=False), the reference a researcher would otherwise use: one call per symbol and indicator,
  since pandas-ta has no panel support. The ratio is pandas-ta seconds / ours (a speed-up; target >= 10).
- plain numba kernels doing the same math on bare arrays (SMA-seeded EMAs, Wilder RSI/ATR, running-sum Bollinger
  bands with all five outputs, fused MACD), written the obvious way without smallcap's NaN skipping, re-syncing,
  validation or pandas wrapping. The ratio is ours / plain (our overhead; target <= 2).

Our figure is the full pandas-facing call (`smallcap.indicators.rsi(frame)` etc.: input checks, array views,
kernels, result frames). Numba compile time is excluded: every kernel is warmed up first (and cached on disk).
Each round times every candidate once, in a rotating order; figures are ratios of medians.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np

CORE = ('rsi', 'ema', 'atr', 'bbands', 'macd')


def _data(T: int, m: int, seed: int = 0):
    "Random-walk OHLC on a $0.01 grid, shaped (bars, symbols)."
    import pandas as pd
    rng = np.random.default_rng(seed)
    c = np.round(5 * np.exp(np.cumsum(rng.normal(0, 0.002, (T, m)), 0)), 2)
    h = c + rng.integers(0, 3, (T, m)) * 0.01
    l = np.maximum(c - rng.integers(0, 3, (T, m)) * 0.01, 0.01)
    idx = pd.date_range('2026-03-02 14:30', periods=T, freq='1min', tz='UTC')
    cols = [f"S{i:04d}" for i in range(m)]
    f = lambda a: pd.DataFrame(a, index=idx, columns=cols)
    return f(h), f(l), f(c)


def _ours(h, l, c) -> dict[str, Callable[[], object]]:
    import smallcap.indicators as I
    return {'rsi': lambda: I.rsi(c, 14), 'ema': lambda: I.ema(c, 20), 'atr': lambda: I.atr(h, l, c, 14),
            'bbands': lambda: I.bbands(c, 20, 2.0), 'macd': lambda: I.macd(c, 12, 26, 9)}


def _pandas_ta(h, l, c) -> dict[str, Callable[[], object]]:
    import warnings
    warnings.filterwarnings('ignore')
    import pandas_ta as ta
    if c.ndim == 1: h, l, c = (x.to_frame() for x in (h, l, c))
    cols = list(c.columns)
    each = lambda f: (lambda: [f(h[k], l[k], c[k]) for k in cols])
    return {'rsi': each(lambda h, l, c: ta.rsi(c, 14, talib=False)), 'ema': each(lambda h, l, c: ta.ema(c, 20, talib=False)),
            'atr': each(lambda h, l, c: ta.atr(h, l, c, 14, talib=False)),
            'bbands': each(lambda h, l, c: ta.bbands(c, 20, 2.0, 2.0, ddof=0, talib=False)),
            'macd': each(lambda h, l, c: ta.macd(c, 12, 26, 9, talib=False))}


# plain kernels: (symbols, bars) C-contiguous arrays (each symbol's history contiguous), no NaN handling

def _plain_rsi(x, n):
    m, T = x.shape
    out = np.empty((m, T))
    a = 1.0 / n; b = 1.0 - a
    for j in range(m):
        out[j, 0] = np.nan
        ag = 0.0; al = 0.0
        for i in range(1, T):
            ch = x[j, i] - x[j, i - 1]
            g = max(ch, 0.0); lo = max(-ch, 0.0)
            if i <= n:
                ag += g; al += lo
                if i < n:
                    out[j, i] = np.nan
                    continue
                ag *= a; al *= a
            else:
                ag = b * ag + a * g; al = b * al + a * lo
            out[j, i] = 100.0 * ag / (ag + al)
    return out


def _plain_ema(x, n):
    m, T = x.shape
    out = np.empty((m, T))
    a = 2.0 / (n + 1); b = 1.0 - a
    for j in range(m):
        s = 0.0
        for i in range(n):
            s += x[j, i]; out[j, i] = np.nan
        y = s / n
        out[j, n - 1] = y
        for i in range(n, T):
            y = b * y + a * x[j, i]
            out[j, i] = y
    return out


def _plain_atr(h, l, c, n):
    m, T = c.shape
    out = np.empty((m, T))
    a = 1.0 / n; b = 1.0 - a
    for j in range(m):
        y = h[j, 0] - l[j, 0]
        out[j, 0] = np.nan
        for i in range(1, T):
            tr = max(h[j, i] - l[j, i], abs(h[j, i] - c[j, i - 1]), abs(l[j, i] - c[j, i - 1]))
            if i < n:
                y += tr
                if i < n - 1:
                    out[j, i] = np.nan
                    continue
                y *= a
            else:
                y = b * y + a * tr
            out[j, i] = y
    return out


def _plain_bbands(x, n, k):
    m, T = x.shape
    lo = np.empty((m, T)); mid = np.empty((m, T)); up = np.empty((m, T)); bw = np.empty((m, T)); pb = np.empty((m, T))
    inv = 1.0 / n
    for j in range(m):
        s = 0.0; q = 0.0
        for i in range(T):
            v = x[j, i]
            s += v; q += v * v
            if i >= n:
                o = x[j, i - n]; s -= o; q -= o * o
            if i < n - 1:
                lo[j, i] = mid[j, i] = up[j, i] = bw[j, i] = pb[j, i] = np.nan
                continue
            mu = s * inv
            sd = np.sqrt(max(q * inv - mu * mu, 0.0))
            a = mu - k * sd; b = mu + k * sd
            lo[j, i] = a; mid[j, i] = mu; up[j, i] = b
            bw[j, i] = 100.0 * (b - a) / mu
            pb[j, i] = (v - a) / (b - a) if b > a else np.nan
    return lo, mid, up, bw, pb


def _plain_macd(x, fast, slow, sig):
    m, T = x.shape
    mac = np.empty((m, T)); sg = np.empty((m, T)); hist = np.empty((m, T))
    af = 2.0 / (fast + 1); aS = 2.0 / (slow + 1); ag = 2.0 / (sig + 1)
    for j in range(m):
        f = 0.0; s = 0.0; g = 0.0
        for i in range(T):
            v = x[j, i]
            if i < fast:
                f += v
                if i == fast - 1: f /= fast
            else: f = (1 - af) * f + af * v
            if i < slow:
                s += v
                if i == slow - 1: s /= slow
            else: s = (1 - aS) * s + aS * v
            if i < slow - 1:
                mac[j, i] = sg[j, i] = hist[j, i] = np.nan
                continue
            d = f - s
            mac[j, i] = d
            k = i - (slow - 1)
            if k < sig:
                g += d
                if k < sig - 1:
                    sg[j, i] = hist[j, i] = np.nan
                    continue
                g /= sig
            else:
                g = (1 - ag) * g + ag * d
            sg[j, i] = g; hist[j, i] = d - g
    return mac, sg, hist


def _plain(h, l, c) -> dict[str, Callable[[], object]]:
    import numba
    jit = lambda f: numba.njit(cache=True, nogil=True, error_model='numpy')(f)
    rsi_, ema_, atr_, bb_, macd_ = (jit(f) for f in (_plain_rsi, _plain_ema, _plain_atr, _plain_bbands, _plain_macd))
    H, L, C = (np.ascontiguousarray(x.to_numpy().reshape(len(x), -1).T) for x in (h, l, c))
    return {'rsi': lambda: rsi_(C, 14), 'ema': lambda: ema_(C, 20), 'atr': lambda: atr_(H, L, C, 14),
            'bbands': lambda: bb_(C, 20, 2.0), 'macd': lambda: macd_(C, 12, 26, 9)}


def _check(ours, plain) -> None:
    "Ours and the plain kernels agree (so the comparison is like for like)."
    for k in CORE:
        a, b = ours[k](), plain[k]()
        a = [a] if not hasattr(a, 'names') else list(a)
        b = [b] if isinstance(b, np.ndarray) else list(b)
        for x, y in zip(a, b):
            x = np.asarray(x, float).reshape(y.shape[::-1]).T
            ok = np.isfinite(x) & np.isfinite(y)                               # %B on a flat window: ours NaN, plain noise
            assert ok.mean() > 0.9, k
            np.testing.assert_allclose(x[ok], y[ok], rtol=1e-6, atol=1e-6, err_msg=k)


def _time(f: Callable[[], object]) -> float:
    t = time.perf_counter(); f(); return time.perf_counter() - t


def run(rounds: int = 3) -> Iterator[dict]:
    "The core set on a 1,000 x 1,000 panel and a 1M-bar series: speed-up over pandas-ta and overhead over plain numba."
    for shape, label in [((1000, 1000), '1,000 symbols x 1,000 bars'), ((1_000_000, 1), 'one 1,000,000-bar series')]:
        h, l, c = _data(*shape)
        if shape[1] == 1: h, l, c = h.iloc[:, 0], l.iloc[:, 0], c.iloc[:, 0]
        cands = {'ours': _ours(h, l, c), 'pandas-ta': _pandas_ta(h, l, c), 'plain numba': _plain(h, l, c)}
        for fs in cands.values():
            for f in fs.values(): f()                                         # warm up: compile / load caches
        _check(cands['ours'], cands['plain numba'])
        names = list(cands)
        times = {(n, k): [] for n in names for k in CORE}
        for i in range(rounds):
            for n in names[i % 3:] + names[:i % 3]:
                for k in CORE: times[n, k].append(_time(cands[n][k]))
        med = {key: statistics.median(v) for key, v in times.items()}
        tot = {n: sum(med[n, k] for k in CORE) for n in names}
        yield {'figure': f'core set (rsi, ema, atr, bbands, macd), {label}: speed-up over pandas-ta', 'seconds': round(tot['ours'], 4),
               'reference': 'pandas-ta 0.4 (talib=False), one call per symbol', 'reference_seconds': round(tot['pandas-ta'], 4),
               'ratio': round(tot['pandas-ta'] / tot['ours'], 2), 'target_ratio': 10, 'better': 'higher', 'rounds': rounds}
        yield {'figure': f'core set (rsi, ema, atr, bbands, macd), {label}: time relative to plain numba', 'seconds': round(tot['ours'], 4),
               'reference': 'plain numba kernels on bare arrays', 'reference_seconds': round(tot['plain numba'], 4),
               'ratio': round(tot['ours'] / tot['plain numba'], 3), 'target_ratio': 2, 'rounds': rounds}
        for k in CORE:                                                        # detail, no targets
            yield {'figure': f'{k}, {label}', 'seconds': round(med['ours', k], 5), 'reference': 'pandas-ta | plain numba',
                   'reference_seconds': round(med['pandas-ta', k], 5), 'plain_seconds': round(med['plain numba', k], 5),
                   'ratio': round(med['pandas-ta', k] / med['ours', k], 2), 'ratio_to_plain': round(med['ours', k] / med['plain numba', k], 3),
                   'rounds': rounds}
