"""The paper broker server (`smallcap.live.paper`): round trips per second of `submit` and `on_bar` through `PaperBroker`
to a server process on 127.0.0.1 (each change applied, committed with WAL and `synchronous=FULL`, then answered), against
the in-process `SimBroker` doing the same in the same run; and the restart of a book holding a day of 1-minute bars over
300 symbols (the command log replayed into a fresh simulator), against the same bars through an in-process `SimBroker`.
No target; rates and seconds are reported."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians

ROOT = Path(__file__).resolve().parents[1]


def _server(book: Path, symbols: list[str]) -> tuple[subprocess.Popen, str]:
    pf = book.with_suffix('.port')
    p = subprocess.Popen([sys.executable, '-m', 'smallcap.live.paper', '--book', str(book), '--symbols', *symbols, '--cash', '1e7', '--port-file', str(pf)],
                         cwd=ROOT, stdout=subprocess.DEVNULL)
    for _ in range(1200):
        if pf.exists(): return p, f"http://127.0.0.1:{pf.read_text()}"
        time.sleep(0.05)
    p.kill(); raise RuntimeError('paper server did not start in 60 s')


def run(rounds: int = 3, n: int = 200, symbols: int = 300) -> Iterator[dict]:
    "Round trips per second of submit and on_bar, remote against in-process; restart seconds of a day's book."
    import numpy as np
    import pandas as pd
    from smallcap.core import Intent, Order, OrderType, Side, TimeInForce
    from smallcap.execution.sim import SimBroker
    from smallcap.live.paper import PaperBroker, PaperServer
    syms = [f"S{k:03d}" for k in range(symbols)]
    t0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')
    rng = np.random.default_rng(0)
    c = 5 + rng.random(symbols)
    bar = lambda i: (t0 + pd.Timedelta(minutes=i), 1, c, c * 1.01, c * 0.99, c, np.full(symbols, 1e5), np.ones(symbols, bool), np.full(symbols, 5e-4))
    tmp = Path(tempfile.mkdtemp())
    k = iter(range(10**6))
    # resting limit orders far from the market: submits are answered, and every bar tries them without filling
    orders = lambda r: [Order('bench', syms[i % symbols], Side.BUY, 100, t0, Intent.ENTER_LONG, type=OrderType.LIMIT, limit_price=1.0,
                              tif=TimeInForce.GTC, attempt=r * n + i) for i in range(n)]
    p, url = _server(tmp / 'book.sqlite', syms)
    try:
        pb, sim = PaperBroker(url, timeout=30), SimBroker(syms, 1e7)
        pb.info()
        lots = {'remote': iter([orders(r) for r in range(2 * rounds + 2)]), 'local': iter([orders(r) for r in range(2 * rounds + 2)])}
        bars = {'remote': iter(range(0, 10**6, n)), 'local': iter(range(0, 10**6, n))}
        def submits(b, who):
            for o in next(lots[who]): b.submit(o)
        def on_bars(b, who):
            s = next(bars[who])
            for i in range(s, s + n): b.on_bar(*bar(i))
        m = medians(rounds, True, remote=lambda: submits(pb, 'remote'), local=lambda: submits(sim, 'local'))
        yield {'figure': f'paper broker submit: {n} orders through PaperBroker to a server process (committed with synchronous=FULL before each answer)',
               'seconds': round(m['remote'], 3), 'round_trips_per_second': round(n / m['remote']),
               'reference': 'SimBroker.submit in process', 'reference_seconds': round(m['local'], 4),
               'reference_per_second': round(n / m['local']), 'ratio': round(m['remote'] / m['local'], 1), 'rounds': rounds}
        m = medians(rounds, True, remote=lambda: on_bars(pb, 'remote'), local=lambda: on_bars(sim, 'local'))
        working = len(sim.open_orders())
        yield {'figure': f'paper broker on_bar: {n} bars of {symbols} symbols, {working} resting orders, through PaperBroker to a server process',
               'seconds': round(m['remote'], 3), 'round_trips_per_second': round(n / m['remote']),
               'reference': 'SimBroker.on_bar in process, the same bars and orders', 'reference_seconds': round(m['local'], 4),
               'reference_per_second': round(n / m['local']), 'ratio': round(m['remote'] / m['local'], 1), 'rounds': rounds}
    finally:
        p.send_signal(signal.SIGTERM); p.wait(30)
    # restart: a day (390 1-minute bars over `symbols` symbols, with working orders) replayed from the book
    books = {every: tmp / f'day{every}.sqlite' for every in (0, 100)}          # no snapshot; a snapshot every 100 commands
    for every, book in books.items():
        srv = PaperServer(book, syms, 1e7, snapshot_every=every).start()
        try:
            day = PaperBroker(srv.url, timeout=30)
            for o in orders(0): day.submit(o)
            for i in range(390): day.on_bar(*bar(i))
        finally: srv.stop()
    book = books[0]
    def restart(book=book):
        s = PaperServer(book, snapshot_every=0); s.stop()
    def floor():
        s = SimBroker(syms, 1e7)
        for o in orders(0): s.submit(o)
        for i in range(390): s.on_bar(*bar(i))
    m = medians(rounds, True, restart=restart, floor=floor)
    yield {'figure': f'paper broker restart: a book of {n} orders and 390 1-minute bars over {symbols} symbols replayed into a fresh SimBroker',
           'seconds': round(m['restart'], 3), 'book_mb': round(os.path.getsize(book) / 2**20, 1),
           'reference': 'the same orders and bars through an in-process SimBroker', 'reference_seconds': round(m['floor'], 3),
           'ratio': round(m['restart'] / m['floor'], 2), 'rounds': rounds}
    m = medians(rounds, True, snap=lambda: restart(books[100]), full=restart)
    yield {'figure': f'paper broker restart from a snapshot: the same book with a snapshot every 100 commands (the newest loaded, the rest replayed)',
           'seconds': round(m['snap'], 3), 'book_mb': round(os.path.getsize(books[100]) / 2**20, 1),
           'reference': 'the whole command log replayed (no snapshot)', 'reference_seconds': round(m['full'], 3),
           'ratio': round(m['snap'] / m['full'], 2), 'rounds': rounds}
