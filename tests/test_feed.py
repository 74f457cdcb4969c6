"""The replay feed and the bar builder on a real DuckDB store: time order, completeness, recorder segments and Parquet exports,
bars equal to `TickStore.bars`, pacing against a driven clock, halts and SSR in order, and bad input refused."""
import asyncio
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.core import ConfigError, DataError
from smallcap.data.calendar import localize_ny
from smallcap.data.store import ParquetStore, TickStore
from smallcap.data.synth import SynthConfig, build_store
from smallcap.live.feed import KINDS, Bar, BarBuilder, Feed, MarketStatus, Quote, ReplayFeed, Status, Trade, bars_frame

START, END = '2025-11-26', '2025-12-02'      # Wed 26th (regular), Fri 28th (half day: close 13:00), Mon 1st
RANK = {Bar: 0, Status: 1, Quote: 2, Trade: 3}
ny = lambda s: localize_ny(pd.Timestamp(s)).tz_convert('UTC')
PLANTED = pd.DataFrame({'symbol': ['ZZHALT'] * 4, 'ts': [ny('2025-11-28 10:00'), ny('2025-11-28 10:05'), ny('2025-11-28 11:00'), ny('2025-11-28 09:30')],
                        'kind': ['halt', 'resume', 'ssr', 'luld'], 'reason': ['LUDP', None, None, None], 'lower': [None, None, None, 1.8],
                        'upper': [None, None, None, 2.2]})


def run(feed) -> list:
    async def go(): return [e async for e in feed]
    return asyncio.run(go())


def emit(e): return e.end if isinstance(e, Bar) else e.ts


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    "A synthetic market over a regular day and a half day, plus one symbol with a planted halt, resumption and SSR."
    s = build_store(tmp_path_factory.mktemp('feed') / 'st.duckdb',
                    SynthConfig(seed=5, n_symbols=3, start=START, n_sessions=3, n_delisted=0, min_splits=0, trade_rate=1.0, quote_rate=1.0))
    t = pd.DatetimeIndex([ny('2025-11-28 09:59:30'), ny('2025-11-28 10:00'), ny('2025-11-28 10:06'), ny('2025-11-28 11:00')])
    s.ingest_trades(pd.DataFrame({'symbol': 'ZZHALT', 'ts': t, 'price': [2.0, 2.01, 2.1, 2.05], 'size': [100, 200, 300, 400]}), source='planted')
    s.ingest_status(PLANTED, source='planted')
    return s


@pytest.fixture(scope='module')
def symbols(store): return sorted(store.trades(as_='arrow').column('symbol').unique().to_pylist())


@pytest.fixture(scope='module')
def events(store, symbols): return run(ReplayFeed(store, symbols, START, END, kinds=KINDS))


def test_replay_is_time_ordered_and_complete(store, symbols, events):
    keys = [(emit(e), RANK[type(e)]) for e in events]
    assert keys == sorted(keys)
    tr = pd.DataFrame([(e.symbol, e.ts, e.price, e.size) for e in events if isinstance(e, Trade)], columns=['symbol', 'ts', 'price', 'size'])
    ref = store.trades(symbols, START, END)[['symbol', 'ts', 'price', 'size']]
    pd.testing.assert_frame_equal(tr.sort_values(['symbol', 'ts', 'price', 'size'], ignore_index=True),
                                  ref.astype({'symbol': object}).sort_values(['symbol', 'ts', 'price', 'size'], ignore_index=True), check_dtype=False)
    assert sum(isinstance(e, Quote) for e in events) == len(store.quotes(symbols, START, END))
    assert sum(isinstance(e, Status) for e in events) == len(store.status(symbols, START, END))
    assert isinstance(ReplayFeed(store, symbols, START, END), Feed)


def test_chunk_size_changes_nothing(store, symbols, events):
    assert run(ReplayFeed(store, symbols, START, END, kinds=KINDS, chunk='24h')) == events


def test_feed_bars_equal_store_bars(store, symbols, events):
    got = bars_frame(e for e in events if isinstance(e, Bar))
    pd.testing.assert_frame_equal(got, store.bars(symbols, START, END), check_exact=True)
    half = [e for e in events if isinstance(e, Bar) and e.ts.date() == dt.date(2025, 11, 28)]
    assert max(b.end for b in half) == ny('2025-11-28 13:00')       # the half day's regular session ends at 13:00
    last = {}                                                           # (symbol, minute) -> position of its last trade
    for i, e in enumerate(events):
        if isinstance(e, Trade): last[e.symbol, pd.Timestamp(e.ts).floor('1min')] = i
    for i, e in enumerate(events):                                      # no bar is emitted before a trade inside it
        if isinstance(e, Bar): assert last[e.symbol, pd.Timestamp(e.ts)] < i


def assert_bars_equal(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    "Every column equal; vwap to 1e-12 relative (DuckDB sums price*size in an order of its own)."
    pd.testing.assert_frame_equal(got.drop(columns='vwap'), ref.drop(columns='vwap'), check_exact=True)
    np.testing.assert_allclose(got.vwap.to_numpy(), ref.vwap.to_numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize('timeframe,session', [('1min', 'regular'), ('1min', 'extended'), ('5min', 'regular'), ('1min', None), ('30s', 'after-hours'), ('1h', 'regular')])
def test_builder_equals_store_bars(store, symbols, events, timeframe, session):
    bb = BarBuilder(timeframe, session)
    out = [b for e in events if isinstance(e, Trade) for b in bb.add(e)] + bb.flush()
    assert_bars_equal(bars_frame(out), store.bars(symbols, START, END, timeframe=timeframe, session=session))
    ends = [b.end for b in out[:-50]]                                   # bars come out in the order they closed
    assert ends == sorted(ends)


def test_builder_clock_ticks_close_quiet_bars():
    bb = BarBuilder()
    t = ny('2025-11-28 12:59:10').to_pydatetime()
    assert bb.add(Trade('ABCD', t, 2.0, 100)) == []
    assert bb.tick(ny('2025-11-28 12:59:59')) == []
    (b,) = bb.tick(ny('2025-11-28 13:00'))                               # the half day's last regular bar closes at 13:00
    assert (b.ts, b.end, b.volume, b.trades) == (ny('2025-11-28 12:59'), ny('2025-11-28 13:00'), 100, 1)
    assert bb.add(Trade('ABCD', ny('2025-11-28 13:00:01').to_pydatetime(), 2.0, 100)) == [] and bb.flush() == []   # after the close: left out
    with pytest.raises(DataError, match='time order'): bb.add(Trade('ABCD', t, 2.0, 100))
    hour = BarBuilder('1h')                                              # the last hourly bar of a half day is cut at 13:00 ...
    hour.add(Trade('ABCD', ny('2025-11-28 12:45').to_pydatetime(), 2.0, 100))
    assert hour.tick(ny('2025-11-28 12:59:59')) == [] and [b.end for b in hour.tick(ny('2025-11-28 13:00'))] == [ny('2025-11-28 13:00')]
    hour.add(Trade('ABCD', ny('2025-12-01 15:45').to_pydatetime(), 2.0, 100))   # ... of a regular day at 16:00, both from 30 past
    assert [(b.ts, b.end) for b in hour.flush()] == [(ny('2025-12-01 15:30'), ny('2025-12-01 16:00'))]


tick_times = st.lists(st.tuples(st.sampled_from([pd.Timestamp('2025-11-26', tz='UTC'), pd.Timestamp('2025-11-28', tz='UTC')]),
                                st.one_of(st.integers(13 * 3600, 22 * 3600), st.integers(13 * 3600, 22 * 3600).map(lambda s: s - s % 600)),  # ties, minute edges
                                st.integers(0, 2), st.integers(1, 40), st.sampled_from(['AAA', 'BBB'])),
                      min_size=1, max_size=60)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=tick_times, session=st.sampled_from(['regular', 'extended', None]))
def test_builder_equals_store_bars_on_random_trades(tmp_path_factory, rows, session):
    "Random trades (ties at one instant, both sides of the half day's 13:00 close) give the store's bars, fed one by one."
    s = TickStore(tmp_path_factory.mktemp('h') / 'h.duckdb')
    df = pd.DataFrame({'symbol': [r[4] for r in rows], 'ts': [d + pd.Timedelta(seconds=sec) for d, sec, *_ in rows],
                       'price': [round(1.5 + 0.01 * (k * 7 % 13) + 0.001 * i, 3) for i, (_, _, k, *_) in enumerate(rows)], 'size': [100 * r[3] for r in rows],
                       'id': np.arange(len(rows))})
    s.ingest_trades(df.sort_values('ts', kind='stable'), source='h')
    tr = s.trades(as_='arrow').to_pydict()
    bb = BarBuilder('1min', session)
    out = [b for r in zip(tr['symbol'], tr['ts'], tr['price'], tr['size']) for b in bb.add(Trade(*r))] + bb.flush()
    ref = s.bars(timeframe='1min', session=session)
    if not len(ref): assert out == []
    else: assert_bars_equal(bars_frame(out), ref)


def test_replay_reads_recorder_segments_and_parquet(store, symbols, events, tmp_path):
    t = pd.DatetimeIndex([ny('2025-12-01 10:00:00.5'), ny('2025-12-01 10:00:00.5'), ny('2025-12-01 10:02')])
    store.recorder('test').append_trades(pd.DataFrame({'symbol': 'ZZREC', 'ts': t, 'price': [3.0, 3.1, 3.2], 'size': [100, 200, 300]}))
    try:
        rec = run(ReplayFeed(store, ['ZZREC'], START, END, kinds=('trades', 'bars')))
        assert [(type(e).__name__, e.ts) for e in rec] == [('Trade', t[0]), ('Trade', t[1]), ('Bar', ny('2025-12-01 10:00')), ('Trade', t[2]), ('Bar', ny('2025-12-01 10:02'))]
        assert [e.price for e in rec if isinstance(e, Trade)][:2] == [3.0, 3.1]      # ties keep arrival order
        store.export_parquet(tmp_path / 'pq')
        pq = ParquetStore(tmp_path / 'pq')
        assert run(ReplayFeed(pq, symbols, START, END, kinds=KINDS)) == events
    finally:
        import shutil; shutil.rmtree(store.segments_dir, ignore_errors=True)


def test_paced_replay_waits_for_each_event(store):
    "Against a driven clock: each event is released once the clock reaches its time scaled by the pace, never before."
    clock = {'now': 100.0}
    sleeps = []
    async def sleep(s): sleeps.append(s); clock['now'] += s
    pace = 60.0
    feed = ReplayFeed(store, ['ZZHALT'], '2025-11-28', '2025-11-29', kinds=('trades', 'status'), pace=pace, monotonic=lambda: clock['now'], sleep=sleep)
    seen = []
    async def go():
        async for e in feed: seen.append((e, clock['now']))
    asyncio.run(go())
    t0, w0 = seen[0][0].ts, seen[0][1]
    for e, w in seen:
        due = w0 + (e.ts - t0).total_seconds() / pace
        assert w == pytest.approx(due, abs=1e-9)
    assert sum(sleeps) == pytest.approx((seen[-1][0].ts - t0).total_seconds() / pace)
    fast = []
    async def nosleep(s): fast.append(s)
    run(ReplayFeed(store, ['ZZHALT'], '2025-11-28', '2025-11-29', monotonic=lambda: 0.0, sleep=nosleep))
    assert fast == []                                                    # pace=None never waits


def test_halts_resumes_and_ssr_flow_in_order(store):
    evs = run(ReplayFeed(store, ['ZZHALT'], '2025-11-28', '2025-11-29', kinds=('trades', 'status')))
    names = [(type(e).__name__, getattr(e, 'kind', None)) for e in evs]
    assert names == [('Status', 'luld'), ('Trade', None), ('Status', 'halt'), ('Trade', None), ('Status', 'resume'), ('Trade', None),
                     ('Status', 'ssr'), ('Trade', None)]                  # a status at t comes before a trade at t
    ms, flags = MarketStatus(), []
    for e in evs:
        if isinstance(e, Status): ms.apply(e)
        else: flags.append(tuple(a[0] for a in ms.flags(['ZZHALT'], e.ts)))
    assert flags == [(False, False), (True, False), (False, False), (False, True)]
    assert ms.bands['ZZHALT'] == (1.8, 2.2)
    assert ms.flags(['ZZHALT'], ny('2025-12-01 10:00'))[1].tolist() == [False]     # SSR ends with its New York day


@pytest.mark.parametrize('kw,err,msg', [
    (dict(symbols=['NOPE', 'ZZHALT']), DataError, r"unknown symbols .*\['NOPE'\]"),
    (dict(start='2025-11-29', end='2025-11-30'), DataError, 'nothing to replay'),
    (dict(start='2025-11-29', end='2025-11-28'), ConfigError, 'not after start'),
    (dict(start='2025-11-28', end='2025-11-28'), ConfigError, 'not after start'),
    (dict(start=pd.Timestamp('2025-11-28 10:00')), ConfigError, 'naive'),
    (dict(symbols=[]), ConfigError, 'one or more symbols'),
    (dict(kinds=('trades', 'ticks')), ConfigError, r"unknown kinds \['ticks'\]"),
    (dict(pace=-1), ConfigError, 'pace'),
    (dict(chunk='7min'), ConfigError, 'chunk'),
    (dict(kinds=('bars',), timeframe='1h'), ConfigError, 'dividing 30 minutes'),
])
def test_bad_input_is_refused_clearly(store, kw, err, msg):
    args = dict(symbols=['ZZHALT'], start='2025-11-28', end='2025-11-29') | kw
    with pytest.raises(err, match=msg): ReplayFeed(store, args.pop('symbols'), args.pop('start'), args.pop('end'), **args)
