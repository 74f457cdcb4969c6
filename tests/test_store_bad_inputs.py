"""Each kind of bad input is refused with a clear error naming rows or fields, and the store is left unchanged."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from smallcap.core import DataError, ValidationError
from smallcap.data.files import import_file
from smallcap.data.store import TickStore
from store_helpers import assert_same, snapshot, trades


@pytest.fixture
def store(tmp_path):
    st = TickStore(tmp_path / 'bad.duckdb')
    st.ingest_trades(trades(500), source='seed')
    st.ingest_quotes(pd.DataFrame(dict(symbol='ABCD', ts=pd.date_range('2026-03-02 14:30', periods=3, freq='1s', tz='UTC'), bid=[2.0, 2.01, 2.02],
                                       ask=[2.02, 2.03, 2.04], bid_size=pd.array([100] * 3, dtype='Int64'), ask_size=pd.array([100] * 3, dtype='Int64'))), source='seed')
    return st


def _bad_trades(kind):
    t = trades(50, seed=1, id0=10_000)
    if kind == 'naive_timestamp': return t.assign(ts=t.ts.dt.tz_localize(None)), 'naive_timestamp', None
    if kind == 'nan_price':
        a = pa.Table.from_pandas(t, preserve_index=False)
        return a.set_column(a.column_names.index('price'), 'price', pa.array(np.where(np.arange(50) == 7, np.nan, t.price))), 'non_positive_price', [7]
    if kind == 'null_price': t.loc[8, 'price'] = np.nan; return t, 'missing_value', [8]
    if kind == 'negative_price': t.loc[[3, 30], 'price'] = -2.0; return t, 'non_positive_price', [3, 30]
    if kind == 'zero_price': t.loc[5, 'price'] = 0.0; return t, 'non_positive_price', [5]
    if kind == 'negative_size': t.loc[9, 'size'] = -100; return t, 'non_positive_size', [9]
    if kind == 'unknown_column': return t.assign(venue_code=1), 'unknown_column', None
    if kind == 'wrong_type': return t.assign(size=t['size'].astype(str)), 'wrong_type', None
    if kind == 'duplicate_row': return pd.concat([t, t.iloc[[4, 20]]], ignore_index=True), 'duplicate_row', [50, 51]
    raise KeyError(kind)


@pytest.mark.parametrize('kind', ['naive_timestamp', 'nan_price', 'null_price', 'negative_price', 'zero_price', 'negative_size',
                                  'unknown_column', 'wrong_type', 'duplicate_row'])
def test_bad_trades_refused_and_store_unchanged(store, kind):
    data, rule, rows = _bad_trades(kind)
    before = snapshot(store)
    with pytest.raises(ValidationError) as e:
        store.ingest_trades(data, source='bad')
    assert rule in str(e.value)
    if rows is not None: assert e.value.rows == rows and all(f"row {r}" in str(e.value) for r in rows)
    assert_same(before, snapshot(store))


def test_crossed_quotes_refused(store):
    before = snapshot(store)
    q = pd.DataFrame(dict(symbol='ABCD', ts=pd.date_range('2026-03-02 15:00', periods=4, freq='1s', tz='UTC'), bid=[2.0, 2.05, 2.0, 2.0],
                          ask=[2.02, 2.03, 2.0, 2.01], bid_size=pd.array([100] * 4, dtype='Int64'), ask_size=pd.array([100] * 4, dtype='Int64')))
    with pytest.raises(ValidationError) as e:
        store.ingest_quotes(q, source='bad')
    assert e.value.rows == [1] and 'crossed_quote' in str(e.value)            # a locked quote (bid == ask, row 2) is legal
    assert_same(before, snapshot(store))


def test_truncated_parquet_refused(store, tmp_path):
    f = tmp_path / 't.parquet'
    trades(200, seed=3, id0=50_000).to_parquet(f)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) * 2 // 3])
    before = snapshot(store)
    with pytest.raises(DataError, match='not a readable Parquet file'):
        import_file(store, f, 'trades')
    assert_same(before, snapshot(store))


def test_error_names_every_offending_row_even_beyond_the_message(store):
    t = trades(5000, seed=4, id0=90_000)
    t.loc[t.index[::100], 'price'] = -1.0
    with pytest.raises(ValidationError) as e:
        store.ingest_trades(t, source='bad')
    assert e.value.rows == list(range(0, 5000, 100)) and '... and 45 more' in str(e.value)
