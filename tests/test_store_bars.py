"""Bars from `bars()` equal an independent pandas resample of the same trades, for every timeframe and session."""
import exchange_calendars as xc
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.data.store import ParquetStore, TickStore
from store_helpers import trades

NY = 'America/New_York'
CAL = xc.get_calendar('XNYS', start='2026-01-01', end='2026-12-31')


def windows(day: str, session: str):
    "The session window of one day, straight from exchange_calendars (independent of smallcap.data.calendar)."
    o, c = CAL.schedule.loc[day, 'open'], CAL.schedule.loc[day, 'close']
    pre, post = pd.Timestamp(day, tz=NY) + pd.Timedelta(hours=4), c + pd.Timedelta(hours=4)
    return {'regular': (o, c), 'premarket': (pre, o), 'after-hours': (c, post), 'extended': (pre, post)}[session]


def pandas_bars(tr: pd.DataFrame, rule: str, session: str, days) -> pd.DataFrame:
    out = []
    for day in days:
        lo, hi = windows(day, session)
        x = tr[(tr.ts >= lo) & (tr.ts < hi)].sort_values('ts', kind='stable')
        if x.empty: continue
        x = x.assign(pv=x.price * x['size'].astype(float))
        rule_ = '1D' if rule == '1d' else rule
        for sym, g in x.groupby('symbol'):
            r = g.set_index('ts').resample(rule_, origin=lo) if rule != '1d' else g.assign(b=lo).groupby('b')
            o = pd.DataFrame({'open': r.price.first(), 'high': r.price.max(), 'low': r.price.min(), 'close': r.price.last(),
                              'volume': r['size'].sum().astype('int64'), 'pv': r.pv.sum(), 'trades': r.price.count()})
            o = o[o.trades > 0]
            o['vwap'] = o.pv / o.volume
            out.append(o.drop(columns='pv').rename_axis('ts').reset_index().assign(symbol=sym))
    df = pd.concat(out, ignore_index=True)
    return df[['symbol', 'ts', 'open', 'high', 'low', 'close', 'volume', 'vwap', 'trades']].sort_values(['symbol', 'ts'], ignore_index=True)


@pytest.fixture(scope='module')
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp('bars')
    st_ = TickStore(d / 'bars.duckdb')
    tr = pd.concat([trades(6000, start='2026-11-25 04:00', span_s=16 * 3600, seed=1),      # a full day, before Thanksgiving
                    trades(4000, start='2026-11-27 04:00', span_s=13 * 3600, seed=2, id0=10**6)],  # a half day (13:00 close)
                   ignore_index=True)
    tr = tr[~tr.duplicated(['symbol', 'ts', 'price', 'size', 'exchange', 'conditions', 'id'])]
    st_.ingest_trades(tr, source='test')
    st_.export_parquet(d / 'pq')
    return st_, ParquetStore(d / 'pq'), tr


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tf=st.sampled_from(['1s', '5s', '1min', '5min', '15min', '30min', '1h', '1d']),
       session=st.sampled_from(['regular', 'premarket', 'after-hours', 'extended']))
def test_bars_equal_pandas_resample(stores, tf, session):
    st_, pqs, tr = stores
    got = st_.bars(start='2026-11-25', end='2026-11-28', timeframe=tf, session=session)
    ref = pandas_bars(tr, tf, session, ['2026-11-25', '2026-11-27'])
    assert list(zip(got.symbol, got.ts)) == list(zip(ref.symbol, ref.ts))
    for c in ['open', 'high', 'low', 'close', 'vwap']:
        np.testing.assert_allclose(got[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-12, err_msg=c)
    assert got.volume.tolist() == ref.volume.tolist() and got.trades.tolist() == ref.trades.tolist()
    pd.testing.assert_frame_equal(pqs.bars(start='2026-11-25', end='2026-11-28', timeframe=tf, session=session), got)


def test_half_day_sessions(stores):
    st_, _, tr = stores
    d = st_.bars(start='2026-11-27', end='2026-11-28', timeframe='1d', session='after-hours')
    assert set(d.ts) == {pd.Timestamp('2026-11-27 13:00', tz=NY)}                 # after-hours opens at the 13:00 close
    last = st_.bars(start='2026-11-27', end='2026-11-28', timeframe='1min', session='regular').ts.max()
    assert last < pd.Timestamp('2026-11-27 13:00', tz=NY)
    assert len(st_.bars(start='2026-11-26', end='2026-11-27', timeframe='1min', session='extended')) == 0   # Thanksgiving
