"""smallcap.indicators: pandas-ta parity, causality on truncated histories, missing-bar semantics, ties on a $0.01
grid, and the session logic (half days, holidays, halts, listings) of the small-cap indicators.

Where our definition differs from pandas-ta (talib=False) the test says how and checks the documented variant:
- ema/rma/rsi `seed`: pandas-ta's `ema` is SMA-seeded (= ours by default); its `rma` and `rsi` are seeded with the
  first value (= ours with seed='first'). Our default RSI is Wilder's SMA seed: equal after a burn-in.
- adx: pandas-ta seeds its averages differently (see the notebook); equal to 1e-9 after a burn-in.
- bbands: our default is the population std (ddof=0, Bollinger); pandas-ta's is ddof=1; both are checked.
  %B where the bands touch: ours NaN, pandas-ta eps/eps (= 1, through `non_zero_range`).
- rsi with neither gains nor losses: ours 50, pandas-ta NaN.
- zscore on a flat window: ours NaN, pandas-ta +-inf or NaN (0 / 0 with float noise).
- obv at the first bar: ours 0, pandas-ta NaN.
- vwap: pandas-ta groups by the calendar day of the index's time zone; ours by NYSE session. Equal on a New York
  index with bars inside 04:00-20:00 ET; different on a UTC index (evening bars fall into the next UTC day).
"""
from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import smallcap.indicators as I
from smallcap.core import ConfigError, DataError
from smallcap.data.calendar import trading_sessions

warnings.filterwarnings('ignore', module='pandas_ta')
ta = pytest.importorskip('pandas_ta')
TOL = dict(rtol=1e-9, atol=1e-9)
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::FutureWarning')


# ---------------------------------------------------------------------------------------------------------------
# data

def walk(n: int, seed: int = 0, p0: float = 3.0, sd_ticks: float = 1.2, index=None, grid: bool = True) -> pd.DataFrame:
    "Random-walk OHLCV on a $0.01 grid: steps of whole ticks, many of them zero (ties), first step non-zero (grid=False: no grid)."
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, sd_ticks, n)
    if grid: steps = np.round(steps)
    steps[1] = steps[1] or 1.0
    steps[0] = 0
    c = np.maximum(round(p0 * 100) + np.cumsum(steps), 20)
    o = np.maximum(np.concatenate([[c[0]], c[:-1]]) + rng.integers(-1, 2, n), 20)
    h = np.maximum(o, c) + (rng.integers(0, 3, n) if grid else rng.random(n) * 3)
    l = np.maximum(np.minimum(o, c) - (rng.integers(0, 3, n) if grid else rng.random(n) * 3), 10)
    v = (rng.integers(0, 60, n) * 100).astype(float)
    idx = index if index is not None else pd.date_range('2026-03-02 14:30', periods=n, freq='1min', tz='UTC')
    return pd.DataFrame({k: np.round(a / 100, 2 if grid else 12) for k, a in dict(open=o, high=h, low=l, close=c).items()} | {'volume': v}, index=idx)


def session_index(start='2025-11-24', end='2025-12-03') -> pd.DatetimeIndex:
    "One-minute bars 04:00-20:00 ET (17:00 on the half day) over sessions with Thanksgiving and its half day, plus overnight stamps."
    s = trading_sessions(start, end)
    parts = [pd.date_range(a, b, freq='1min', inclusive='left') for a, b in zip(s.pre_open, s.post_close)]
    overnight = pd.DatetimeIndex(s.pre_open.iloc[2:4]) - pd.Timedelta('2h')            # 02:00 ET: outside every session
    return parts[0].append(parts[1:] + [overnight]).sort_values()


SYMS = ['ABCD', 'LATE', 'HALT', 'GONE', 'THIN']


def session_panel(seed: int = 3) -> dict[str, pd.DataFrame]:
    "A raw panel (volume NaN where no bar) of five small caps with late listing, an all-day halt, a delisting, thin trading."
    idx = session_index()
    T = len(idx)
    frames = [walk(T, seed + i, p0=[2.5, 1.1, 6.0, 0.6, 3.3][i], index=idx) for i in range(len(SYMS))]
    from smallcap.indicators import _sessions
    day, code, _, _ = _sessions(idx)
    days = np.unique(day[day >= 0])
    rng = np.random.default_rng(seed)
    miss = np.where(code[:, None] == 1, rng.random((T, len(SYMS))) < 0.1, rng.random((T, len(SYMS))) < 0.75)
    miss[day < 0, 1:] = True                                           # overnight stamps: only ABCD printed
    miss[day < days[2], 1] = True                                      # LATE lists on the third session
    miss[(day == days[3]) & (code == 1), 2] = True                     # HALT: no regular bar on the fourth session
    miss[day > days[5], 3] = True                                      # GONE delisted after the sixth
    miss[:, 4] |= rng.random(T) < 0.6                                  # THIN trades rarely
    out = {k: pd.DataFrame(np.column_stack([f[k] for f in frames]), index=idx, columns=SYMS).where(~miss) for k in frames[0].columns}
    return out


@pytest.fixture(scope='module')
def sp() -> dict[str, pd.DataFrame]:
    return session_panel()


FLOAT_REF = pd.DataFrame({'symbol': ['ABCD', 'ABCD', 'LATE', 'HALT', 'GONE', 'THIN'],
                          'date': [dt.date(2025, 1, 2), dt.date(2025, 11, 28), dt.date(2025, 11, 25), dt.date(2025, 6, 1), dt.date(2025, 6, 1), dt.date(2025, 12, 2)],
                          'float_shares': [3e6, 6e6, 1e6, 8e6, 2e7, 5e5]})

# every indicator, as a function of a dict of fields (Series or DataFrames)
IND = {
    'sma': lambda d: I.sma(d['close'], 10),
    'ema': lambda d: I.ema(d['close'], 10),
    'ema_first': lambda d: I.ema(d['close'], 10, seed='first'),
    'rma': lambda d: I.rma(d['close'], 7),
    'wma': lambda d: I.wma(d['close'], 9),
    'rsi': lambda d: I.rsi(d['close'], 14),
    'rsi_first': lambda d: I.rsi(d['close'], 6, seed='first'),
    'stoch': lambda d: I.stoch(d['high'], d['low'], d['close']),
    'stoch_raw': lambda d: I.stoch(d['high'], d['low'], d['close'], 5, 3, 1),
    'stochrsi': lambda d: I.stochrsi(d['close']),
    'macd': lambda d: I.macd(d['close']),
    'bbands': lambda d: I.bbands(d['close']),
    'bbands_ddof1': lambda d: I.bbands(d['close'], 5, 1.5, ddof=1),
    'true_range': lambda d: I.true_range(d['high'], d['low'], d['close']),
    'atr': lambda d: I.atr(d['high'], d['low'], d['close']),
    'adx': lambda d: I.adx(d['high'], d['low'], d['close']),
    'adx_5_9': lambda d: I.adx(d['high'], d['low'], d['close'], 5, 9),
    'obv': lambda d: I.obv(d['close'], d['volume']),
    'roc': lambda d: I.roc(d['close'], 10),
    'zscore': lambda d: I.zscore(d['close'], 30),
    'donchian': lambda d: I.donchian(d['high'], d['low'], 20),
    'keltner': lambda d: I.keltner(d['high'], d['low'], d['close']),
    'keltner_sma_hl': lambda d: I.keltner(d['high'], d['low'], d['close'], 10, 1.5, 'sma', use_tr=False),
    'streak': lambda d: I.streak(d['close']),
    'streak_candle': lambda d: I.streak(d['close'], d['open']),
    'dollar_volume': lambda d: I.dollar_volume(d['close'], d['volume']),
    'vwap': lambda d: I.vwap(d['high'], d['low'], d['close'], d['volume']),
    'vwap_regular': lambda d: I.vwap(d['high'], d['low'], d['close'], d['volume'], session='regular'),
    'vwap_bar': lambda d: I.vwap(d['high'], d['low'], d['close'], d['volume'], bar_vwap=(d['high'] + d['low']) / 2),
    'vwap_distance': lambda d: I.vwap_distance(d['high'], d['low'], d['close'], d['volume']),
    'gap_pct': lambda d: I.gap_pct(d['open'], d['close']),
    'premarket_range': lambda d: I.premarket_range(d['high'], d['low']),
    'day_range': lambda d: I.day_range(d['high'], d['low']),
    'day_range_ext': lambda d: I.day_range(d['high'], d['low'], 'extended'),
    'rvol': lambda d: I.rvol(d['volume'], 3, min_sessions=1),
    'rvol_bar_regular': lambda d: I.rvol(d['volume'], 2, cumulative=False, session='regular'),
    'dollar_volume_cum': lambda d: I.dollar_volume(d['close'], d['volume'], cumulative=True),
    'float_rotation': lambda d: I.float_rotation(d['volume'], FLOAT_REF),
    'float_rotation_regular': lambda d: I.float_rotation(d['volume'], {s: 1e6 * (i + 1) for i, s in enumerate(SYMS)}, 'regular'),
}


def outs(res) -> list:
    return list(res) if isinstance(res, I.Outputs) else [res]


def arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


# ---------------------------------------------------------------------------------------------------------------
# causality: values at bars <= t never change when bars after t are removed

CUTS = [1, 2, 3, 15, 29, 100, 330, 331, 900, 960, 961, 1500, 2000, 2913, 3333, 4100, 5000, 5770, 6001, 6800]


@pytest.mark.parametrize('name', list(IND))
def test_causal_on_truncated_histories(name, sp):
    full = [arr(o) for o in outs(IND[name](sp))]
    T = len(sp['close'])
    cuts = sorted({t for t in CUTS + list(np.random.default_rng(0).integers(1, T, 10)) if t < T})
    for t in cuts:
        part = [arr(o) for o in outs(IND[name]({k: v.iloc[:t] for k, v in sp.items()}))]
        for a, b in zip(full, part):
            np.testing.assert_array_equal(b, a[:t], err_msg=f"{name}: truncating at bar {t} changed earlier values")


def test_truncation_of_a_single_series_too(sp):
    s = {k: v['ABCD'] for k, v in sp.items()}
    for name, f in IND.items():
        full = [arr(o) for o in outs(f(s))]
        for t in (7, 333, 2500):
            for a, b in zip(full, [arr(o) for o in outs(f({k: v.iloc[:t] for k, v in s.items()}))]):
                np.testing.assert_array_equal(b, a[:t], err_msg=name)


def causal(f, df, cuts=(150, 250, 330)) -> bool:
    "The same check, for pandas-ta functions (exact equality, NaN equal NaN)."
    full = pd.DataFrame(pd.concat([x for x in f(df)], axis=1) if isinstance(f(df), tuple) else f(df))
    for t in cuts:
        r = f(df.iloc[:t])
        part = pd.DataFrame(pd.concat([x for x in r], axis=1) if isinstance(r, tuple) else r)
        if not np.array_equal(full.iloc[:t].to_numpy(float), part.to_numpy(float), equal_nan=True): return False
    return True


def test_the_check_catches_pandas_ta_look_ahead():
    "dpo (centered) and ichimoku (chikou) look ahead; stoch and bbands' %B add an epsilon to every range when any later range is 0."
    df = walk(400, 5)
    assert causal(lambda d: ta.dpo(d.close), df) is False
    assert causal(lambda d: ta.ichimoku(d.high, d.low, d.close), df) is False
    assert causal(lambda d: ta.dpo(d.close, centered=False), df) is True
    c = pd.Series(np.round(10 + np.cumsum(np.random.default_rng(0).normal(0, 0.05, 300)), 2))
    c.iloc[250:270] = c.iloc[249]                                     # a flat stretch after the cut
    flat = pd.DataFrame({'high': c + 0.01, 'low': c - 0.01, 'close': c})
    flat.iloc[250:270, :2] = c.iloc[249]
    assert causal(lambda d: ta.stoch(d.high, d.low, d.close, talib=False), flat, cuts=(200,)) is False
    assert causal(lambda d: ta.bbands(d.close, talib=False), flat, cuts=(200,)) is False
    assert causal(lambda d: I.stoch(d.high, d.low, d.close).frame(), flat, cuts=(200,))
    assert causal(lambda d: I.bbands(d.close).frame(), flat, cuts=(200,))


# ---------------------------------------------------------------------------------------------------------------
# missing bars: a column with gaps equals the same column with its gaps dropped; leading NaNs do not poison

@pytest.mark.parametrize('name', list(IND))
def test_missing_bars_are_skipped(name, sp):
    full = outs(IND[name](sp))
    for sym in SYMS:
        ok = np.logical_and.reduce([v[sym].notna().to_numpy() for v in sp.values()])
        alone = outs(IND[name]({k: v[sym][ok] for k, v in sp.items()}))
        for a, b in zip(full, alone):
            np.testing.assert_array_equal(arr(a[sym])[ok], arr(b), err_msg=f"{name} {sym}")
            if name not in ('rvol', 'rvol_bar_regular', 'float_rotation', 'float_rotation_regular'):
                assert np.isnan(arr(a[sym])[~ok]).all(), f"{name} {sym}: a missing bar must give NaN"


def test_series_input_equals_panel_column(sp):
    for name, f in IND.items():
        for a, b in zip(outs(f(sp)), outs(f({k: v['THIN'] for k, v in sp.items()}))):
            assert isinstance(b, pd.Series) and b.name == 'THIN' and b.index.equals(sp['close'].index)
            np.testing.assert_array_equal(arr(a['THIN']), arr(b), err_msg=name)


def test_zero_volume_at_missing_bars_changes_nothing_where_there_are_bars(sp):
    "Panel.from_bars stores volume 0 where there is no bar: volume-only indicators give the same values at real bars."
    ok = sp['close'].notna()
    v0 = sp['volume'].fillna(0.0)
    for f in (lambda v: I.rvol(v, 3, min_sessions=1), lambda v: I.rvol(v, 2, cumulative=False),
              lambda v: I.float_rotation(v, FLOAT_REF)):
        np.testing.assert_array_equal(arr(f(v0).where(ok)), arr(f(sp['volume']).where(ok)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.integers(1, 25), st.floats(0, 0.6), st.integers(0, 80))
def test_gap_invariance_property(seed, n, frac, lead):
    df = walk(160, seed)
    rng = np.random.default_rng(seed)
    miss = rng.random(160) < frac
    miss[:lead] = True
    g = df.where(np.repeat(~miss[:, None], df.shape[1], axis=1))
    ok = ~miss
    for f in (lambda d: I.sma(d.close, n), lambda d: I.ema(d.close, n), lambda d: I.wma(d.close, n), lambda d: I.rsi(d.close, n),
              lambda d: I.atr(d.high, d.low, d.close, n), lambda d: I.bbands(d.close, n + 1).percent, lambda d: I.adx(d.high, d.low, d.close, n).adx,
              lambda d: I.stoch(d.high, d.low, d.close, n).d, lambda d: I.donchian(d.high, d.low, n).mid, lambda d: I.roc(d.close, n),
              lambda d: I.zscore(d.close, n + 1), lambda d: I.macd(d.close, n, n + 5, 3).hist, lambda d: I.obv(d.close, d.volume)):
        a, b = f(g), f(df[ok])
        np.testing.assert_array_equal(arr(a)[ok], arr(b))
        assert np.isnan(arr(a)[~ok]).all()


# ---------------------------------------------------------------------------------------------------------------
# pandas-ta parity (talib=False), on $0.01-grid random walks with ties

def same(ours, theirs, start: int = 0, where=None):
    "Equal to 1e-9 from `start`, NaN exactly where pandas-ta has NaN (optionally only `where`)."
    a, b = arr(ours)[start:], arr(theirs)[start:]
    if where is not None:
        w = np.asarray(where)[start:]
        a, b = a[w], b[w]
    np.testing.assert_allclose(a, b, **TOL)


def flat_windows(x: pd.Series, n: int) -> np.ndarray:
    "Bars whose last `n` values are all equal: our rolling std is exactly 0 there, pandas' is rounding noise."
    return np.asarray(x.rolling(n).max() == x.rolling(n).min())


def cols(df: pd.DataFrame, *prefixes: str) -> list[pd.Series]:
    return [df[next(c for c in df.columns if c.startswith(p))] for p in prefixes]


PARAMS = [(0, 3), (1, 10), (2, 14), (3, 20)]


@pytest.mark.parametrize('seed,n', PARAMS)
def test_parity_moving_averages(seed, n):
    d = walk(3000, seed)
    same(I.sma(d.close, n), ta.sma(d.close, n, talib=False))
    same(I.ema(d.close, n), ta.ema(d.close, n, talib=False))                     # SMA seed (pandas-ta presma=True)
    same(I.ema(d.close, n, seed='first'), ta.ema(d.close, n, talib=False, presma=False))
    same(I.rma(d.close, n, seed='first'), ta.rma(d.close, n))
    same(I.wma(d.close, n), ta.wma(d.close, n, talib=False))
    same(I.roc(d.close, n), ta.roc(d.close, n, talib=False))


@pytest.mark.parametrize('seed,n', PARAMS)
def test_parity_oscillators(seed, n):
    d = walk(3000, seed)
    same(I.rsi(d.close, n, seed='first'), ta.rsi(d.close, n, talib=False))
    same(I.rsi(d.close, n), ta.rsi(d.close, n, talib=False), start=60 * n)       # Wilder's SMA seed: equal after burn-in
    if n >= 10: assert not np.allclose(arr(I.rsi(d.close, n))[n:2 * n], arr(ta.rsi(d.close, n, talib=False))[n:2 * n], **TOL)
    for ours, theirs in zip(I.stoch(d.high, d.low, d.close, n, 3, 3), cols(ta.stoch(d.high, d.low, d.close, n, 3, 3, talib=False), 'STOCHk', 'STOCHd', 'STOCHh')):
        same(ours, theirs)
    # stochrsi: where the RSI's range over `length` bars is below 1e-9 (unchanged closes: the RSI is constant up to
    # rounding) ours is 0 and pandas-ta divides rounding noise by machine epsilon; compare outside those windows
    r = ta.rsi(d.close, n + 2, talib=False)
    flat = (r.rolling(n).max() - r.rolling(n).min() <= 1e-9).astype(float)
    for ours, theirs, w in zip(I.stochrsi(d.close, n, n + 2, 3, 4, seed='first'), cols(ta.stochrsi(d.close, n, n + 2, 3, 4, talib=False), 'STOCHRSIk', 'STOCHRSId'), (3, 6)):
        same(ours, theirs, where=np.asarray(flat.rolling(w, min_periods=1).max() == 0))
    m = ta.macd(d.close, n, 2 * n + 1, 9, talib=False)
    for ours, theirs in zip(I.macd(d.close, n, 2 * n + 1, 9), cols(m, 'MACD_', 'MACDs_', 'MACDh_')):
        same(ours, theirs)


@pytest.mark.parametrize('seed,n', PARAMS)
def test_parity_volatility(seed, n):
    d = walk(3000, seed)
    for ddof in (0, 1):
        ours = I.bbands(d.close, n, 2.0, ddof=ddof)
        theirs = cols(ta.bbands(d.close, n, 2.0, 2.0, ddof=ddof, talib=False), 'BBL', 'BBM', 'BBU', 'BBB', 'BBP')
        flat = flat_windows(d.close, n)
        for o, t, tol in zip(list(ours)[:4], theirs[:4], (1e-6, 1e-6, 1e-6, 1e-4)):
            same(o, t, where=~flat)
            np.testing.assert_allclose(arr(o)[flat], arr(t)[flat], atol=tol)   # pandas' rolling var: noise, not 0
        assert (ours.upper[flat] == ours.lower[flat]).all() and (ours.mid[flat] == d.close[flat]).all()
        same(ours.percent, theirs[4], where=~flat)
        assert np.isnan(arr(ours.percent)[flat]).all()                        # %B: ours NaN, pandas-ta noise / noise
    same(I.true_range(d.high, d.low, d.close), ta.true_range(d.high, d.low, d.close, talib=False))
    same(I.atr(d.high, d.low, d.close, n), ta.atr(d.high, d.low, d.close, n, talib=False))
    z, zt = I.zscore(d.close, n + 1), ta.zscore(d.close, n + 1)
    flat = flat_windows(d.close, n + 1)                                        # pandas-ta: noise / noise
    same(z, zt, where=~flat); assert np.isnan(arr(z)[flat]).all()
    for o, t in zip(I.donchian(d.high, d.low, n), cols(ta.donchian(d.high, d.low, n, n), 'DCL', 'DCM', 'DCU')): same(o, t)
    for mamode in ('ema', 'sma'):
        for o, t in zip(I.keltner(d.high, d.low, d.close, n, 2.0, mamode), cols(ta.kc(d.high, d.low, d.close, n, 2.0, mamode=mamode), 'KCL', 'KCB', 'KCU')):
            same(o, t)


def wilder_adx(d: pd.DataFrame, n: int) -> pd.DataFrame:
    "Reference ADX in plain pandas: integer-tick moves (exact ties), SMA-seeded Wilder averages."
    hi, lo, cl = (np.round(d[k] * 100).astype('int64') for k in ('high', 'low', 'close'))
    up, dn = hi.diff(), -lo.diff()
    pdm, mdm = (up.where((up > dn) & (up > 0), 0) / 100).where(up.notna()), (dn.where((dn > up) & (dn > 0), 0) / 100).where(dn.notna())
    tr = pd.concat([hi - lo, (hi - cl.shift()).abs(), (lo - cl.shift()).abs()], axis=1).max(axis=1).where(cl.shift().notna()) / 100
    def rma(x, k):
        x = x.dropna(); seed = x.iloc[:k].mean(); y = x.iloc[k - 1:].copy(); y.iloc[0] = seed
        return y.ewm(alpha=1 / k, adjust=False).mean().reindex(d.index)
    atr_, p, m = rma(tr, n), rma(pdm, n), rma(mdm, n)
    dip, dim = 100 * p / atr_, 100 * m / atr_
    dx = (100 * (dip - dim).abs() / (dip + dim)).fillna(0).where(dip.notna())
    return pd.DataFrame({'adx': rma(dx, n), 'dmp': dip, 'dmn': dim})


@pytest.mark.parametrize('seed,n', PARAMS)
def test_parity_trend_and_volume(seed, n):
    c = walk(3000, seed, grid=False)                                         # off-grid: no exactly tied moves
    a, t = I.adx(c.high, c.low, c.close, n), ta.adx(c.high, c.low, c.close, n, talib=False)
    for o, tt in zip(a, cols(t, 'ADX_', 'DMP_', 'DMN_')):
        same(o, tt, start=80 * n)                                            # different seeds: equal after burn-in
    d = walk(3000, seed)                                                     # on the grid: against the exact-tie reference
    for o, r in zip(I.adx(d.high, d.low, d.close, n), wilder_adx(d, n).values.T):
        same(o, r)
    same(I.obv(d.close, d.volume), ta.obv(d.close, d.volume, talib=False), start=1)
    assert I.obv(d.close, d.volume).iloc[0] == 0 and np.isnan(ta.obv(d.close, d.volume, talib=False).iloc[0])


def test_parity_session_vwap_on_a_new_york_index(sp):
    "pandas-ta anchors at calendar days of the index's zone: on a New York index with 04:00-20:00 bars, our sessions."
    day = I._sessions(sp['close'].index)[0]
    d = {k: v['ABCD'][day >= 0] for k, v in sp.items()}
    ok = d['close'].notna()
    d = {k: v[ok] for k, v in d.items()}
    ny = {k: v.tz_convert('America/New_York') for k, v in d.items()}
    theirs = ta.vwap(ny['high'], ny['low'], ny['close'], ny['volume'])
    same(I.vwap(d['high'], d['low'], d['close'], d['volume']), theirs)
    utc = ta.vwap(d['high'], d['low'], d['close'], d['volume'])                  # on UTC: evenings join the next day
    evening = np.asarray(d['close'].index.tz_convert('America/New_York').hour >= 19)
    assert not np.allclose(arr(utc)[evening], arr(theirs)[evening], **TOL)


def test_parity_does_not_drift_over_a_million_bars():
    d = walk(1_000_000, 11, p0=20.0, sd_ticks=0.8)
    same(I.sma(d.close, 200), ta.sma(d.close, 200, talib=False))
    same(I.wma(d.close, 50), ta.wma(d.close, 50, talib=False))
    b, t = I.bbands(d.close, 20, ddof=1), ta.bbands(d.close, 20, talib=False)
    flat = flat_windows(d.close, 20)
    same(b.upper, t.iloc[:, 2], where=~flat); same(b.lower, t.iloc[:, 0], where=~flat)
    assert (b.upper[flat] == d.close[flat]).all()
    same(I.ema(d.close, 50), ta.ema(d.close, 50, talib=False))
    same(I.atr(d.high, d.low, d.close), ta.atr(d.high, d.low, d.close, talib=False))


ticks = st.lists(st.integers(-3, 3), min_size=60, max_size=220)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks, st.integers(2, 12), st.integers(0, 10**6))
def test_parity_property(steps, n, seed):
    "Short tick-grid series (lots of ties and flat stretches) against pandas-ta."
    steps = np.array(steps, float); steps[0] = 0; steps[1] = steps[1] or 1
    rng = np.random.default_rng(seed)
    c = pd.Series(np.round((300 + np.cumsum(steps)) / 100, 2))
    h = np.round(c + rng.integers(0, 3, len(c)) / 100, 2); l = np.round(c - rng.integers(0, 3, len(c)) / 100, 2)
    v = pd.Series(rng.integers(0, 9, len(c)) * 100.0)
    same(I.sma(c, n), ta.sma(c, n, talib=False)); same(I.ema(c, n), ta.ema(c, n, talib=False)); same(I.wma(c, n), ta.wma(c, n, talib=False))
    same(I.rsi(c, n, seed='first'), ta.rsi(c, n, talib=False))
    same(I.atr(h, l, c, n), ta.atr(h, l, c, n, talib=False))
    same(I.obv(c, v), ta.obv(c, v, talib=False), start=1)
    for o, t in zip(I.stoch(h, l, c, n, 3, 2), cols(ta.stoch(h, l, c, n, 3, 2, talib=False), 'STOCHk', 'STOCHd', 'STOCHh')): same(o, t)
    for o, t in zip(I.donchian(h, l, n), cols(ta.donchian(h, l, n, n), 'DCL', 'DCM', 'DCU')): same(o, t)
    for o, t in zip(I.keltner(h, l, c, n), cols(ta.kc(h, l, c, n), 'KCL', 'KCB', 'KCU')): same(o, t)
    b, t = I.bbands(c, n, ddof=1), ta.bbands(c, n, talib=False)
    for o, tt in zip(list(b)[:3], [t.iloc[:, 0], t.iloc[:, 1], t.iloc[:, 2]]): same(o, tt, where=~flat_windows(c, n))
    m = ta.macd(c, n, n + 7, 4, talib=False)
    for o, tt in zip(I.macd(c, n, n + 7, 4), cols(m, 'MACD_', 'MACDs_', 'MACDh_')): same(o, tt)


# ---------------------------------------------------------------------------------------------------------------
# ties and degenerate windows on the $0.01 grid

def test_ties_and_flat_windows():
    flat = pd.Series([2.37] * 40)
    assert I.rsi(flat, 14).iloc[14:].eq(50).all()                               # no gains, no losses
    assert I.stoch(flat, flat, flat).k.dropna().eq(0).all()                     # flat range: 0, as TA-Lib / pandas-ta
    b = I.bbands(flat, 20)
    assert b.upper.dropna().eq(2.37).all() and b.lower.dropna().eq(2.37).all() and b.percent.isna().all()
    assert I.zscore(flat, 10).isna().all()
    assert I.streak(flat).eq(0).all() and I.obv(flat, flat * 100).eq(0).all()
    h = pd.Series([2.00, 2.05, 2.10]); l = pd.Series([1.95, 1.90, 1.95]); c = pd.Series([2.0, 2.0, 2.0])
    a = I.adx(h, l, c, 1, 1)                                                   # bar 1: up move 0.05 == down move 0.05: no DM
    assert a.dmp.iloc[1] == 0 and a.dmn.iloc[1] == 0 and a.adx.iloc[1] == 0


def test_tiny_hand_examples():
    c = pd.Series([1.00, 1.01, 1.02, 1.02, 1.01, 1.00, 0.99, 1.05])
    assert I.streak(c).tolist() == [0, 1, 2, 0, -1, -2, -3, 1]
    assert I.obv(c, pd.Series([5.0, 1, 2, 3, 4, 5, 6, 7])).tolist() == [0, 1, 3, 3, -1, -6, -12, -5]
    np.testing.assert_allclose(I.sma(c, 4).iloc[3:5], [4.05 / 4, 4.06 / 4])
    np.testing.assert_allclose(I.roc(c, 2).iloc[2], 2.0)
    np.testing.assert_allclose(I.macd(c, 2, 3, 2).macd.iloc[2], (2 / 3 * 1.02 + 1 / 3 * 1.005) - 1.01)


# ---------------------------------------------------------------------------------------------------------------
# session logic

def bars_at(times_et: list[str], **cols) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(times_et)).tz_localize('America/New_York').tz_convert('UTC')
    return pd.DataFrame(cols, index=idx)


def test_gap_across_a_holiday_and_a_half_day():
    b = bars_at(['2025-11-26 15:59', '2025-11-26 16:30',                     # Wednesday close 1.00, after-hours 1.20
                 '2025-11-28 08:00', '2025-11-28 09:30', '2025-11-28 12:59', '2025-11-28 13:30',   # half day after Thanksgiving
                 '2025-12-01 07:00', '2025-12-01 09:30'],
                open=[1.00, 1.20, 1.25, 1.30, 1.40, 1.45, 1.60, 1.70], close=[1.00, 1.20, 1.28, 1.35, 1.50, 1.55, 1.65, 1.72])
    g = I.gap_pct(b.open, b.close)
    assert g.iloc[:2].isna().all()
    np.testing.assert_allclose(g.iloc[2:6], [28.0, 30.0, 30.0, 30.0])           # premarket close, then the regular open, vs 1.00
    np.testing.assert_allclose(g.iloc[6:], [100 * (1.65 / 1.50 - 1), 100 * (1.70 / 1.50 - 1)])   # prior close: 12:59 bar of the half day


def test_gap_carries_the_last_regular_close_over_an_all_day_halt():
    b = bars_at(['2026-03-02 15:59', '2026-03-03 08:00', '2026-03-04 09:30'], open=[2.0, 2.4, 2.6], close=[2.0, 2.5, 2.7])
    np.testing.assert_allclose(I.gap_pct(b.open, b.close).iloc[1:], [25.0, 30.0])


def test_premarket_and_day_range_and_overnight_bars():
    b = bars_at(['2026-03-02 02:00', '2026-03-02 04:00', '2026-03-02 09:00', '2026-03-02 09:30', '2026-03-02 10:00', '2026-03-02 16:05'],
                high=[9.0, 2.1, 2.5, 2.3, 2.6, 3.0], low=[0.5, 2.0, 1.9, 2.2, 2.1, 1.0])
    pm, dr, dx = I.premarket_range(b.high, b.low), I.day_range(b.high, b.low), I.day_range(b.high, b.low, 'extended')
    assert np.isnan(pm.high.iloc[0]) and np.isnan(dr.high.iloc[0])           # 02:00 ET: no session
    assert pm.high.iloc[1:].tolist() == [2.1, 2.5, 2.5, 2.5, 2.5] and pm.low.iloc[1:].tolist() == [2.0, 1.9, 1.9, 1.9, 1.9]
    assert dr.high.iloc[1:3].isna().all() and dr.high.iloc[3:].tolist() == [2.3, 2.6, 2.6] and dr.low.iloc[3:].tolist() == [2.2, 2.1, 2.1]
    assert dx.high.iloc[1:].tolist() == [2.1, 2.5, 2.5, 2.6, 3.0] and dx.low.iloc[1:].tolist() == [2.0, 1.9, 1.9, 1.9, 1.0]


def test_vwap_resets_each_session_and_respects_the_window():
    b = bars_at(['2026-03-02 09:00', '2026-03-02 09:30', '2026-03-02 09:31', '2026-03-03 04:00'],
                high=[2.0, 3.0, 4.0, 5.0], low=[2.0, 3.0, 4.0, 5.0], close=[2.0, 3.0, 4.0, 5.0], volume=[100.0, 100, 300, 10])
    np.testing.assert_allclose(I.vwap(b.high, b.low, b.close, b.volume), [2.0, 2.5, 3.4, 5.0])
    r = I.vwap(b.high, b.low, b.close, b.volume, session='regular')
    assert np.isnan(r.iloc[0]) and np.isnan(r.iloc[3]); np.testing.assert_allclose(r.iloc[1:3], [3.0, 3.75])
    np.testing.assert_allclose(I.vwap_distance(b.high, b.low, b.close, b.volume).iloc[2], 100 * (4.0 / 3.4 - 1))


def test_rvol_uses_only_past_traded_sessions_and_lines_up_by_clock():
    times = [f'2025-11-{d} {t}' for d in (24, 25, 26, 28) for t in ('09:30', '10:00')] + ['2025-12-01 09:30', '2025-12-01 10:00']
    vol = [100.0, 300, 0, 0, 200, 100, 50, 50, 400, 100]        # 25 Nov: no volume (halted): skipped; 28 Nov is a half day
    b = bars_at(times, volume=vol)
    r = I.rvol(b.volume, lookback=2, min_sessions=1)
    np.testing.assert_allclose(r.iloc[4:6], [200 / 100, 300 / 400])             # 26 Nov vs 24 Nov only (25 Nov skipped)
    np.testing.assert_allclose(r.iloc[6:8], [50 / 150, 100 / 350])              # 28 Nov vs mean of 24 and 26 Nov
    np.testing.assert_allclose(r.iloc[8:], [400 / 125, 500 / 200])              # 1 Dec vs 26 and 28 Nov
    assert r.iloc[:2].isna().all(); np.testing.assert_allclose(r.iloc[2:4], [0.0, 0.0])   # 25 Nov against 24 Nov
    rb = I.rvol(b.volume, lookback=2, cumulative=False, min_sessions=2)
    assert rb.iloc[:6].isna().all(); np.testing.assert_allclose(rb.iloc[6:], [50 / 150, 50 / 200, 400 / 125, 100 / 75])


def test_float_rotation_inputs():
    b = bars_at(['2026-03-02 09:30', '2026-03-02 09:31', '2026-03-03 09:30'], volume=[1e5, 3e5, 2e5])
    np.testing.assert_allclose(I.float_rotation(b.volume, 1e6), [0.1, 0.4, 0.2])
    wide = pd.DataFrame({'X': [1e6, 2e6]}, index=pd.to_datetime(['2026-01-01', '2026-03-03']))
    np.testing.assert_allclose(I.float_rotation(b.volume.to_frame('X'), wide)['X'], [0.1, 0.4, 0.1])
    np.testing.assert_allclose(I.float_rotation(b.volume.rename('X'), pd.Series({'X': 4e5})), [0.25, 1.0, 0.5])
    assert I.float_rotation(b.volume.rename('X'), {'Y': 1e6}).isna().all()
    assert I.float_rotation(b.volume, 0).isna().all()
    with pytest.raises(DataError, match='float_shares'): I.float_rotation(b.volume, 'many')


# ---------------------------------------------------------------------------------------------------------------
# inputs and errors

def test_input_kinds_and_dtypes():
    d = walk(300, 2)
    ref = I.rsi(d.close)
    np.testing.assert_array_equal(I.rsi(d.close.to_numpy()), ref.to_numpy())
    np.testing.assert_array_equal(I.rsi(d.close.astype('float32')), I.rsi(d.close.astype('float32').astype(float)))
    two = pd.concat([d.close, d.close * 2], axis=1, keys=['A', 'B'])
    np.testing.assert_array_equal(I.rsi(two.to_numpy())[:, 0], ref.to_numpy())
    v = d.volume.astype('Int64'); v.iloc[5] = pd.NA
    o = I.obv(d.close, v)
    assert np.isnan(o.iloc[5]) and o.notna().sum() == 299
    assert I.sma(pd.Series([], dtype=float), 3).empty and I.sma(d.close.iloc[:2], 5).isna().all()
    assert I.vwap(*(pd.Series([], dtype=float, index=pd.DatetimeIndex([], tz='UTC')),) * 4).empty
    f = pd.DataFrame(np.asfortranarray(np.random.default_rng(0).random((50, 3))) + 1)
    np.testing.assert_array_equal(I.ema(f, 5).to_numpy(), I.ema(pd.DataFrame(np.ascontiguousarray(f.to_numpy())), 5).to_numpy())


def test_errors_name_the_problem():
    d = walk(50, 0)
    with pytest.raises(DataError, match='different indexes'): I.atr(d.high, d.low.shift(1, freq='1min'), d.close)
    with pytest.raises(DataError, match='same kind'): I.atr(d.high, d.low.to_frame(), d.close)
    with pytest.raises(ConfigError, match='length'): I.rsi(d.close, 0)
    with pytest.raises(ConfigError, match='length'): I.sma(d.close, 2.5)
    with pytest.raises(ConfigError, match='fast < slow'): I.macd(d.close, 26, 12)
    with pytest.raises(ConfigError, match='session must be'): I.vwap(d.high, d.low, d.close, d.volume, session='lunch')
    with pytest.raises(DataError, match='tz-aware'): I.gap_pct(d.open.tz_localize(None), d.close.tz_localize(None))
    with pytest.raises(DataError, match='sorted'): I.rvol(d.volume.iloc[::-1])
    with pytest.raises(DataError, match='pandas'): I.rvol(d.volume.to_numpy())


# ---------------------------------------------------------------------------------------------------------------
# the fast kernels behind the live path, against straightforward references

def test_rolling_extremes_equal_a_plain_window_scan():
    "van Herk / Gil-Werman blocks give the extreme of each window of valid values (ties: the later value), signed zeros and infinities included."
    from smallcap.indicators_nb import kernels
    K = kernels()
    rng = np.random.default_rng(7)
    for it in range(150):
        x = np.round(rng.normal(0, 1, (int(rng.integers(1, 5)), int(rng.integers(0, 260)))).cumsum(1), int(rng.integers(0, 2)))
        x[rng.random(x.shape) < rng.random() * 0.5] = np.nan
        if it % 3 == 0: x[rng.random(x.shape) < 0.2] = 0.0; x[rng.random(x.shape) < 0.2] = -0.0
        if it % 5 == 0: x[rng.random(x.shape) < 0.05] = np.inf; x[rng.random(x.shape) < 0.05] = -np.inf
        n = int(rng.integers(1, 30))
        for f, how in ((K.rolling_max_nb, 'max'), (K.rolling_min_nb, 'min')):
            got = f(x, n)
            pick = max if how == 'max' else min
            for r in range(x.shape[0]):
                ok = ~np.isnan(x[r])
                v = x[r][ok]
                ref = np.array([pick(v[i - n + 1:i + 1][::-1]) if i >= n - 1 else np.nan for i in range(len(v))])   # [::-1]: ties go to the later
                assert np.isnan(got[r][~ok]).all() and np.array_equal(got[r][ok], ref, equal_nan=True)
                assert np.array_equal(np.signbit(got[r][ok]), np.signbit(ref))
        hi, lo = np.where(np.isnan(x), np.nan, x + 1), x
        up, dn = K.channel_nb(hi, lo, n, max(1, n // 2))
        assert np.array_equal(up, K.rolling_max_nb(hi, n), equal_nan=True) and np.array_equal(dn, K.rolling_min_nb(lo, max(1, n // 2)), equal_nan=True)


def test_fused_kernels_equal_their_compositions(sp):
    "stoch_self_nb, bands_nb and ffill_return_nb give the numbers of the kernels (and pandas steps) they fuse."
    from smallcap.indicators_nb import kernels
    K = kernels()
    c = np.ascontiguousarray(sp['close'].to_numpy().T)
    r = K.rsi_nb(c, 14, True)
    for n in (3, 14):
        assert np.array_equal(K.stoch_self_nb(r, n, 1e-9), K.stoch_raw_nb(r, K.rolling_max_nb(r, n), K.rolling_min_nb(r, n), 1e-9), equal_nan=True)
    for a, b in zip(K.bands_nb(c, 20, 2.0, 0), K.bbands_nb(c, 20, 2.0, 0)): assert np.array_equal(a, b, equal_nan=True)
    f = sp['close'].ffill()
    assert np.array_equal(K.ffill_return_nb(c, 30), (f / f.shift(30) - 1).to_numpy().T, equal_nan=True)
    sr = I.stochrsi(sp['close'], 10, 7)                                          # the indicator on the fused kernel
    raw = K.stoch_raw_nb(K.rsi_nb(c, 7, True), *(f(K.rsi_nb(c, 7, True), 10) for f in (K.rolling_max_nb, K.rolling_min_nb)), 1e-9)
    assert np.array_equal(arr(sr.k), K.sma_nb(raw, 3).T, equal_nan=True)


def test_session_labels_agree_with_the_calendar_table():
    "One vectorised labelling for the indicators, strategies and engines: checked time by time against trading_sessions."
    from smallcap.data.calendar import session_labels, session_of
    rng = np.random.default_rng(3)
    times = pd.DatetimeIndex(pd.Timestamp('2025-03-01', tz='UTC') + pd.to_timedelta(rng.integers(0, 300 * 1440, 3000), 'min'))
    times = times.append(pd.DatetimeIndex(['2025-03-09 06:59Z', '2025-03-09 07:00Z', '2025-11-02 05:30Z', '2025-11-28 17:59Z', '2025-11-28 18:00Z']))
    lab = session_labels(times)
    s = trading_sessions(times.min().tz_convert('America/New_York').date(), times.max().tz_convert('America/New_York').date())
    by_date = {d: row for d, row in zip(s['date'], s.itertuples())}
    for t, day, code, minute in zip(times, lab.day, lab.code, lab.minute):
        row = by_date.get(t.tz_convert('America/New_York').date())
        if row is None:
            assert (day, code) == (-1, -1); continue
        assert lab.dates[day] == row.date
        want = 0 if row.pre_open <= t < row.open else 1 if row.open <= t < row.close else 2 if row.close <= t < row.post_close else -1
        assert code == want and minute == (t - row.open) // pd.Timedelta('1min')
    assert session_of(times).tolist() == [{0: 'premarket', 1: 'regular', 2: 'after-hours'}.get(c) for c in lab.code]
    day, code, off, dates = I._sessions(times.sort_values())
    assert ((day >= 0) == (code >= 0)).all()
