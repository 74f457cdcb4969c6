"""check_lookahead: planted peekers are caught at the bar they must be, every library strategy passes, one-bar peeks are found."""
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_py
from smallcap.core import LookAheadError
from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, generate
from smallcap.strategy.base import SIGNAL_BOOLS, SIGNAL_FLOATS, PurityError, Signals, Strategy, check_causal, get_strategy, list_strategies, param
from smallcap.strategy.library import rows, session_clock
from smallcap.backtest.lookahead import LookaheadReport, check_lookahead

MEMBERS = {'arbiter': [dict(members=('gap_and_go', 'orb', 'vwap_reclaim')), dict(members=('sma_cross', 'atr_breakout'))],
           'ensemble': [dict(members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.5),
                        dict(members=('orb', 'vwap_reclaim'), weights=(2.0, 1.0), threshold=0.34)]}
LIBRARY = [n for n in list_strategies() if not n.startswith('_')]


@pytest.fixture(scope='module')
def panel():
    "8 symbols x 5 sessions of synthetic extended-hours minute bars (3,530 bars)."
    mk = generate(SynthConfig(n_symbols=8, n_sessions=5, seed=21, edge='gap_and_go'))
    return Panel.from_bars(mk.bars.drop(columns='timeframe'))


def configs(name):
    return [get_strategy(name, **kw) for kw in MEMBERS[name]] if name in MEMBERS else [get_strategy(name)] + get_strategy(name).combinations()[1:2]


# ---------------------------------------------------------------- the library passes

def test_the_library_is_all_there():
    assert {'sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb',
            'gap_and_go', 'vwap_reclaim', 'arbiter', 'ensemble'} <= set(LIBRARY)


@pytest.mark.parametrize('name', LIBRARY)
def test_library_strategy_passes(panel, name):
    for s in configs(name):
        r = check_lookahead(s, panel)
        assert r.ok, str(r)
        assert len(r.cuts) == 50 and r.checked == 50 and r.first is None and r.purity is None and r.error is None
        assert set(r.cut_kinds) <= {'session', 'signal', 'spread'} and min(r.cuts) > min(s.warmup_bars(panel.index), (len(panel) - 1) // 2)
        assert len(r.heads) == 3 and not r.head_disagreements                  # and the start of the history does not matter
        r.raise_for_status()


# ---------------------------------------------------------------- planted peekers

@dataclass(frozen=True)
class NextClose(Strategy):
    "Enter when the next close is higher: close.shift(-1)."
    name: ClassVar[str] = '_next_close'
    def signals(self, bars):
        return Signals.from_frames(bars.close, entries_long=bars.close.shift(-1) > bars.close)


@dataclass(frozen=True)
class CentredLow(Strategy):
    "A stop at the low of a centred 5-bar window: reads 2 bars ahead."
    name: ClassVar[str] = '_centred_low'
    @property
    def warmup(self): return 5
    def signals(self, bars):
        return Signals.from_frames(bars.close, entries_long=bars.close > bars.open, stop=bars.low.rolling(5, center=True).min())


@dataclass(frozen=True)
class Normalised(Strategy):
    "Size from a z-score against the whole sample's mean and standard deviation."
    name: ClassVar[str] = '_normalised'
    def signals(self, bars):
        z = (bars.close - bars.close.mean()) / bars.close.std()
        return Signals.from_frames(bars.close, entries_long=bars.close > bars.open, size=1 / (1 + np.exp(z)))


@dataclass(frozen=True)
class Dpo(Strategy):
    "pandas-ta's dpo with its default centered=True: reads int(20/2)+1 = 11 bars ahead."
    name: ClassVar[str] = '_dpo'
    @property
    def warmup(self): return 30
    def signals(self, bars):
        import pandas_ta as ta
        d = bars.close.ffill().apply(lambda s: ta.dpo(s, length=20, talib=False))
        return Signals.from_frames(bars.close, entries_long=d > 0)


@dataclass(frozen=True)
class DayLow(Strategy):
    "A stop at the day's low from groupby(day).transform('min'): known from the day's first bar."
    name: ClassVar[str] = '_day_low'
    def signals(self, bars):
        day = bars.index.tz_convert('America/New_York').date
        return Signals.from_frames(bars.close, entries_long=bars.close > bars.open, stop=bars.low.groupby(day).transform('min'))


@dataclass(frozen=True)
class DayHigh(Strategy):
    "Enter at the day's high, from groupby(day).transform('max'): picks the top."
    name: ClassVar[str] = '_day_high'
    def signals(self, bars):
        day = bars.index.tz_convert('America/New_York').date
        return Signals.from_frames(bars.close, entries_long=bars.high >= bars.high.groupby(day).transform('max'))


@dataclass(frozen=True)
class EarlyRange(Strategy):
    "Buy the first regular bar with a stop at the low of the first five minutes (not yet known at 09:30)."
    name: ClassVar[str] = '_early_range'
    def signals(self, bars):
        clk = session_clock(bars.index)
        low5 = bars.low.where(rows((clk.session == 1) & (clk.minute < 5), bars.close)).groupby(clk.day.to_numpy()).transform('min')
        e = rows((clk.session == 1) & (clk.minute == 0), bars.close) & bars.close.notna()
        return Signals.from_frames(bars.close, entries_long=e, stop=low5.where(e))


def earliest(r, per_cut):
    "(bar position, cut) of the earliest change over the report's cuts, given each cut's first changed bar (or None)."
    found = [(b, c) for c in r.cuts if (b := per_cut(c)) is not None]
    return min(found) if found else None


def blanked(set_, h):
    "Per cut c, the first bar in c-h..c-1 where a signal that a cut blanks is set in the full history."
    any_set = set_.any(axis=1)
    return lambda c: next((t for t in range(max(0, c - h), c) if any_set[t]), None)


def assert_first(r, panel, want, signal, symbol=None):
    assert not r.ok and want is not None, str(r)
    bar, cut = want
    assert (panel.index.get_loc(r.first_bar), r.cut) == (bar, cut), str(r)
    assert r.signal == signal and r.cut_time == panel.index[cut]
    if symbol is not None: assert r.symbol == symbol
    assert f"{r.signal} of {r.symbol}" in str(r) and 'LOOK-AHEAD' in str(r)
    with pytest.raises(LookAheadError, match='LOOK-AHEAD'): r.raise_for_status()


@pytest.mark.parametrize('seed', [None, 3])
def test_negative_shift_first_bar_is_just_before_the_cut(panel, seed):
    r = check_lookahead(NextClose(), panel, seed=seed)
    full = NextClose().signals(panel).entries_long.to_numpy()
    assert_first(r, panel, earliest(r, blanked(full, 1)), 'entries_long', panel.symbols[int(np.argmax(full[r.cut - 1]))])
    assert panel.index.get_loc(r.first_bar) == r.cut - 1 and r.bars_ahead == 1


def test_centred_window(panel):
    r = check_lookahead(CentredLow(), panel)
    assert_first(r, panel, earliest(r, blanked(CentredLow().signals(panel).stop.notna().to_numpy(), 2)), 'stop')
    assert r.bars_ahead == 2


def test_full_sample_normalisation(panel):
    r = check_lookahead(Normalised(), panel)
    row = int(np.flatnonzero(panel.close.notna().to_numpy().any(axis=1))[0])
    assert_first(r, panel, (row, min(r.cuts)), 'size', panel.symbols[int(np.argmax(panel.close.iloc[row].notna().to_numpy()))])
    assert r.n_disagreeing == r.checked == len(r.cuts)                 # every cut moves the mean


def test_pandas_ta_dpo_centered(panel):
    r = check_lookahead(Dpo(), panel)
    assert_first(r, panel, earliest(r, blanked(Dpo().signals(panel).entries_long.to_numpy(), 11)), 'entries_long')
    assert r.bars_ahead == 11


def _day_starts(panel):
    day = pd.Series(panel.index.tz_convert('America/New_York').date)
    start = np.flatnonzero(day.ne(day.shift()).to_numpy())
    first = start[np.searchsorted(start, np.arange(len(panel)), side='right') - 1]
    last = np.r_[start[1:], len(panel)][np.searchsorted(start, np.arange(len(panel)), side='right') - 1]
    return first, last


def test_day_low_from_the_whole_day(panel):
    r = check_lookahead(DayLow(), panel)
    first, last = _day_starts(panel)
    def change(c):
        s, e = first[c - 1], last[c - 1]
        return s if (panel.low.iloc[s:c].min() != panel.low.iloc[s:e].min()).any() else None
    assert_first(r, panel, earliest(r, change), 'stop')
    assert r.first_bar.tz_convert('America/New_York').date() == panel.index[r.cut - 1].tz_convert('America/New_York').date()


def test_day_high_from_the_whole_day(panel):
    r = check_lookahead(DayHigh(), panel)
    first, last = _day_starts(panel)
    full = DayHigh().signals(panel).entries_long.to_numpy()
    hi = panel.high.to_numpy()
    def change(c):                                                       # truncated: the high so far is the day's high
        s = first[c - 1]
        with np.errstate(invalid='ignore'):
            part = hi[s:c] >= np.nanmax(np.where(np.isnan(hi[s:c]), -np.inf, hi[s:c]), axis=0)
        d = np.flatnonzero((part != full[s:c]).any(axis=1))
        return s + int(d[0]) if len(d) else None
    assert_first(r, panel, earliest(r, change), 'entries_long')


def test_opening_range_read_at_the_open(panel):
    r = check_lookahead(EarlyRange(), panel)
    clk = session_clock(panel.index)
    reg, minute, day = clk.session.to_numpy() == 1, clk.minute.to_numpy(), clk.day.to_numpy()
    full = EarlyRange().signals(panel).stop.to_numpy()
    def change(c):
        t = c - 1
        if not (reg[t] and minute[t] < 4): return None                 # the last kept bar must leave part of the range unseen
        op = int(np.flatnonzero(reg & (day == day[t]) & (minute == 0))[0])
        in5 = np.flatnonzero(reg & (day == day[t]) & (minute < 5))
        kept = np.nanmin(np.where(np.isnan(panel.low.to_numpy()[op:c]), np.inf, panel.low.to_numpy()[op:c]), axis=0)
        changed = ~np.isnan(full[op]) & (kept != full[op])
        return op if changed.any() and in5[-1] >= c else None
    assert_first(r, panel, earliest(r, change), 'stop')
    assert minute[panel.index.get_loc(r.first_bar)] == 0


def test_session_cuts_find_what_spread_cuts_miss(panel):
    "The opening-range peek shows only in the first minutes of a session: spread cuts alone miss it."
    spread_only = np.linspace(2, len(panel) - 1, 50).astype(int).tolist()
    assert check_lookahead(EarlyRange(), panel, cuts=spread_only).ok
    assert check_causal(EarlyRange(), panel, cuts=50).ok
    assert not check_lookahead(EarlyRange(), panel, cuts=10).ok


# ---------------------------------------------------------------- one-bar peeks in every library strategy

@dataclass(frozen=True)
class Early(Strategy):
    "A library strategy acting one bar early: one signal field shifted by -1."
    name: ClassVar[str] = '_early'
    inner: object = None
    field_: str = 'entries_long'
    def warmup_spec(self): return self.inner.warmup_spec()
    def signals(self, bars):
        s = self.inner.signals(bars)
        fr = {f: getattr(s, f) for f in (*SIGNAL_BOOLS, *SIGNAL_FLOATS) if getattr(s, f) is not None}
        fr[self.field_] = fr[self.field_].shift(-1)
        return Signals.from_frames(bars.close, **fr)


@pytest.mark.slow
@pytest.mark.parametrize('name', LIBRARY)
def test_one_bar_early_is_always_found(panel, name):
    s = configs(name)[0]
    full = s.signals(panel)
    is_set = lambda v: v.any() if v.dtype == bool else np.isfinite(v).any()
    fields = [f for f in (*SIGNAL_BOOLS, *SIGNAL_FLOATS) if (x := getattr(full, f)) is not None and is_set(x.to_numpy())]
    assert fields
    for f in fields:
        r = check_lookahead(Early(inner=s, field_=f), panel, cuts=20)
        assert not r.ok and r.signal == f and r.bars_ahead == 1, (f, str(r))


# ---------------------------------------------------------------- hypothesis: a negative shift on a random column

@dataclass(frozen=True)
class ShiftPeek(Strategy):
    "One column's close shifted by -k, as a limit price or as 'enter when the close k bars on is higher'."
    name: ClassVar[str] = '_shift_peek'
    k: int = param(1, low=1)
    col: str = param('S0')
    kind: str = param('limit')
    def signals(self, bars):
        ahead = bars.close[[self.col]].shift(-self.k)
        if self.kind == 'limit': return Signals.from_frames(bars.close, limit=ahead.reindex(columns=bars.close.columns))
        return Signals.from_frames(bars.close, entries_long=(ahead > bars.close[[self.col]]).reindex(columns=bars.close.columns, fill_value=False))


def _random_panel(T, S, sparse, seed):
    rng = np.random.default_rng(seed)
    idx = pd.date_range('2026-03-02 14:30', periods=T, freq='1min', tz='UTC')
    c = np.round(5 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, S)), axis=0)), 2)
    c[rng.random((T, S)) < sparse] = np.nan
    close = pd.DataFrame(c, index=idx, columns=[f"S{i}" for i in range(S)])
    return Panel(close, close, close, close, close.notna() * 100.0)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(30, 240), S=st.integers(1, 4), k=st.integers(1, 15), col=st.integers(0, 3), sparse=st.sampled_from([0.0, 0.1, 0.5]),
       kind=st.sampled_from(['limit', 'entries']), n=st.integers(1, 40), seed=st.one_of(st.none(), st.integers(0, 1000)), data=st.integers(0, 1000))
def test_negative_shift_is_found_at_the_bar_it_must_be(T, S, k, col, sparse, kind, n, seed, data):
    p = _random_panel(T, S, sparse, data)
    sym = f"S{col % S}"
    r = check_lookahead(ShiftPeek(k=k, col=sym, kind=kind), p, cuts=n, seed=seed)
    x = p.close[sym].to_numpy()
    ahead = np.r_[x[k:], np.full(min(k, T), np.nan)][:T]
    set_ = ~np.isnan(ahead) if kind == 'limit' else np.nan_to_num(ahead, nan=-1) > np.nan_to_num(x, nan=np.inf)
    want = earliest(r, blanked(set_[:, None], k))
    assert len(r.cuts) == min(n, T - 2) and r.checked == len(r.cuts)
    if want is None:
        assert r.ok, str(r)
    else:
        assert (p.index.get_loc(r.first_bar), r.cut, r.symbol, r.signal) == (*want, sym, 'limit' if kind == 'limit' else 'entries_long'), str(r)
        assert 1 <= r.bars_ahead <= k


@settings(max_examples=15, deadline=None)
@given(T=st.integers(30, 200), S=st.integers(1, 3), k=st.integers(0, 10), n=st.integers(1, 30), seed=st.one_of(st.none(), st.integers(0, 1000)))
def test_a_causal_shift_is_clean(T, S, k, n, seed):
    @dataclass(frozen=True)
    class Lag(Strategy):
        name: ClassVar[str] = '_lag'
        @property
        def warmup(self): return k + 1                                # the bar k bars back (without it the head cuts fail it)
        def signals(self, bars):
            return Signals.from_frames(bars.close, entries_long=bars.close.shift(k) > bars.close, limit=bars.close.shift(k))
    assert check_lookahead(Lag(), _random_panel(T, S, 0.2, T), cuts=n, seed=seed).ok


def test_an_understated_warmup_is_caught_by_a_head_cut():
    "Declaring fewer bars than a shift reads back: the tail cuts pass (it is causal), a head cut names the bar, symbol and field."
    @dataclass(frozen=True)
    class Lag(Strategy):
        name: ClassVar[str] = '_lag5'
        def signals(self, bars):
            return Signals.from_frames(bars.close, entries_long=bars.close.shift(5) > bars.close)
    p = _random_panel(300, 2, 0.0, 300)
    r = check_lookahead(Lag(), p, cuts=20)
    assert not r.ok and not r.disagreements and r.head_disagreements
    h, t, when, sym, f = r.start_dependent
    assert f == 'entries_long' and sym in p.symbols and h <= t < h + 5 and f"HISTORY START: entries_long of {sym}" in str(r)
    with pytest.raises(LookAheadError, match='_lag5@: HISTORY START'): r.raise_for_status()


# ---------------------------------------------------------------- purity, errors, the report

@dataclass(frozen=True)
class ReadsFile(Strategy):
    name: ClassVar[str] = '_reads_file'
    path: str = param('/etc/hostname')
    def signals(self, bars):
        with open(self.path) as f: f.read()
        return Signals.empty(bars.close)


@dataclass(frozen=True)
class UsesNetwork(Strategy):
    name: ClassVar[str] = '_uses_network'
    def signals(self, bars):
        import socket
        socket.create_connection(('192.0.2.1', 9), timeout=0.01)        # TEST-NET-1: never reached, never tried
        return Signals.empty(bars.close)


@dataclass(frozen=True)
class ReadsClock(Strategy):
    name: ClassVar[str] = '_reads_clock'
    def signals(self, bars):
        import time
        return Signals.from_frames(bars.close, entries_long=(bars.close > 0) & (time.time_ns() % 2 == 0))


@pytest.mark.parametrize('strategy,what', [(ReadsFile(), 'open files'), (UsesNetwork(), 'use the network'), (ReadsClock(), 'read the clock')])
def test_impure_strategies_are_reported_not_raised(panel, strategy, what):
    r = check_lookahead(strategy, panel.select(panel.symbols[:2]))
    assert not r.ok and what in r.purity and r.checked == 0 and 'IMPURE' in str(r)
    assert json.loads(json.dumps(r.to_dict()))['purity'] == r.purity
    with pytest.raises(PurityError, match=what): r.raise_for_status()


def test_a_strategy_that_fails_on_a_cut_history_is_a_finding(panel):
    @dataclass(frozen=True)
    class Fragile(Strategy):
        name: ClassVar[str] = '_fragile'
        def signals(self, bars):
            if len(bars) < len(panel): raise IndexError('wants the whole history')
            return Signals.empty(bars.close)
    r = check_lookahead(Fragile(), panel)
    assert not r.ok and r.error.startswith('IndexError: wants the whole history') and 'ERROR' in str(r)
    with pytest.raises(LookAheadError): r.raise_for_status()


def test_report_round_trips_through_json_and_reads_well(panel):
    r = check_lookahead(NextClose(), panel, cuts=20, symbols=panel.symbols[:3])
    d = json.loads(json.dumps(r.to_dict()))
    assert LookaheadReport.from_dict(d) == r and d['ok'] is False and d['first']['signal'] == 'entries_long'
    assert d['first']['bar'] == r.first_bar.isoformat() and d['n_disagreeing'] == r.n_disagreeing and d['symbols'] == panel.symbols[:3]
    md = r._repr_markdown_()
    assert '**look-ahead**' in md and 'Earliest changes' in md and r.symbol in md and ' ET)' in md
    t = r.table
    assert len(t) == r.n_disagreeing and (t.bars_ahead == 1).all() and list(t.columns) == ['cut', 'cut_time', 'kind', 'bar', 'symbol', 'signal', 'bars_ahead']
    ok = check_lookahead(get_strategy('sma_cross'), panel, cuts=10)
    assert 'no look-ahead' in str(ok) and 'clean' in ok._repr_markdown_() and LookaheadReport.from_dict(json.loads(json.dumps(ok.to_dict()))) == ok


def test_explicit_cuts_by_time_and_position(panel):
    t = panel.index[[500, 1500]]
    r = check_lookahead(NextClose(), panel, cuts=[*t, 2500])
    assert r.cuts == (500, 1500, 2500) and r.cut_times == (panel.index[500], panel.index[1500], panel.index[2500]) and r.cut_kinds == ('given',) * 3
    with pytest.raises(Exception, match='fall outside the history'): check_lookahead(NextClose(), panel, cuts=[len(panel)])


def test_lazy_front_door_and_light_import():
    from smallcap.backtest import check_lookahead as front
    assert front is check_lookahead
    r = run_py("import sys, smallcap.backtest.lookahead; print(sorted(m for m in ('pandas_ta', 'vectorbt', 'backtrader', 'numba') if m in sys.modules))")
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stderr
