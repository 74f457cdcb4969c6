"""The tick store: ingest of 10M trades, one symbol-day of bars, and all symbols' bars, each against bare DuckDB.

- ingest: `TickStore.ingest_trades` (validation, duplicate checks, transaction, log) against a bare
  `CREATE TABLE AS SELECT * FROM arrow_table` of the same Arrow batch; the ratio is bare time / our time
  (throughput relative to bare DuckDB; target >= 0.5).
- one symbol-day of 1-minute bars from the 10M-trade store: `store.bars(...)` as a user calls it (a fresh
  read connection per call) and inside `store.session()`; target <= 50 ms, bare SQL on an open connection beside it.
- all symbols' 1-minute bars over the store: `store.bars(session=None)` against the equivalent bare SQL
  (same bucketing and aggregates on an open connection); target <= 1.5x.
"""
from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians

N = 10_000_000
SYMBOLS = 200
DAYS = 20


def _batch(n: int = N, seed: int = 0):
    import numpy as np, pyarrow as pa
    rng = np.random.default_rng(seed)
    syms = np.array([f"S{i:03d}" for i in range(SYMBOLS)])
    t0 = 1_767_600_000 * 10**6                                   # 2026-01-05 08:00 UTC
    return pa.table({'symbol': pa.array(syms[rng.integers(0, SYMBOLS, n)]),
                     'ts': pa.array(t0 + np.sort(rng.integers(0, DAYS * 86_400 * 10**6, n)), pa.timestamp('us', tz='UTC')),
                     'price': np.round(rng.uniform(1, 20, n), 2), 'size': rng.integers(1, 50, n) * 100,
                     'exchange': pa.array(np.array(list('VPQKZ'))[rng.integers(0, 5, n)]),
                     'conditions': pa.array(np.array(['@', '@,F', '@,T'])[rng.integers(0, 3, n)]), 'id': np.arange(n)})


def _med(f, rounds: int) -> float:
    return medians(rounds, f=f)['f']


BARE_1MIN = """SELECT symbol, make_timestamp(epoch_us(ts) // 60000000 * 60000000)::TIMESTAMPTZ AS ts, arg_min(price, ts) AS open,
                      max(price) AS high, min(price) AS low, arg_max(price, ts) AS close, sum(size) AS volume,
                      sum(price * size) / sum(size) AS vwap, count(*) AS trades FROM db.trades {where} GROUP BY ALL ORDER BY symbol, ts"""


def run(rounds: int = 3) -> Iterator[dict]:
    "Ingest, one-symbol-day and all-symbol bar figures against bare DuckDB in the same run."
    import duckdb
    from smallcap.data.store import TickStore
    batch = _batch()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        def bare_ingest():
            f = d / 'bare.duckdb'; f.unlink(missing_ok=True)
            con = duckdb.connect(str(f)); con.register('batch', batch)
            con.execute("CREATE TABLE trades AS SELECT * FROM batch"); con.close()
        def our_ingest():
            f = d / 'ours.duckdb'; f.unlink(missing_ok=True)
            TickStore(f).ingest_trades(batch, source='bench')
        bare, ours = [], []
        for _ in range(rounds):                                  # interleaved, so load drift hits both alike
            bare.append(_med(bare_ingest, 1)); ours.append(_med(our_ingest, 1))
        b, o = statistics.median(bare), statistics.median(ours)
        yield {'figure': f'ingest {N:,} trades (throughput vs bare)', 'seconds': round(o, 3), 'reference': 'bare DuckDB CREATE TABLE AS from Arrow',
               'reference_seconds': round(b, 3), 'ratio': round(b / o, 3), 'target_ratio': 0.5, 'better': 'higher', 'rounds': rounds}

        st = TickStore(d / 'ours.duckdb', read_only=True)
        day = dict(start='2026-01-07', end='2026-01-08', timeframe='1min', session=None)
        con = duckdb.connect(); con.execute("SET TimeZone='UTC'"); con.execute(f"ATTACH '{d / 'ours.duckdb'}' AS db (READ_ONLY)")
        where = "WHERE symbol = 'S007' AND ts >= '2026-01-07 05:00+00' AND ts < '2026-01-08 05:00+00'"
        con.sql(BARE_1MIN.format(where=where)).fetchall()        # warm
        bare_day = _med(lambda: con.sql(BARE_1MIN.format(where=where)).df(), rounds * 3)
        con.close()
        st.bars('S007', **day)
        ours_day = _med(lambda: st.bars('S007', **day), rounds * 3)
        with st.session():
            st.bars('S007', **day)
            ours_sess = _med(lambda: st.bars('S007', **day), rounds * 3)
        for name, secs in [('one symbol-day of 1-minute bars (fresh connection per call)', ours_day),
                           ('one symbol-day of 1-minute bars (inside store.session())', ours_sess)]:
            yield {'figure': name, 'seconds': round(secs, 4), 'reference': 'bare DuckDB SQL on an open connection',
                   'reference_seconds': round(bare_day, 4), 'ratio': round(secs / bare_day, 3), 'target_seconds': 0.05, 'rounds': rounds * 3}

        con = duckdb.connect(); con.execute("SET TimeZone='UTC'"); con.execute(f"ATTACH '{d / 'ours.duckdb'}' AS db (READ_ONLY)")
        bare_all, ours_all = [], []
        for _ in range(rounds):
            bare_all.append(_med(lambda: con.sql(BARE_1MIN.format(where='')).to_arrow_table(), 1))
            ours_all.append(_med(lambda: st.bars(timeframe='1min', session=None, as_='arrow'), 1))
        con.close()
        b, o = statistics.median(bare_all), statistics.median(ours_all)
        yield {'figure': "all symbols' 1-minute bars", 'seconds': round(o, 3), 'reference': 'bare DuckDB SQL (same buckets and aggregates)',
               'reference_seconds': round(b, 3), 'ratio': round(o / b, 3), 'target_ratio': 1.5, 'rounds': rounds}
        reg = _med(lambda: st.bars(start='2026-01-05', end='2026-02-05', timeframe='1min', session='regular', as_='arrow'), 1)
        yield {'figure': "all symbols' 1-minute bars, regular session only", 'seconds': round(reg, 3), 'reference': 'bare DuckDB SQL (all hours)',
               'reference_seconds': round(b, 3), 'ratio': round(reg / b, 3), 'rounds': 1}
