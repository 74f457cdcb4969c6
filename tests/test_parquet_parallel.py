"""Many worker processes query one hive-partitioned Parquet export at once and agree with the DuckDB store."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

from smallcap.data.store import ParquetStore, TickStore
from store_helpers import trades

SYMS = ['ABCD', 'WXYZ', 'QRST', 'LMNO', 'EFGH', 'IJKL']


def _work(args):
    root, sym = args
    return ParquetStore(root).bars(sym, start='2026-03-02', end='2026-03-04', timeframe='5min', session='extended')


@pytest.mark.slow
def test_parallel_workers_read_the_export(tmp_path):
    st = TickStore(tmp_path / 's.duckdb')
    st.ingest_trades(pd.concat([trades(30_000, symbols=SYMS, start='2026-03-02 04:00', span_s=16 * 3600, seed=s, id0=s * 10**6)
                                for s in range(2)]).drop_duplicates(), source='test')
    rows = st.export_parquet(tmp_path / 'pq')
    assert rows['trades'] == 60_000
    parts = sorted(p.relative_to(tmp_path / 'pq' / 'trades').as_posix() for p in (tmp_path / 'pq' / 'trades').glob('date=*/symbol=*'))
    assert len(parts) == 6 and all(p.startswith('date=2026-03-02/symbol=') for p in parts)
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context('spawn')) as ex:
        got = list(ex.map(_work, [(str(tmp_path / 'pq'), s) for s in SYMS * 2]))
    for s, g in zip(SYMS * 2, got):
        pd.testing.assert_frame_equal(g, st.bars(s, start='2026-03-02', end='2026-03-04', timeframe='5min', session='extended'))
