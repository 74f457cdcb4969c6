"""The Alpaca broker (`smallcap.broker.alpaca`): the round trip from submitting an order to its accepted event
(`new` on trade_updates) through `AlpacaBroker` (refusal checks, our client id, the timeout adapter, the event turned
into an `OrderEvent`), against bare alpaca-py (`TradingClient.submit_order` and a `TradingStream` handler) on the same
loopback Alpaca process on 127.0.0.1, in the same run. Target: at most 1.2x."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import medians

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = 'PK-BENCH-LOOPBACK', 'sk-bench-loopback'      # what the loopback accepts (fakes)


def _server(d: Path, symbols: list[str]) -> tuple[subprocess.Popen, dict]:
    pf = d / 'alpaca.port'
    p = subprocess.Popen([sys.executable, '-m', 'smallcap.broker.loopback', '--book', str(d / 'book.sqlite'), '--symbols', *symbols, '--cash', '1e7',
                          '--port-file', str(pf)], cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, 'APCA_API_KEY_ID': KEY, 'APCA_API_SECRET_KEY': SECRET})
    for _ in range(1200):
        if pf.exists(): return p, json.loads(pf.read_text())
        time.sleep(0.05)
    p.kill(); raise RuntimeError('the loopback Alpaca did not start in 60 s')


def run(rounds: int = 5, n: int = 50) -> Iterator[dict]:
    "Seconds for `n` submit -> accepted round trips, ours against bare alpaca-py."
    import pandas as pd
    from alpaca.trading.client import TradingClient
    from alpaca.trading.stream import TradingStream
    from smallcap.broker.alpaca import AlpacaBroker, order_request
    from smallcap.config import Settings
    from smallcap.core import Intent, Order, OrderType, Side, TimeInForce
    from smallcap.execution.broker import EventKind
    syms = ['ABCD', 'EFGH']
    t0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')
    seq = iter(range(10**6))
    order = lambda: Order('bench', syms[0], Side.BUY, 100, t0, Intent.ENTER_LONG, type=OrderType.LIMIT, limit_price=1.0, tif=TimeInForce.GTC, attempt=next(seq))
    p, where = _server(Path(tempfile.mkdtemp()), syms)
    ours = bare_stream = None
    try:
        ours = AlpacaBroker(Settings(alpaca_key_id=KEY, alpaca_secret_key=SECRET, alpaca_url=where['url']), where['stream_url'])
        client = TradingClient(KEY, SECRET, url_override=where['url'])
        seen, cond = set(), threading.Condition()
        async def handler(tu) -> None:
            if str(tu.event) == 'new':
                with cond: seen.add(tu.order.client_order_id); cond.notify_all()
        bare_stream = TradingStream(KEY, SECRET, url_override=where['stream_url'])
        bare_stream.subscribe_trade_updates(handler)
        threading.Thread(target=bare_stream.run, daemon=True).start()

        def mine() -> None:
            for _ in range(n):
                o = order(); ours.submit(o)
                while not any(e.kind is EventKind.ACCEPTED and e.client_id == o.client_id for e in ours.events()):
                    with ours._cond: ours._cond.wait_for(lambda: ours._raw, 5)
        def theirs() -> None:
            for _ in range(n):
                o = order(); client.submit_order(order_request(o))
                with cond: cond.wait_for(lambda: o.client_id in seen, 5)
        mine(); theirs()                                                      # warm both up (connections, streams, caches)
        m = medians(rounds, True, ours=mine, bare=theirs)
        yield {'figure': f'Alpaca submit -> accepted event: {n} round trips through AlpacaBroker to a loopback Alpaca process',
               'seconds': round(m['ours'], 3), 'round_trips_per_second': round(n / m['ours']),
               'reference': 'bare alpaca-py: TradingClient.submit_order + a TradingStream handler, same loopback', 'reference_seconds': round(m['bare'], 3),
               'ratio': round(m['ours'] / m['bare'], 2), 'target_ratio': 1.2, 'rounds': rounds}
    finally:
        if ours is not None: ours.close()
        if bare_stream is not None and bare_stream._loop is not None: bare_stream.stop()
        p.send_signal(signal.SIGTERM); p.wait(30)
