"""The synthetic market: determinism, store schemas, stylised facts, the planted edge, and the sample store."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_py
from smallcap.core import DataError
from smallcap.data.synth import SAMPLE, SynthConfig, build_store, edge_description, generate, sample_store

NY = 'America/New_York'


@pytest.fixture(scope='module')
def mk():
    "The sample market (edge planted)."
    return generate(SAMPLE)


@pytest.fixture(scope='module')
def mk0():
    "The same seed without the edge."
    return generate(replace(SAMPLE, edge=None))


def _session_labels(ts: pd.Series, sessions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    "(New York date, 'pre' | 'reg' | 'post') of each time, from the sessions frame."
    date = ts.dt.tz_convert(NY).dt.date
    s = sessions.set_index('date')
    label = np.select([ts < date.map(s['open']), ts < date.map(s['close'])], ['pre', 'reg'], 'post')
    return date, pd.Series(label, index=ts.index)


def _days(m) -> pd.DataFrame:
    "Per symbol-session observables from bars and corporate actions only: gap, premarket relative volume, first-hour return."
    b = m.bars.copy()
    b['date'], b['sess'] = _session_labels(b.ts, m.sessions)
    opens = b.date.map(m.sessions.set_index('date')['open'])
    reg = b[b.sess == 'reg']
    g = reg.groupby(['symbol', 'date'])
    d = pd.DataFrame({'open': g.open.first(), 'close': g.close.last(),
                      'h1': reg[reg.ts < opens[reg.index] + pd.Timedelta('60min')].groupby(['symbol', 'date']).close.last()})
    d['pre_vol'] = b[b.sess == 'pre'].groupby(['symbol', 'date']).volume.sum()
    d = d.reset_index()
    d['pre_vol'] = d.pre_vol.fillna(0)
    ratio = m.corporate_actions.set_index(['symbol', 'ex_date']).ratio
    d['ratio'] = pd.Series(list(zip(d.symbol, d.date))).map(lambda k: ratio.get(k, 1.0)).to_numpy()
    d['gap'] = d.open / (d.groupby('symbol').close.shift() / d.ratio) - 1
    d['rvol'] = d.pre_vol / d.groupby('symbol').pre_vol.transform(lambda v: v.shift().rolling(20, min_periods=5).median())
    d['r1h'] = d.h1 / d.open - 1
    return d


def test_same_config_same_frames_other_seed_other_data():
    cfg = SynthConfig(seed=11, n_symbols=5, n_sessions=6, gap_prob=0.3, edge='gap_and_go')
    a, b = generate(cfg), generate(cfg)
    for name in a.tables: pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    pd.testing.assert_frame_equal(a.days, b.days)
    c = generate(replace(cfg, seed=12))
    assert not c.trades.price.equals(a.trades.price) and set(c.trades.symbol) != set(a.trades.symbol)


def test_edge_changes_only_prices(mk, mk0):
    "Same seed, with and without the edge: the same news, splits, delisting, event counts outside pauses."
    pd.testing.assert_frame_equal(mk.corporate_actions, mk0.corporate_actions)
    pd.testing.assert_frame_equal(mk.reference, mk0.reference)
    cols = ['symbol', 'date', 'news', 'gap', 'qualifies']
    pd.testing.assert_frame_equal(mk.days[cols], mk0.days[cols])
    assert mk0.days.edge_return.eq(0).all() and mk.days.edge_return[mk.days.qualifies].gt(0).all()
    assert abs(len(mk.trades) - len(mk0.trades)) < 0.01 * len(mk.trades)         # only pauses differ


def test_tables_pass_store_validation(mk):
    from smallcap.data.store import TABLES, validate_batch
    for name, df in mk.tables.items():
        assert set(df.columns) <= set(TABLES[name].columns), name
        validate_batch(df, name)
    for name in ('trades', 'quotes', 'bars', 'status'): assert str(mk.tables[name].ts.dt.tz) == 'UTC'
    assert mk.trades['size'].dtype == np.int64 and mk.bars.volume.dtype == np.int64


def test_universe_ranges(mk):
    ref0 = mk.reference[mk.reference.date == mk.reference.date.min()]
    assert ref0.float_shares.between(1_000_000, 50_000_000).all()
    assert (mk.reference.float_shares <= mk.reference.shares_outstanding).all()
    first = mk.quotes.groupby('symbol').head(1)
    mid = (first.bid + first.ask) / 2
    assert mid.between(0.98, 20.4).all(), mid.describe()
    assert len(mk.reference) == SAMPLE.n_symbols * SAMPLE.n_sessions
    assert mk.reference.groupby(['symbol', 'date']).size().eq(1).all()
    assert mk.reference.name.str.endswith('(synthetic)').all()


def test_sessions_use_the_nyse_calendar(mk):
    s = mk.sessions
    dates = s.date.astype(str).tolist()
    assert '2025-11-27' not in dates and '2025-12-25' not in dates               # Thanksgiving, Christmas
    assert s.half_day.sum() == 2                                                 # 2025-11-28 and 2025-12-24
    date, label = _session_labels(mk.trades.ts, s)
    half = date.isin(set(s.date[s.half_day]))
    t = mk.trades.ts.dt.tz_convert(NY)
    hour = t.dt.hour + t.dt.minute / 60
    assert hour[half].max() < 17 and hour[~half].max() < 20 and hour.min() >= 4
    assert set(label) == {'pre', 'reg', 'post'}


def test_bars_are_an_independent_resample_of_the_trades(mk):
    tr = mk.trades.set_index('ts')
    tr['pv'] = tr.price * tr['size']
    r = tr.groupby('symbol').resample('1min').agg({'price': ['first', 'max', 'min', 'last', 'count'], 'size': 'sum', 'pv': 'sum'})
    r.columns = ['open', 'high', 'low', 'close', 'trades', 'volume', 'pv']
    r = r[r.trades > 0].reset_index()
    r['vwap'] = r.pv / r.volume
    b = mk.bars
    assert len(r) == len(b)
    for c in ('open', 'high', 'low', 'close', 'volume', 'trades'): np.testing.assert_array_equal(r[c].to_numpy(), b[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(r.vwap, b.vwap, rtol=1e-12)
    assert (r.symbol.to_numpy() == b.symbol.to_numpy()).all() and (r.ts.to_numpy() == b.ts.to_numpy()).all()
    assert (b.timeframe == '1min').all()


def test_quotes_never_crossed_and_trades_at_the_quote(mk):
    q = mk.quotes
    assert (q.bid < q.ask).all() and (q.bid > 0).all()
    m = pd.merge_asof(mk.trades.sort_values('ts'), q[['symbol', 'ts', 'bid', 'ask']].sort_values('ts'), on='ts', by='symbol')
    assert m.bid.notna().all()
    assert ((m.price >= m.bid) & (m.price <= m.ask)).mean() >= 0.99
    px = pd.concat([mk.trades.price, q.bid, q.ask])
    assert px[px >= 1].equals((px[px >= 1] * 100).round() / 100)                  # a $0.01 grid at or above $1


def test_u_shaped_volume(mk):
    b = mk.bars[_session_labels(mk.bars.ts, mk.sessions)[1] == 'reg']
    date = b.ts.dt.tz_convert(NY).dt.date
    full = ~date.map(mk.sessions.set_index('date').half_day).astype(bool)
    k = ((b.ts - date.map(mk.sessions.set_index('date')['open'])).dt.total_seconds() // 60).astype(int)
    v = b[full].groupby(k[full]).volume.mean()
    mid = v.loc[120:269].mean()
    assert v.loc[:29].mean() > 1.5 * mid and v.loc[360:].mean() > 1.5 * mid, (v.loc[:29].mean(), mid, v.loc[360:].mean())


def test_spreads_wider_for_cheap_names_and_fast_minutes(mk):
    q = mk.quotes.assign(mid=lambda x: (x.bid + x.ask) / 2)
    q['sp'] = (q.ask - q.bid) / q.mid
    q = q[_session_labels(q.ts, mk.sessions)[1] == 'reg']
    assert q.sp[q.mid < 3].median() > 1.5 * q.sp[q.mid > 10].median()
    b = mk.bars.assign(rng=lambda x: (x.high - x.low) / x.vwap)
    b['fast'] = b.rng > b.groupby('symbol').rng.transform(lambda s: s.quantile(0.95))
    qm = q.assign(ts=q.ts.dt.floor('1min')).merge(b[['symbol', 'ts', 'fast']], on=['symbol', 'ts'])
    ratio = qm.groupby(['symbol', 'fast']).sp.median().unstack()
    assert (ratio[True] / ratio[False]).median() > 1.2, ratio


def test_gap_days_have_high_premarket_relative_volume(mk):
    d = _days(mk).dropna(subset=['gap', 'rvol'])
    gap = d.gap.abs() >= 0.05
    assert gap.sum() >= 20
    assert d.rvol[gap].median() > 3 and d.rvol[gap].median() > 3 * d.rvol[~gap].median()


def test_luld_pauses_last_five_minutes_without_trades(mk):
    st = mk.status
    h, r = st[st.kind == 'halt'].reset_index(drop=True), st[st.kind == 'resume'].reset_index(drop=True)
    assert len(h) >= 10 and (h.reason == 'LUDP').all() and (r.reason == 'LUDP').all()
    assert (h.symbol == r.symbol).all() and ((r.ts - h.ts) == pd.Timedelta('5min')).all()
    assert (_session_labels(h.ts, mk.sessions)[1] == 'reg').all()
    tr = mk.trades.sort_values('ts')
    m = pd.merge_asof(tr, h[['symbol', 'ts']].rename(columns={'ts': 'hts'}).sort_values('hts'), left_on='ts', right_on='hts', by='symbol')
    assert not ((m.ts - m.hts) < pd.Timedelta('5min')).any()
    q = mk.quotes.merge(r[['symbol', 'ts']])                                      # a fresh quote at each reopening
    assert len(q) == len(r)
    band = st[st.kind == 'luld']
    assert (band.lower < band.upper).all() and (_session_labels(band.ts, mk.sessions)[1] == 'reg').all()
    assert mk.days.halts[mk.days.news != 0].sum() > mk.days.halts[mk.days.news == 0].sum()   # news days halt


def test_ssr_follows_ten_percent_drops(mk):
    tr = mk.trades.copy()
    tr['date'], tr['sess'] = _session_labels(tr.ts, mk.sessions)
    reg = tr[tr.sess == 'reg']
    close = reg.groupby(['symbol', 'date']).price.last().unstack()
    dates = list(mk.sessions.date)
    close = close.reindex(columns=dates)
    ratio = mk.corporate_actions.pivot_table(index='symbol', columns='ex_date', values='ratio').reindex(index=close.index, columns=dates).fillna(1.0)
    prior = close.shift(1, axis=1) / ratio
    thr = reg.set_index(['symbol', 'date']).index.map(prior.stack(future_stack=True).to_dict().get)
    hit = reg[reg.price.to_numpy() <= 0.9 * np.asarray(thr, float) * (1 + 1e-12)]
    expected = hit.groupby(['symbol', 'date']).head(1)[['symbol', 'ts']].reset_index(drop=True)
    st = mk.status[mk.status.kind == 'ssr']
    trig = st[st.reason == 'trigger'][['symbol', 'ts']].reset_index(drop=True)
    assert len(trig) >= 10
    pd.testing.assert_frame_equal(trig.sort_values(['symbol', 'ts']).reset_index(drop=True),
                                  expected.sort_values(['symbol', 'ts']).reset_index(drop=True), check_dtype=False)
    carry = st[st.reason == 'carryover']
    t = carry.ts.dt.tz_convert(NY)
    assert ((t.dt.hour == 4) & (t.dt.minute == 0)).all()
    nxt = dict(zip(dates[:-1], dates[1:]))
    tdate = expected.ts.dt.tz_convert(NY).dt.date
    active = mk.reference.set_index(['symbol', 'date']).active
    want = {(s, nxt[d]) for s, d in zip(expected.symbol, tdate) if d in nxt and active.get((s, nxt[d]), False)}
    assert set(zip(carry.symbol, t.dt.date)) == want


def test_splits_show_in_raw_prices(mk):
    ca = mk.corporate_actions
    assert len(ca) >= 1 and (ca.kind == 'split').all()
    d = _days(mk).set_index(['symbol', 'date'])
    for s, ex, ratio in zip(ca.symbol, ca.ex_date, ca.ratio):
        i = d.index.get_loc((s, ex))
        raw_jump = d.open.iloc[i] / d.close.iloc[i - 1]
        assert 0.6 / ratio < raw_jump < 1.6 / ratio, (s, ex, ratio, raw_jump)
    so = mk.reference.set_index(['symbol', 'date']).shares_outstanding
    s, ex, ratio = ca.iloc[0][['symbol', 'ex_date', 'ratio']]
    dates = list(mk.sessions.date)
    before = so[(s, dates[dates.index(ex) - 1])]
    assert so[(s, ex)] == pytest.approx(before * ratio, rel=0.5)


def test_a_symbol_is_delisted_part_way(mk):
    ref = mk.reference
    gone = ref.groupby('symbol').active.agg(['all', 'any'])
    gone = gone[~gone['all'] & gone['any']].index
    assert len(gone) == SAMPLE.n_delisted
    s = gone[0]
    last = ref[(ref.symbol == s) & ref.active].date.max()
    assert last < ref.date.max()
    assert mk.trades[mk.trades.symbol == s].ts.dt.tz_convert(NY).dt.date.max() == last
    assert not ref[(ref.symbol == s) & (ref.date > last)].active.any()


def _edge_stats(m) -> pd.DataFrame:
    d = _days(m)
    return d[(d.gap >= 0.05) & (d.rvol >= 3)].dropna(subset=['r1h'])


def _t(x: pd.Series) -> float: return float(x.mean() / x.std(ddof=1) * np.sqrt(len(x)))


def test_planted_edge_is_found_out_of_sample_and_absent_in_noise(mk, mk0):
    "Gap >= 5% with premarket RVOL >= 3, buy the first regular print, sell an hour later: observable data only."
    q1, q0 = _edge_stats(mk), _edge_stats(mk0)
    assert len(q1) >= 40
    assert _t(q1.r1h) > 2.5, (q1.r1h.mean(), _t(q1.r1h))
    assert _t(q0.r1h) < 2.0, (q0.r1h.mean(), _t(q0.r1h))
    cut = sorted(mk.sessions.date)[len(mk.sessions) // 2]
    assert q1[q1.date < cut].r1h.mean() > 0.01 and q1[q1.date >= cut].r1h.mean() > 0.01    # both halves
    truth = mk.days[mk.days.qualifies]
    assert truth.edge_return.mean() == pytest.approx(0.3 * truth.gap.clip(upper=1).mean())
    assert edge_description(SAMPLE).startswith('gap_and_go') and edge_description(replace(SAMPLE, edge=None)).startswith('none')


def test_no_edge_in_noise_over_seeds():
    "Without the edge, the same rule's first-hour return is insignificant across seeds (pooled)."
    rets = pd.concat([_edge_stats(generate(SynthConfig(seed=s, n_symbols=16, n_sessions=40, gap_prob=0.1))).r1h for s in (21, 22)])
    assert len(rets) >= 40 and abs(_t(rets)) < 2.5, (rets.mean(), _t(rets))


def test_build_store_is_atomic(tmp_path, monkeypatch):
    from smallcap.data import store
    cfg = SynthConfig(seed=5, n_symbols=3, n_sessions=4, gap_prob=0.3)
    path = tmp_path / 'syn.duckdb'
    st = build_store(path, cfg)
    good = st.summary()
    assert st.meta()['synthetic'] == 'true' and SynthConfig.from_json(st.meta()['synth_config']) == cfg
    real = store.TickStore.ingest

    def crash(self, table, *a, **k):
        if table == 'quotes': raise RuntimeError('disk on fire')
        return real(self, table, *a, **k)
    monkeypatch.setattr(store.TickStore, 'ingest', crash)
    with pytest.raises(RuntimeError, match='disk on fire'): build_store(path, replace(cfg, seed=6), overwrite=True)
    with pytest.raises(RuntimeError): build_store(tmp_path / 'new.duckdb', cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['syn.duckdb']              # no half-built file, old store intact
    assert store.TickStore(path, read_only=True).summary()['trades']['rows'] == good['trades']['rows']
    monkeypatch.undo()
    with pytest.raises(DataError, match='exists'): build_store(path, cfg)


def test_sample_store_builds_and_is_reused(tmp_path):
    from smallcap.data.store import TickStore
    path = tmp_path / 'sample.duckdb'
    t0 = time.perf_counter()
    assert sample_store(path) == path
    took = time.perf_counter() - t0
    st = TickStore(path, read_only=True)
    s = st.summary()
    rows = {k: s[k]['rows'] for k in ('trades', 'quotes', 'bars', 'reference', 'corporate_actions', 'status')}
    print(f"\nsample store: built in {took:.1f} s, {path.stat().st_size / 1e6:.1f} MB, rows {rows}")
    assert rows['bars'] > 300_000 and rows['trades'] > 800_000 and rows['reference'] == 24 * 60
    assert s['meta']['synthetic'] == 'true' and s['meta']['synth_config'] == SAMPLE.to_json()
    assert s['meta']['synth_edge'].startswith('gap_and_go')
    bars = st.bars(['{}'.format(s_) for s_ in st.reference().symbol[:3]], session='regular', adjust=True)
    assert len(bars) > 10_000
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    sample_store(path)
    assert path.stat().st_mtime_ns == mtime                                          # reused, not rebuilt (speed is a benchmark figure, not a test)
    sample_store(path, rebuild=True)
    assert path.stat().st_mtime_ns != mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sample.duckdb']


def test_import_is_light():
    r = run_py("import sys, smallcap.data.synth; print(sorted(m for m in ('numba', 'duckdb', 'pyarrow', 'exchange_calendars') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert 'numba' not in r.stdout and 'duckdb' not in r.stdout, r.stdout
