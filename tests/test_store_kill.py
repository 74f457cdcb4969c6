"""kill -9 at a random moment of an ingest, repeatedly: the store always opens and holds each batch whole or not at all."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from smallcap.data.store import TickStore

BATCH = 400_000
WRITER = textwrap.dedent(f"""
    import sys, numpy as np, pandas as pd, pyarrow as pa
    from smallcap.data.store import TickStore
    st = TickStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    k = int(sys.argv[3])
    while True:
        n = {BATCH}
        t0 = pd.Timestamp('2026-03-02 14:30', tz='UTC').value // 1000 + k * 10**9
        tbl = pa.table(dict(symbol=pa.array(np.array(['ABCD', 'WXYZ'])[rng.integers(0, 2, n)]),
                            ts=pa.array(t0 + np.sort(rng.integers(0, 10**8, n)), pa.timestamp('us', tz='UTC')),
                            price=np.round(rng.uniform(1, 5, n), 2), size=rng.integers(1, 100, n), id=np.arange(n) + k * n))
        print('start', k, flush=True)
        st.ingest_trades(tbl, source=f'batch-{{k}}')
        print('done', k, flush=True)
        k += 1
""")


@pytest.mark.slow
def test_kill_9_mid_ingest(tmp_path):
    path = tmp_path / 'kill.duckdb'
    rng = np.random.default_rng(2026)
    k, killed_during = 0, 0
    for attempt in range(8):
        p = subprocess.Popen([sys.executable, '-c', WRITER, str(path), str(attempt), str(k)], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(1.0, 4.0))                        # a random moment: opening, validating, inserting, committing
        os.kill(p.pid, signal.SIGKILL)
        out = p.communicate()[0].split('\n')
        started = [int(l.split()[1]) for l in out if l.startswith('start')]
        killed_during += bool(started) and not any(l == f"done {started[-1]}" for l in out)
        st = TickStore(path)                                     # must open (replaying its log) after every kill
        with st.connect() as con:
            counts = dict(con.sql("SELECT source, count(*) FROM db.trades GROUP BY source").fetchall())
            ids = con.sql("SELECT count(*), count(DISTINCT id) FROM db.trades").fetchall()[0]
        for src, n in counts.items():
            assert n == BATCH, f"attempt {attempt}: {src} holds {n} of {BATCH} rows"
        assert ids[0] == ids[1] == BATCH * len(counts)
        k = max(int(s.split('-')[1]) for s in counts) + 1 if counts else 0
    assert killed_during >= 4, "the kills should mostly land inside an ingest"
