"""A live recorder appends for minutes while three reader processes query: no error, no lost and no duplicated tick.

The writer records batches of trades with consecutive ids as Parquet segments and compacts them into the
database file every 30 s (so readers also meet the write lock). Each reader repeatedly reads every trade and
checks that what it sees is exactly ids 0..n-1 (nothing missing, nothing twice) with n never shrinking, and
runs a bars query. SMALLCAP_CONCURRENCY_SECONDS sets the duration (default 120).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from smallcap.data.store import TickStore

SECONDS = float(os.environ.get('SMALLCAP_CONCURRENCY_SECONDS', 120))

WRITER = textwrap.dedent("""
    import sys, time, json, numpy as np, pandas as pd
    from smallcap.data.store import TickStore
    st = TickStore(sys.argv[1]); rec = st.recorder('live:test')
    end = time.time() + float(sys.argv[2]); next_compact = time.time() + 30
    rng = np.random.default_rng(0); n = appends = compactions = 0
    t0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')
    while time.time() < end:
        k = int(rng.integers(50, 400))
        ts = t0 + pd.to_timedelta(n + np.arange(k), 'ms')
        rec.append_trades(pd.DataFrame(dict(symbol=rng.choice(['ABCD', 'WXYZ'], k), ts=ts, price=np.round(rng.uniform(2, 3, k), 2),
                                            size=pd.array(rng.integers(1, 10, k) * 100, dtype='Int64'), id=pd.array(n + np.arange(k), dtype='Int64'))))
        n += k; appends += 1
        if time.time() > next_compact: st.compact(); compactions += 1; next_compact = time.time() + 30
        time.sleep(0.02)
    print(json.dumps(dict(written=n, appends=appends, compactions=compactions)))
    open(sys.argv[1] + '.done', 'w').close()                     # readers take one last look after this
""")

READER = textwrap.dedent("""
    import os, sys, time, json, numpy as np
    from smallcap.data.store import TickStore
    st = TickStore(sys.argv[1], read_only=True)
    done = os.path.exists; last = queries = 0; errors = []
    final = False
    while not final:
        final = done(sys.argv[1] + '.done')
        t = st.trades(as_='arrow')
        ids = np.sort(t.column('id').to_numpy())
        n = len(ids)
        if n < last: errors.append(f'count fell from {last} to {n}')
        if n and not (ids[0] == 0 and ids[-1] == n - 1 and (np.diff(ids) == 1).all()): errors.append(f'ids are not exactly 0..{n-1} (lost or duplicated ticks)')
        if queries % 10 == 0: st.bars(['ABCD', 'WXYZ'], timeframe='1min', session=None)
        last, queries = n, queries + 1
        if len(errors) > 5: break
    print(json.dumps(dict(last=last, queries=queries, errors=errors)))
""")


@pytest.mark.slow
def test_one_writer_three_readers(tmp_path):
    path = tmp_path / 'live.duckdb'
    TickStore(path)                                              # created before the processes start
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    w = subprocess.Popen([sys.executable, '-c', WRITER, str(path), str(SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rs = [subprocess.Popen([sys.executable, '-c', READER, str(path), str(SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
          for _ in range(3)]
    wout, werr = w.communicate(timeout=SECONDS + 300)
    assert w.returncode == 0, werr
    wres = json.loads(wout)
    assert wres['compactions'] >= (1 if SECONDS >= 60 else 0) and wres['appends'] > SECONDS
    for r in rs:
        out, err = r.communicate(timeout=SECONDS + 300)
        assert r.returncode == 0, err
        res = json.loads(out)
        assert res['errors'] == [], res['errors']
        assert res['queries'] > 10
        assert res['last'] == wres['written'], (res, wres)        # the readers' final view holds every tick exactly once
    st = TickStore(path)
    st.compact()
    t = st.trades(as_='arrow')
    assert t.num_rows == wres['written'] and len(set(t.column('id').to_pylist())) == wres['written']
    assert not list(st.segments_dir.rglob('*.parquet'))
