"""smallcap.indicators.ta and its verdicts: native kernels against pandas-ta through ta(); panel results against pandas-ta
run symbol by symbol; the committed verdict table regenerated and compared; a planted look-ahead indicator named by
check_lookahead; and report.chart rendered in headless Chromium with the expected traces.

Where a native kernel's definition differs from pandas-ta's in detail (tests/test_indicators.py documents each), the
comparison says how: adx after a burn-in (seeding), bbands/zscore outside flat windows (pandas-ta: rounding noise),
obv from the second bar (ours 0 at the first, pandas-ta NaN; from there they are equal), rsi where there were gains or
losses.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from smallcap.indicators_ta import (_NATIVE, NUMBA_WINDOWS, _catalog, generate_table, list_indicators, stack_gap, ta, table_source, sample_bars,
                                    verdict, verdict_table)

warnings.filterwarnings('ignore', module='pandas_ta')
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::FutureWarning', 'ignore::RuntimeWarning')


def panel(T: int = 1200, seeds=(1, 2, 3, 4), prices=(3.0, 14.0, 0.7, 6.0), late: int = 0):
    from smallcap.data.panel import Panel
    bs = [sample_bars(T, s, p) for s, p in zip(seeds, prices)]
    P = Panel(**{f: pd.DataFrame({f'S{i}': b[f] for i, b in enumerate(bs)}) for f in ('open', 'high', 'low', 'close', 'volume')})
    if late: P = P.map(lambda df: df.assign(S1=df['S1'].where(np.arange(len(df)) >= late)))
    return P


def outs(r) -> list:
    return [r] if isinstance(r, (pd.Series, pd.DataFrame)) else list(r)


def flat(x: pd.DataFrame, n: int) -> np.ndarray:
    return np.asarray(x.rolling(n).max() == x.rolling(n).min())


# where the definitions differ: (start bar, mask of bars to compare) per native indicator and defaults
def _where(name: str, P) -> tuple[int, np.ndarray | None]:
    if name == 'adx': return 600, None
    if name == 'bbands': return 0, ~flat(P.close, 5)
    if name == 'zscore': return 0, ~flat(P.close, 30)
    if name == 'obv': return 1, None
    if name in ('rsi', 'stochrsi'): return 100, ~flat(P.close, 60)   # a flat start: ours 50, pandas-ta NaN
    return 0, None


@pytest.mark.parametrize('name', sorted(_NATIVE))
def test_native_kernel_equals_pandas_ta_through_ta(name):
    P = panel()
    ours, theirs = ta(name, P), ta(name, P, engine='per-symbol')
    assert [type(o) for o in outs(ours)] == [pd.DataFrame] * len(outs(ours))
    assert getattr(ours, 'names', lambda: None)() == getattr(theirs, 'names', lambda: None)()           # the same field names
    start, where = _where(name, P)
    for o, t in zip(outs(ours), outs(theirs)):
        a, b = o.to_numpy()[start:], t.to_numpy()[start:]
        if where is not None: a, b = a[where[start:]], b[where[start:]]
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)


@pytest.mark.parametrize('name,params', [('ema', {'length': 7, 'presma': False}), ('macd', {'fast': 5, 'slow': 13, 'signal': 4}),
                                         ('bbands', {'length': 20, 'lower_std': 2.5, 'upper_std': 2.5}), ('kc', {'mamode': 'sma', 'length': 10}),
                                         ('stoch', {'k': 9, 'd': 4, 'smooth_k': 2}), ('roc', {'length': 3, 'scalar': 1})])
def test_native_kernel_equals_pandas_ta_with_other_parameters(name, params):
    P = panel()
    start, where = _where(name, P)
    if name == 'bbands': where = ~flat(P.close, 20)
    for o, t in zip(outs(ta(name, P, **params)), outs(ta(name, P, engine='per-symbol', **params))):
        a, b = o.to_numpy()[start:], t.to_numpy()[start:]
        if where is not None: a, b = a[where[start:]], b[where[start:]]
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_parameters_a_kernel_does_not_take_fall_back_to_pandas_ta():
    P = panel(300)
    a, b = ta('sma', P, length=5, offset=2), ta('sma', P, length=5, engine='per-symbol', offset=2)
    pd.testing.assert_frame_equal(a, b)
    assert np.isnan(a.iloc[:6]).all().all() and not np.isnan(a.iloc[6]).any()


SAMPLE = ['cci', 'willr', 'aroon', 'supertrend', 'psar', 'kama', 'mfi', 'vwma', 'squeeze', 'ichimoku', 'ha', 'cmf', 'chop', 'tsi', 'kst']


@pytest.mark.parametrize('name', SAMPLE)
def test_panel_equals_pandas_ta_symbol_by_symbol(name):
    "ta() on a panel (stacked or per symbol, as measured) against plain pandas-ta called on each symbol's own columns."
    import pandas_ta
    P = panel(900, late=120)                                                   # S1 lists at bar 120: leading NaN
    got = ta(name, P)
    fn = getattr(pandas_ta, name)
    import inspect
    ps = inspect.signature(fn).parameters
    need = [k for k in ('open_', 'high', 'low', 'close', 'volume') if k in ps and ps[k].default is inspect.Parameter.empty]
    kw = {'talib': False} if 'talib' in ps else {}
    for s in P.symbols:
        ref = fn(**{k: getattr(P, 'open' if k == 'open_' else k)[s] for k in need}, **kw)
        if isinstance(ref, tuple): ref = ref[0]
        ref = ref.to_frame() if isinstance(ref, pd.Series) else ref
        for o, c in zip(outs(got), ref.columns):
            np.testing.assert_allclose(o[s].to_numpy(), ref[c].to_numpy(float), rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=f"{name} {s} {c}")


def test_series_bars_frame_and_panel_column_agree():
    P = panel(500)
    b = pd.DataFrame({f: getattr(P, f)['S2'] for f in ('open', 'high', 'low', 'close', 'volume')})
    for name in ('cci', 'rsi', 'supertrend'):
        for x, y in zip(outs(ta(name, b)), outs(ta(name, P))): np.testing.assert_allclose(x.to_numpy(), y['S2'].to_numpy(), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(ta('ema', P.close['S2'], length=5).to_numpy(), ta('ema', P, length=5)['S2'].to_numpy(), equal_nan=True)
    np.testing.assert_allclose(ta('rsi', P, close=P.open)['S0'].to_numpy(), ta('rsi', P.open)['S0'].to_numpy(), equal_nan=True)   # a series input overridden


def test_bad_inputs_get_clear_errors():
    from smallcap.core import ConfigError, DataError
    P = panel(200)
    with pytest.raises(ConfigError, match="unknown pandas-ta indicator 'macdd'; did you mean macd"): ta('macdd', P)
    with pytest.raises(ConfigError, match='has no parameter lenght'): ta('sma', P, lenght=3)
    with pytest.raises(DataError, match='needs high, low, close'): ta('atr', P.close)
    with pytest.raises(DataError, match="not aligned"): ta('rsi', P, close=P.close.iloc[:50])
    with pytest.raises(ConfigError, match='takes no series'): ta('rsi', P, high=P.high)
    with pytest.raises(DataError, match='expected a Panel'): ta('rsi', [1, 2, 3])


def test_obv_equals_pandas_ta_and_a_head_cut_only_shifts_it():
    "OBV's level is where its history starts: ours (0 at the first bar) and pandas-ta's (NaN there) agree from the second bar; a full and a cut history differ by one constant per symbol."
    P = panel(800)
    ours, theirs = ta('obv', P).to_numpy(), ta('obv', P, engine='per-symbol').to_numpy()
    np.testing.assert_array_equal(ours[1:], theirs[1:])
    cut = ta('obv', P.map(lambda df: df.iloc[300:]))
    d2 = ours[300:] - cut.to_numpy()
    np.testing.assert_array_equal(d2, np.broadcast_to(d2[0], d2.shape))
    assert (np.abs(d2[0]) > 0).any()                                                                  # a real shift: the level is not causal


@pytest.mark.parametrize('name', sorted(NUMBA_WINDOWS))
def test_numba_windows_give_pandas_tas_values(name):
    "Indicators whose rolling windows run on pandas' numba engine when stacked equal plain pandas-ta (another summation order: 1e-11 relative)."
    import pandas_ta
    from smallcap.indicators_ta import signature
    P = panel(900, late=120)
    got = ta(name, P, engine='stacked')
    req = signature(name)[0]
    for s in P.symbols:
        ref = getattr(pandas_ta, name)(**{k: getattr(P, k)[s] for k in req}, talib=False)
        ref = ref.to_frame() if isinstance(ref, pd.Series) else ref
        for o, c in zip(outs(got), ref.columns):
            scale = np.nanmax(np.abs(ref[c].to_numpy(float)))
            np.testing.assert_allclose(o[s].to_numpy(), ref[c].to_numpy(float), rtol=1e-10, atol=1e-10 * scale, equal_nan=True, err_msg=f"{name} {s} {c}")


def test_stacking_is_measured_not_assumed():
    assert stack_gap('sma') > 0 and stack_gap('cci') > 0
    assert stack_gap('ema') == 0 and stack_gap('obv') == 0 and stack_gap('tos_stdevall') == 0      # state crosses the gap / whole-sample


def test_verdict_table_regenerates_exactly():
    "The committed table is what the measurement gives now (about 25 s for every indicator)."
    fresh = generate_table()
    committed = verdict_table()
    assert list(fresh.index) == list(_catalog()) == list(committed.index)
    assert table_source(fresh) == table_source(committed), fresh.compare(committed.astype(fresh.dtypes.to_dict()))


def test_table_finds_the_known_behaviours():
    t = verdict_table()
    assert {'dpo', 'ichimoku', 'zigzag'} <= set(t.index[t.verdict == 'look-ahead'])
    assert {'psar', 'kama'} <= set(t.index[t.verdict == 'history-dependent'])
    for n in _NATIVE:
        v = verdict(n)
        assert v.engine == 'native'
        want = {'obv': 'causal-offset',                 # a running sum: its level is its start's, its changes are causal
                'supertrend': 'history-dependent'}.get(n, 'causal')   # pandas-ta's definition bit for bit: its ratchet never forgets (chop)
        assert v.verdict == want, (n, v)
    assert t.at['supertrend', 'native_verdict'] == t.at['supertrend', 'verdict']
    assert {'obv', 'ad', 'pvt'} <= set(t.index[t.verdict == 'causal-offset']) and t.at['pvi', 'verdict'] == 'history-dependent'
    assert (t.loc[list(_NATIVE), 'native_verdict'] != '').all()
    L = list_indicators()
    assert len(L) == len(_catalog()) and set(L.engine) == {'native', 'stacked', 'per-symbol'}


def test_check_lookahead_names_a_planted_look_ahead_indicator():
    from dataclasses import dataclass
    from typing import ClassVar
    from smallcap.backtest.lookahead import check_lookahead
    from smallcap.core import LookAheadError
    from smallcap.data.synth import SynthConfig, generate
    from smallcap.data.panel import Panel
    from smallcap.strategy.base import Signals, Strategy
    P = Panel.from_bars(generate(SynthConfig(n_symbols=3, n_sessions=2, seed=11)).bars.drop(columns='timeframe'))

    @dataclass(frozen=True)
    class Planted(Strategy):
        name: ClassVar[str] = '_planted_zigzag'
        def signals(self, bars):
            z = ta('zigzag', bars)
            r = ta('rsi', bars, length=9)
            return Signals.from_frames(bars.close, entries_long=(r < 30) & (z.zigzagd.fillna(0) > 0))

    rep = check_lookahead(Planted(), P, cuts=12, heads=0)
    assert not rep.ok and rep.lookahead_indicators == ('zigzag',)
    with pytest.raises(LookAheadError, match='zigzag'): rep.raise_for_status()
    assert [c for c, *_ in rep.indicators] == ['zigzag', 'rsi(length=9)']


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    from smallcap.data.synth import SynthConfig, build_store
    d = tmp_path_factory.mktemp('chart')
    return build_store(d / 'synth.duckdb', SynthConfig(n_symbols=4, n_sessions=4, seed=3))


def test_chart_on_the_store_renders_in_chromium(store, tmp_path):
    from browser import load
    from smallcap.backtest.core import backtest
    from smallcap.data.calendar import to_ny
    from smallcap.data.panel import Panel
    from smallcap.report import chart
    st = store.status()
    halted = st[st.kind == 'halt']
    b = store.bars(session=None)
    have = set(zip(b.symbol, to_ny(pd.DatetimeIndex(b.ts)).date))                  # (symbol, day) with bars
    pick = [(s_, d_) for s_, d_ in zip(halted.symbol, to_ny(pd.DatetimeIndex(halted.ts)).date) if (s_, d_) in have]
    sym, d = pick[0] if pick else (b.symbol.iloc[-1], to_ny(pd.Timestamp(b.ts.iloc[-1])).date())
    day = str(d)
    P = Panel.from_bars(b.drop(columns=[c for c in ('timeframe',) if c in b.columns]))
    res = backtest('sma_cross', P)
    fig = chart(store, sym, day, indicators=['rsi', ('bbands', {'length': 20}), 'macd'], strategy='sma_cross', result=res)
    names = [t.name for t in fig.data]
    base = [sym, 'volume', 'VWAP', 'premarket high', 'premarket low']
    assert names[:5] == base and any(n.startswith('prior close') for n in names)
    ind = [n for n in names if n == 'rsi' or n.startswith(('bbands.', 'macd.'))]
    assert sorted(ind) == sorted(['rsi', 'bbands.bbl', 'bbands.bbm', 'bbands.bbu', 'bbands.bbb', 'bbands.bbp', 'macd.macd', 'macd.macdh', 'macd.macds'])
    if pick: assert any(getattr(s, 'fillcolor', None) for s in fig.layout.shapes)   # the halt is shaded

    class Halted:                                                              # the store with a planted 11:00-11:10 ET halt on the day
        def bars(self, *a, **k): return store.bars(*a, **k)
        def status(self, *a, **k):
            t = pd.Timestamp(f"{day} 11:00", tz='America/New_York').tz_convert('UTC')
            return pd.DataFrame({'symbol': [sym, sym], 'ts': [t, t + pd.Timedelta(minutes=10)], 'kind': ['halt', 'resume']})
    shapes = chart(Halted(), sym, day).layout.shapes
    red = [x for x in shapes if x.fillcolor == '#d73027']
    assert red and all(pd.Timestamp(x.x0) == pd.Timestamp(f"{day} 11:00") and pd.Timestamp(x.x1) == pd.Timestamp(f"{day} 11:10") for x in red)   # one per pane
    path = tmp_path / 'chart.html'
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    n = len(fig.data)
    r = load(path, selectors=('.plotly-graph-div', 'g.trace', 'g.candlestick'),
             values={'traces': "document.querySelector('.plotly-graph-div').data.length",
                     'drawn': "document.querySelectorAll('.plotly-graph-div g.trace').length"})
    assert r.severe == [] and r.external_requests == [], (r.severe, r.external_requests)
    assert r.counts['.plotly-graph-div'] == 1 and r.values['traces'] == n
    assert r.values['drawn'] >= n - 2, (r.values, n)                            # every trace drawn (a trace with no point on the day may draw nothing)
