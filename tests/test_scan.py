"""The scanner on synthetic markets: no look-ahead (hypothesis over random cut times, on trades and on bars-only
stores), the definitions against an independent pandas computation, gap days found, Parquet parity, spec round-trips."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as hs

from smallcap.core import ConfigError
from smallcap.data.store import ParquetStore, TickStore
from smallcap.data.synth import SynthConfig, build_store, generate
from smallcap.scan import RANK_BY, Scan, _truncate, run_scan, scan_days, scan_time

CFG = SynthConfig(seed=5, n_symbols=8, n_sessions=16, gap_prob=0.3, edge='gap_and_go')
NY = 'America/New_York'


@pytest.fixture(scope='module')
def market():
    return generate(CFG)


@pytest.fixture(scope='module')
def stores(tmp_path_factory, market):
    "The synthetic store (trades and bars), and a 'vendor' store of the same market holding bars but no trades."
    d = tmp_path_factory.mktemp('scan')
    full = build_store(d / 'synth.duckdb', CFG)
    bars = TickStore(d / 'bars.duckdb')
    for name in ('reference', 'corporate_actions', 'bars', 'status'):
        bars.ingest(name, getattr(market, name), source='vendor')
    return {'trades': full, 'bars': bars, 'dir': d}


def _at(market, k: int, minute: int) -> pd.Timestamp:
    "Minute `minute` after midnight New York time of session `k`."
    day = market.sessions.date.iloc[k]
    return pd.Timestamp(day).tz_localize(NY).tz_convert('UTC') + pd.Timedelta(minutes=minute)


# -- no look-ahead ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['trades', 'bars'])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=hs.integers(1, CFG.n_sessions - 1), minute=hs.integers(0, 24 * 60 - 1), second=hs.integers(0, 59))
def test_future_data_never_changes_a_scan(stores, market, kind, k, minute, second):
    "Deleting every row not known before `at` leaves the scan identical (whatever the filters)."
    at = _at(market, k, minute) + pd.Timedelta(seconds=second)
    st = stores[kind]
    cut = stores['dir'] / f"cut-{kind}.duckdb"
    _truncate(st.path, cut, at)
    past = TickStore(cut, read_only=True)
    for scan in (Scan(), Scan(price_min=1, gap_min=0.02, rvol_min=1.5, rank_by='rvol'), Scan(ssr=True), Scan(halted=True, rank_by='volume')):
        pd.testing.assert_frame_equal(run_scan(st, scan, at), run_scan(past, scan, at))


def test_the_truncation_check_can_fail(stores, market):
    "A scan that reads a future trade differs from the truncated store: the check above has teeth."
    st = stores['trades']
    at = _at(market, 8, 9 * 60 + 25)
    cut = stores['dir'] / 'cut-teeth.duckdb'
    _truncate(st.path, cut, at)
    later = at + pd.Timedelta(hours=3)
    a, b = run_scan(st, None, later), run_scan(TickStore(cut, read_only=True), None, later)
    assert not a.equals(b)


# -- the definitions, against pandas ----------------------------------------------------------------------------

def _reference_scan(market, k: int, at: pd.Timestamp, n: int = 10) -> pd.DataFrame:
    "price, volume, dollar volume, prior close, avg volume and rvol computed independently with pandas."
    s, tr = market.sessions, market.trades
    D = s.date.iloc[k]
    today = tr[(tr.ts >= s.pre_open.iloc[k]) & (tr.ts < at)].sort_values('ts', kind='stable')
    g = today.groupby('symbol')
    out = pd.DataFrame({'price': g.price.last(), 'volume': g['size'].sum(),
                        'dollar_volume': (today.price * today['size']).groupby(today.symbol).sum()})
    elapsed = at - s.pre_open.iloc[k]
    vols, alive = {}, {}
    for j in range(1, min(n, k) + 1):                      # a loop over sessions: test code, not a hot path
        p = s.iloc[k - j]
        day = tr[(tr.ts >= p.pre_open) & (tr.ts < p.post_close)]
        alive[j] = set(day.symbol)
        vols[j] = day[day.ts < p.pre_open + elapsed].groupby('symbol')['size'].sum()
    avg = {}
    for sym in out.index.union(pd.Index(sorted(set().union(*alive.values())))):
        js = [j for j in alive if sym in alive[j]]
        if js: avg[sym] = sum(vols[j].get(sym, 0) for j in range(1, max(js) + 1)) / max(js)
    out = out.reindex(out.index.union(pd.Index(list(avg))))
    out['avg_volume'] = pd.Series(avg)
    out['volume'] = out.volume.fillna(0)
    out['rvol'] = (out.volume / out.avg_volume).where(out.avg_volume > 0)
    P = s.iloc[k - 1]
    reg = tr[(tr.ts >= P.open) & (tr.ts < P.close)].sort_values('ts', kind='stable')
    pc = reg.groupby('symbol').price.last()
    ca = market.corporate_actions
    ratio = ca[(ca.kind == 'split') & (ca.ex_date == D)].set_index('symbol').ratio
    out['prior_close'] = pc / ratio.reindex(pc.index).fillna(1.0)
    out['gap'] = out.price / out.prior_close - 1
    return out


@pytest.mark.parametrize('k,hm', [(11, '09:25'), (12, '08:00'), (13, '12:37'), (6, '16:00'), (14, '19:59')])
def test_definitions_match_pandas(stores, market, k, hm):
    D = market.sessions.date.iloc[k]
    at = pd.Timestamp(f"{D} {hm}", tz=NY).tz_convert('UTC')
    got = run_scan(stores['trades'], Scan(rvol_sessions=10), at).set_index('symbol')
    ref = _reference_scan(market, k, at)
    ref = ref.reindex(got.index)
    traded_prev = got.prior_date == market.sessions.date.iloc[k - 1]
    assert traded_prev.sum() >= 5 and got.rvol.notna().sum() >= 5
    for c in ('price', 'dollar_volume', 'avg_volume', 'rvol'):
        np.testing.assert_allclose(got[c].astype(float), ref[c].astype(float), rtol=1e-9, err_msg=c)
    np.testing.assert_array_equal(got.volume, ref.volume.astype('int64'))
    for c in ('prior_close', 'gap'):
        np.testing.assert_allclose(got[c][traded_prev].astype(float), ref[c][traded_prev].astype(float), rtol=1e-9, err_msg=c)


def test_prior_close_is_the_store_regular_daily_close(stores, market):
    st = stores['trades']
    s = market.sessions
    D, P = s.date.iloc[9], s.date.iloc[8]
    daily = st.bars(start=str(P), end=str(D), timeframe='1d', session='regular').set_index('symbol').close
    got = run_scan(st, None, D).set_index('symbol')
    ca = market.corporate_actions
    unsplit = [x for x in got.index if x in daily.index and not ((ca.symbol == x) & (ca.ex_date == D)).any()]
    assert len(unsplit) >= 5
    np.testing.assert_allclose(got.prior_close[unsplit], daily[unsplit])


def test_halts_and_ssr_match_status_rows(stores, market):
    st, status = stores['trades'], market.status
    for k in range(1, CFG.n_sessions):
        D = market.sessions.date.iloc[k]
        at = pd.Timestamp(f"{D} 11:00", tz=NY).tz_convert('UTC')
        start = pd.Timestamp(D).tz_localize(NY).tz_convert('UTC')
        today = status[(status.ts >= start) & (status.ts < at)]
        got = run_scan(st, None, at).set_index('symbol')
        assert set(got.index[got.halted]) == set(today[today.kind == 'halt'].symbol) & set(got.index)
        assert set(got.index[got.ssr]) == set(today[today.kind == 'ssr'].symbol) & set(got.index)
        np.testing.assert_array_equal(got.halts, today[today.kind == 'halt'].symbol.value_counts().reindex(got.index).fillna(0))


# -- what a researcher uses it for ------------------------------------------------------------------------------

def test_scan_days_finds_the_gap_days(stores, market):
    "Gaps of 10% or more at the open are the news days of the synthetic market, and every big news gap is found."
    s = market.sessions
    u = scan_days(stores['trades'], Scan(gap_min=0.1), start=s.date.iloc[0], end=s.date.iloc[-1], time='open')
    truth = market.days.set_index(['symbol', 'date'])
    found = truth.reindex(pd.MultiIndex.from_frame(u[['symbol', 'date']]))
    assert len(u) >= 5 and (found.news != 0).all()
    big = truth[(truth.news == 1) & (truth.gap >= 0.12) & truth.active]
    assert set(big.index) <= set(zip(u.symbol, u.date))
    np.testing.assert_allclose(u.gap, found.gap, atol=0.03)           # the scan's trade-based gap vs the latent mid gap
    assert (u.groupby('date')['rank'].min() == 1).all()


def test_universe_keeps_the_delisted_until_delisting(stores, market):
    ref = market.reference
    gone = ref.groupby('symbol').active.all().pipe(lambda a: a.index[~a][0])
    last = ref[(ref.symbol == gone) & ref.active].date.max()
    s = market.sessions.date
    u = scan_days(stores['trades'], None, start=s.iloc[1], end=s.iloc[-1])
    days_listed = set(u[u.symbol == gone].date)
    assert days_listed == {d for d in s.iloc[1:] if d <= last}
    assert u.groupby('date').symbol.nunique().max() == CFG.n_symbols


def test_parquet_export_gives_the_same_scans(stores, market):
    st = stores['trades']
    st.export_parquet(stores['dir'] / 'pq')
    scan = Scan(price_min=1, gap_min=0.03, rank_by='rvol')
    s = market.sessions.date
    a = scan_days(st, scan, start=s.iloc[3], end=s.iloc[9])
    b = scan_days(ParquetStore(stores['dir'] / 'pq'), scan, start=s.iloc[3], end=s.iloc[9])
    pd.testing.assert_frame_equal(a, b)
    assert len(a)


def test_bars_only_store_agrees_at_minute_boundaries(stores, market):
    "On a whole minute, bars that closed by `at` hold exactly the trades before `at`: both stores give the same scan."
    for k, hm in [(5, '09:25'), (7, '09:30'), (10, '10:45'), (12, '16:00')]:
        at = pd.Timestamp(f"{market.sessions.date.iloc[k]} {hm}", tz=NY).tz_convert('UTC')
        a = run_scan(stores['trades'], None, at).drop(columns='last_ts')
        b = run_scan(stores['bars'], None, at).drop(columns='last_ts')
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)


def test_scan_days_over_the_sample_period_is_fast(stores, market):
    import time
    s = market.sessions.date
    t = time.perf_counter()
    scan_days(stores['trades'], Scan(gap_min=0.05), start=s.iloc[1], end=s.iloc[-1])
    assert time.perf_counter() - t < 15


# -- the spec ---------------------------------------------------------------------------------------------------

_num = hs.one_of(hs.none(), hs.floats(0, 1e9, allow_nan=False))
_specs = hs.fixed_dictionaries({}, optional={
    'price_min': _num, 'float_max': _num, 'gap_min': hs.one_of(hs.none(), hs.floats(-1, 10, allow_nan=False)),
    'rvol_min': _num, 'dollar_volume_min': _num, 'halted': hs.sampled_from([None, True, False]), 'ssr': hs.sampled_from([None, True, False]),
    'symbols': hs.one_of(hs.none(), hs.lists(hs.from_regex(r'[A-Z]{1,5}', fullmatch=True), min_size=1, max_size=4)),
    'exclude': hs.lists(hs.from_regex(r'[A-Z]{1,5}', fullmatch=True), max_size=3), 'rank_by': hs.sampled_from(RANK_BY),
    'ascending': hs.booleans(), 'top': hs.one_of(hs.none(), hs.integers(1, 100)), 'rvol_sessions': hs.integers(1, 250)})


@settings(max_examples=200, deadline=None)
@given(d=_specs)
def test_spec_round_trips(d):
    s = Scan.from_dict(d)
    assert Scan.from_dict(json.loads(s.to_json())) == s
    assert Scan.parse(s.to_dict(compact=True)) == s
    assert Scan.from_text(s.to_json()) == s
    assert isinstance(s.describe(), str) and '\n' not in s.describe()


@settings(max_examples=100, deadline=None)
@given(keys=hs.lists(hs.text(alphabet='abcdefghijklmnopqrstuvwxyz_', min_size=1, max_size=12), min_size=1, max_size=4))
def test_unknown_keys_are_named(keys):
    known = {f for f in Scan.__dataclass_fields__}
    bad = sorted(set(keys) - known)
    if not bad: return
    with pytest.raises(ConfigError) as e: Scan.from_dict({k: 1 for k in keys})
    assert str(bad) in str(e.value)


def test_at_is_resolved_in_new_york():
    assert scan_time(dt.date(2025, 11, 3)) == pd.Timestamp('2025-11-03 14:25', tz='UTC')     # after the DST change
    assert scan_time(dt.date(2025, 10, 31)) == pd.Timestamp('2025-10-31 13:25', tz='UTC')
    with pytest.raises(ConfigError, match='naive'): scan_time(dt.datetime(2025, 11, 3, 9, 25))
