"""Every library strategy and combinator is causal and pure on synthetic data, at many cut points."""
import numpy as np
import pytest

from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, generate
from smallcap.strategy.base import Signals, check_causal, first_difference, get_strategy, list_strategies

LIBRARY = ['sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go', 'vwap_reclaim']


@pytest.fixture(scope='module')
def panel():
    mk = generate(SynthConfig(n_symbols=8, n_sessions=10, seed=21, edge='gap_and_go'))
    return Panel.from_bars(mk.bars.drop(columns='timeframe'))


def test_registry_holds_the_library():
    assert set(LIBRARY) | {'arbiter', 'ensemble'} <= set(list_strategies())


@pytest.mark.slow
@pytest.mark.parametrize('name', LIBRARY)
def test_library_strategy_is_causal(panel, name):
    for strat in [get_strategy(name)] + get_strategy(name).combinations()[:2]:
        r = check_causal(strat, panel, cuts=60)
        assert r.ok, str(r)
        assert len(r.cuts) >= 30


@pytest.mark.slow
@pytest.mark.parametrize('spec', [dict(name='arbiter', members=('gap_and_go', 'orb', 'vwap_reclaim')),
                                  dict(name='ensemble', members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.5)])
def test_combinators_are_causal(panel, spec):
    s = get_strategy(spec.pop('name'), **spec)
    assert check_causal(s, panel, cuts=40).ok


def test_check_can_fail(panel):
    "A strategy that peeks one bar ahead is caught, with the bar named."
    from dataclasses import dataclass
    from typing import ClassVar
    from smallcap.strategy.base import Signals, Strategy

    @dataclass(frozen=True)
    class Peek(Strategy):
        name: ClassVar[str] = 'peek'
        def signals(self, bars):
            z = (bars.close - bars.close.mean()) / bars.close.std()        # full-sample normalisation: look-ahead
            return Signals.from_frames(bars.close, entries_long=z > 1)
    r = check_causal(Peek(), panel, cuts=20)
    assert not r.ok and 'LOOK-AHEAD' in str(r)


def test_signals_have_the_panel_shape(panel):
    for n in LIBRARY:
        s = get_strategy(n).signals(panel)
        assert s.entries_long.shape == panel.close.shape and s.index.equals(panel.index)
        assert not (s.entries_long & s.exits_long).to_numpy().all()


# ---------------------------------------------------------------------------------------------------------------
# The fast path (NumPy arrays, numba kernels, blocks of symbols) against a straightforward pandas formulation of every
# library strategy, written the obvious way on DataFrames with the public indicators. Signals must be identical.

import pandas as pd

from smallcap import indicators as I
from smallcap.data.calendar import trading_sessions


def ref_clock(index: pd.DatetimeIndex) -> pd.DataFrame:
    "Per bar: New York trading day number, session code and minutes since the open, from the calendar table."
    ny = index.tz_convert('America/New_York')
    days = ny.normalize().tz_localize(None)
    s = trading_sessions(days.min(), days.max())
    pos = pd.DatetimeIndex(pd.to_datetime(s['date'])).get_indexer(days)
    ok = pos >= 0
    at = np.where(ok, pos, 0)
    v = index.as_unit('ns').asi8
    col = lambda c: pd.DatetimeIndex(s[c]).as_unit('ns').asi8[at]
    pre, op, cl, post = col('pre_open'), col('open'), col('close'), col('post_close')
    code = np.select([ok & (v >= pre) & (v < op), ok & (v >= op) & (v < cl), ok & (v >= cl) & (v < post)], [0, 1, 2], -1)
    return pd.DataFrame({'day': np.where(ok, pos, -1), 'session': code, 'minute': (v - op) // 60_000_000_000}, index=index)


def up(a, b):
    return (a > b) & (a.shift(1) < (b.shift(1) if isinstance(b, pd.DataFrame) else b))


def down(a, b):
    return (a < b) & (a.shift(1) > (b.shift(1) if isinstance(b, pd.DataFrame) else b))


def rows(mask, like):
    return pd.DataFrame(np.repeat(np.asarray(mask, bool)[:, None], like.shape[1], 1), index=like.index, columns=like.columns)


def first_per_day(mask, day):
    return mask & (mask.astype(int).groupby(day).cumsum() == 1)


def ref_signals(s, bars) -> Signals:
    "The strategy's signals, computed the plain pandas way."
    c, n = bars.close, s.name
    sig = lambda **kw: Signals.from_frames(c, **kw)
    if n == 'sma_cross':
        f, sl = getattr(I, s.kind)(c, s.fast), getattr(I, s.kind)(c, s.slow)
        return sig(entries_long=up(f, sl), exits_long=down(f, sl), **({'entries_short': down(f, sl), 'exits_short': up(f, sl)} if s.short else {}))
    if n == 'rsi_reversion':
        r = I.rsi(c, s.length)
        kw = dict(entries_long=down(r, s.lower), exits_long=up(r, s.exit_level))
        if s.short: kw.update(entries_short=up(r, s.upper), exits_short=down(r, s.exit_level))
        return sig(**kw)
    if n == 'bollinger_reversion':
        b = I.bbands(c, s.length, s.std)
        el = down(c, b.lower)
        kw = dict(entries_long=el, exits_long=up(c, b.mid), stop=(c - s.stop_width * (b.mid - b.lower)).where(el))
        if s.short: kw.update(entries_short=up(c, b.upper), exits_short=down(c, b.mid))
        return sig(**kw)
    if n == 'stochrsi_ema':
        k, e = I.stochrsi(c, s.length, s.length).k, I.ema(c, s.trend)
        return sig(entries_long=up(k, s.lower) & (c > e), exits_long=down(k, s.upper) | down(c, e))
    if n == 'dual_momentum':
        f = c.ffill()
        mom = f / f.shift(s.lookback) - 1
        hold = (mom.rank(axis=1, ascending=False, method='first') <= s.top) & (mom > s.threshold)
        prev = hold.shift(1, fill_value=False)
        return sig(entries_long=hold & ~prev, exits_long=~hold & prev)
    if n == 'atr_breakout':
        a = I.atr(bars.high, bars.low, c, s.atr_length)
        hi = I.donchian(bars.high, bars.low, s.length).upper.shift(1)
        lo = I.donchian(bars.high, bars.low, s.exit_length).lower.shift(1)
        e = (c > hi + s.k * a) & ~(c.shift(1) > hi.shift(1) + s.k * a.shift(1))
        return sig(entries_long=e, exits_long=c < lo, stop=(c - s.stop_atr * a).where(e))
    clk = ref_clock(bars.index)
    day, reg = clk.day.to_numpy(), (clk.session == 1).to_numpy()
    if n == 'orb':
        inside = rows(reg & (clk.minute < s.minutes), c)
        hi = bars.high.where(inside).groupby(day).cummax().groupby(day).ffill()
        lo = bars.low.where(inside).groupby(day).cummin().groupby(day).ffill()
        after = rows(reg & (clk.minute >= s.minutes), c)
        hi, lo = hi.where(after), lo.where(after)
        ok = c > hi
        if s.gap_min > 0: ok &= I.gap_pct(bars.open, c) >= 100 * s.gap_min
        e = first_per_day(ok & rows(clk.minute < s.exit_minute, c), day)
        x = rows(reg & (clk.minute >= s.exit_minute), c) & c.notna()
        return sig(entries_long=e, exits_long=x, stop=lo.where(e))
    if n == 'gap_and_go':
        rv = I.rvol(bars.volume, lookback=s.rvol_days, session='premarket', min_sessions=s.rvol_days)
        rv_pre = rv.where(rows(clk.session == 0, c)).groupby(day).ffill()
        regular = rows(reg, c)
        ok = regular & (I.gap_pct(bars.open, c) >= 100 * s.gap_min) & (rv_pre.shift(1) >= s.rvol_min) & c.notna()
        e = first_per_day(ok & rows(clk.minute < s.hold, c), day)
        x = regular & rows(clk.minute >= s.hold, c) & c.notna()
        return sig(entries_long=e, exits_long=x, stop=I.premarket_range(bars.high, bars.low).low.where(e))
    if n == 'vwap_reclaim':
        regular = rows(reg, c)
        vw = I.vwap(bars.high, bars.low, c, bars.volume, session='regular', bar_vwap=bars.vwap)
        below = (c < vw) & regular
        streak = below.apply(lambda col: col.astype(int).groupby([(~col).cumsum().to_numpy(), day]).cumsum())   # run of bars below VWAP, within the day
        e = (c > vw) & regular & (streak.groupby(day).shift(1, fill_value=0) >= s.below_bars)
        crossed = (c < vw) & (c.groupby(day).shift(1) > vw.groupby(day).shift(1))                     # a cross below today's VWAP
        x = (crossed & regular) | (rows(clk.minute >= s.exit_minute, c) & regular & c.notna())
        return sig(entries_long=e, exits_long=x, stop=I.day_range(bars.high, bars.low).low.where(e))
    raise KeyError(n)


def live_panel(n_symbols: int, window: int, seed: int, gaps: float) -> Panel:
    "A round-the-clock minute grid (overnight and weekend bars included) ending mid-session, with missing bars and a late listing."
    rng = np.random.default_rng(seed)
    idx = pd.date_range(end=pd.Timestamp('2026-03-03 11:00', tz='America/New_York').tz_convert('UTC'), periods=window, freq='1min')
    cols = [f"S{i:03d}" for i in range(n_symbols)]
    c = np.round(np.exp(np.log(rng.uniform(1, 20, n_symbols)) + np.cumsum(rng.normal(0, 0.004, (window, n_symbols)), 0)), 2).clip(0.01)
    spread = np.round(np.abs(rng.normal(0, 0.01, (window, n_symbols))), 2)
    miss = rng.random((window, n_symbols)) < gaps
    miss[: window // 3, :3] = True
    f = lambda a: pd.DataFrame(np.where(miss, np.nan, a), index=idx, columns=cols)
    v = np.where(miss, 0.0, rng.integers(0, 50, (window, n_symbols)) * 100.0)
    return Panel(f(c), f(c + spread), f((c - spread).clip(0.01)), f(c), pd.DataFrame(v, index=idx, columns=cols), vwap=f(c))


def configurations(name: str) -> list:
    cls = type(get_strategy(name))
    combos = cls.combinations()
    extra = {'sma_cross': [dict(kind='ema', short=True), dict(fast=3, slow=7, short=True)],
             'rsi_reversion': [dict(short=True), dict(length=5, lower=35.0, upper=65.0, short=True)],
             'bollinger_reversion': [dict(short=True, length=10, std=1.0)], 'stochrsi_ema': [dict(trend=20, length=5)],
             'dual_momentum': [dict(lookback=5, top=40, threshold=-0.01), dict(lookback=1, top=1)],
             'atr_breakout': [dict(length=3, k=0.0, exit_length=2, atr_length=3)],
             'orb': [dict(minutes=1, exit_minute=2), dict(minutes=30, gap_min=0.02, exit_minute=385)],
             'gap_and_go': [dict(rvol_days=3), dict(rvol_days=1, gap_min=0.0, rvol_min=0.0, hold=5)],
             'vwap_reclaim': [dict(below_bars=1, exit_minute=30), dict(below_bars=5)]}[name]
    return [get_strategy(name), combos[0], combos[len(combos) // 2], combos[-1]] + [get_strategy(name, **kw) for kw in extra]


@pytest.fixture(scope='module')
def panels(panel):
    return {'synth': panel, 'synth_cut': panel.upto(700), 'live': live_panel(60, 1500, 4, 0.15), 'live_short': live_panel(30, 3, 5, 0.2)}


@pytest.mark.parametrize('name', LIBRARY)
def test_fast_path_equals_the_pandas_reference(panels, name, monkeypatch):
    "Every configuration tried, on synthetic sessions and a gappy round-the-clock panel, in one block and in many."
    import smallcap.strategy.library as lib
    for s in configurations(name):
        for key, bars in panels.items():
            ref = ref_signals(s, bars)
            for cells in (lib._BLOCK_CELLS, 3_000):                     # the default blocks, and blocks of a few symbols
                monkeypatch.setattr(lib, '_BLOCK_CELLS', cells)
                got = s.signals(bars)
                assert got.equals(ref), (s.id, key, cells, first_difference(got, ref))
                assert all((getattr(got, f) is None) == (getattr(ref, f) is None) for f in ('size', 'limit', 'stop')), (s.id, key)


def test_session_clock_is_the_calendar_table():
    "session_clock (now a view of calendar.session_labels) equals the plain calendar lookup, weekends and overnight included."
    from smallcap.strategy.library import session_clock
    rng = np.random.default_rng(0)
    for k in range(12):
        start = pd.Timestamp('2025-01-01', tz='UTC') + pd.Timedelta(minutes=int(rng.integers(0, 2 * 365 * 1440)))
        idx = pd.date_range(start, periods=int(rng.integers(1, 8000)), freq=f"{int(rng.choice([1, 7, 61]))}min")
        pd.testing.assert_frame_equal(session_clock(idx).drop(columns='close_minute'), ref_clock(idx))
