"""Shared helpers for store tests: deterministic tick batches and a content snapshot of a store."""
from __future__ import annotations

import numpy as np
import pandas as pd

from smallcap.data.store import TABLES, TickStore


def trades(n: int, symbols=('ABCD', 'WXYZ', 'QRST'), start='2026-03-02 09:30', id0: int = 0, seed: int = 0,
           span_s: float = 6.5 * 3600) -> pd.DataFrame:
    "n trades with unique ids, sorted by time, starting at `start` New York time."
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz='America/New_York').tz_convert('UTC')
    off = np.sort(rng.integers(0, int(span_s * 1e6), n))
    return pd.DataFrame(dict(symbol=rng.choice(list(symbols), n), ts=t0 + pd.to_timedelta(off, 'us'),
                             price=np.round(rng.uniform(1.5, 3.5, n), 2), size=pd.array(rng.integers(1, 50, n) * 100, dtype='Int64'),
                             exchange=rng.choice(list('VPQKZ'), n), conditions='@', id=pd.array(np.arange(id0, id0 + n), dtype='Int64')))


def snapshot(store: TickStore) -> dict:
    "Every row of every table, sorted: two equal snapshots mean an unchanged store."
    out = {}
    with store.connect() as con:
        for t in [*TABLES, 'meta', 'ingests']:
            df = con.sql(f"SELECT * FROM db.{t}").df()
            out[t] = df.sort_values(list(df.columns)).reset_index(drop=True) if len(df) else df
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a: pd.testing.assert_frame_equal(a[k], b[k], obj=k)
