"""The live journal's durable write rate: `Journal.event` (an order event with its fill: two rows, one transaction,
committed with WAL and `synchronous=FULL` before it returns) against the same rows inserted by bare `sqlite3` with the
same pragmas and one transaction per event (the floor the disk's sync sets). No target; events per second are reported.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians


def run(rounds: int = 3, n: int = 300) -> Iterator[dict]:
    "Durable journal events per second, against bare sqlite3 inserts of the same rows."
    import pandas as pd
    from smallcap.core import Fill, Side
    from smallcap.execution.broker import EventKind, OrderEvent
    from smallcap.live.journal import Journal
    t0 = pd.Timestamp('2026-03-02 15:00', tz='UTC')
    evs = [OrderEvent(EventKind.FILLED, f'c{k}', t0, Fill(f'c{k}', 'ABC', Side.BUY, 100, 5.0, t0), 100, 0) for k in range(n)]
    tmp = Path(tempfile.mkdtemp())
    k = iter(range(10**6))

    def ours() -> None:
        j = Journal(tmp / f'j{next(k)}.sqlite', 'PA1', 'bench')
        for ev in evs: j.event(ev)
        j.close()

    def bare() -> None:
        con = sqlite3.connect(tmp / f'b{next(k)}.sqlite', isolation_level=None)
        con.execute('PRAGMA journal_mode=WAL'); con.execute('PRAGMA synchronous=FULL')
        con.execute('CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, kind TEXT, client_id TEXT, payload TEXT)')
        for r in rows:
            con.execute('BEGIN'); con.executemany('INSERT INTO events (ts, kind, client_id, payload) VALUES (?, ?, ?, ?)', r); con.execute('COMMIT')
        con.close()
    ours()                                                                    # warm up, and the rows bare sqlite3 writes
    e = Journal(tmp / 'j0.sqlite', 'PA1', 'bench').events()
    flat = [(t.value, kd, c, json.dumps(p)) for t, kd, c, p in zip(e.ts, e.kind, e.client_id, e.payload)]
    rows = [flat[i:i + 2] for i in range(0, len(flat), 2)]
    bare()
    m = medians(rounds, True, ours=ours, bare=bare)
    yield {'figure': f'durable journal writes: {n} order events with fills (WAL, synchronous=FULL, one transaction each)',
           'seconds': round(m['ours'], 3), 'events_per_second': round(n / m['ours']),
           'reference': 'bare sqlite3: the same rows, same pragmas, one transaction per event (JSON encoded outside the timing)',
           'reference_seconds': round(m['bare'], 3), 'reference_events_per_second': round(n / m['bare']), 'ratio': round(m['ours'] / m['bare'], 3),
           'rounds': rounds}
