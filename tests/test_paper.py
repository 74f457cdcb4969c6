"""The paper broker server as a real process on 127.0.0.1: identity with the in-process SimBroker, SIGTERM, kill -9 and
die-after-commit at random points with restarts from the same book (no duplicate order, the same fills, positions and cash
as a run that never crashed), dropped replies resolved by lookup, 503 retried, slow replies as unknown outcomes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from smallcap.core import Intent, Order, OrderType, Side, TimeInForce
from smallcap.execution.broker import BrokerError, OrderRejected, RetryableError, UnknownOutcome, submit_once
from smallcap.execution.sim import SimBroker
from smallcap.live.journal import record
from smallcap.live.paper import Book, PaperBroker, state_record

ROOT = Path(__file__).resolve().parents[1]
SYMS = ['ABC', 'XYZ', 'QQQ']
T0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')


class Server:
    "A paper server process: started from a book, restartable on the same port."
    def __init__(self, book: Path, *args: str) -> None:
        self.book, self.args, self.port, self.proc = book, list(args), 0, None
        self.start()

    def start(self, *extra: str) -> None:
        pf = self.book.with_suffix('.port')
        pf.unlink(missing_ok=True)
        cmd = [sys.executable, '-m', 'smallcap.live.paper', '--book', str(self.book), '--port', str(self.port), '--port-file', str(pf), *self.args, *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(600):                                    # bounded: 30 s
            if pf.exists(): break
            if self.proc.poll() is not None: raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            time.sleep(0.05)
        else: raise AssertionError('server did not start in 30 s')
        self.port = int(pf.read_text())

    @property
    def url(self) -> str: return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None: os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def ensure(self) -> bool:
        "Restart the server if it died (True: it had)."
        if self.proc.poll() is None: return False
        self.proc.wait(); self.start(); return True

    def stop(self) -> int:
        if self.proc.poll() is None: self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


@pytest.fixture
def server(tmp_path):
    made = []
    def make(*args: str, book: str = 'book.sqlite') -> Server:
        s = Server(tmp_path / book, *args); made.append(s); return s
    yield make
    for s in made: s.kill()


def stream(n_bars: int = 40, seed: int = 0) -> list[tuple]:
    "A session as a list of operations: submits (entries, stops, limits), cancels, replaces and bars."
    rng = np.random.default_rng(seed)
    ops, k = [], len(SYMS)
    for i in range(n_bars):
        t = T0 + pd.Timedelta(minutes=i)
        for _ in range(int(rng.integers(0, 3))):
            s, buy = SYMS[int(rng.integers(k))], bool(rng.random() < .6)
            kind = int(rng.integers(3))
            if kind == 0: o = Order('s1', s, Side.BUY if buy else Side.SELL, int(rng.integers(1, 5)) * 100, t, Intent.ENTER_LONG if buy else Intent.ENTER_SHORT, tif=TimeInForce.GTC, attempt=len(ops))
            elif kind == 1: o = Order('s1', s, Side.BUY if buy else Side.SELL, 200, t, Intent.ENTER_LONG if buy else Intent.ENTER_SHORT, type=OrderType.LIMIT,
                                      limit_price=round(5 + (-.02 if buy else .02), 2), tif=TimeInForce.DAY, attempt=len(ops))
            else: o = Order('s1', s, Side.SELL if buy else Side.BUY, 100, t, Intent.STOP_LOSS, type=OrderType.STOP, stop_price=round(5 - .03 if buy else 5 + .03, 2),
                            tif=TimeInForce.GTC, attempt=len(ops))
            ops.append(('submit', o))
        if i % 9 == 4: ops.append(('cancel_first',))
        if i % 10 == 7: ops.append(('replace_last',))
        c = 5 + rng.normal(0, .03, k); o_ = c + rng.normal(0, .02, k)
        ops.append(('bar', (t, 1 + i // 20, o_, np.maximum(o_, c) + .02, np.minimum(o_, c) - .02, c, rng.integers(500, 5000, k).astype(float),
                            rng.random(k) > .05, np.full(k, .0005))))
    return ops


def play(b, ops, on_error=None) -> list[dict]:
    "Run a stream on a broker (no listener, orders between bars); the events seen. `on_error(op)` handles a failed operation (a crash) and says to retry."
    seen = []
    for op in ops:
        while True:
            try:
                if op[0] == 'submit': submit_once(b, op[1])
                elif op[0] == 'cancel_first':
                    if w := b.open_orders(): b.cancel(w[0].client_id)
                elif op[0] == 'replace_last':
                    if w := b.open_orders(): b.replace(w[-1].client_id, qty=w[-1].filled + 100)
                else: b.on_bar(*op[1])
                break
            except (UnknownOutcome, RetryableError, BrokerError) as e:
                if isinstance(e, OrderRejected) or on_error is None: raise
                on_error(op)
        seen += [record(e) for e in b.events()]
    return seen


def same_book(pb: PaperBroker, ref: SimBroker, ops) -> None:
    "Every order, fill, position and the account as the reference has them."
    test = lambda a, b: (a == b) or pytest.fail(f"{a!r}\n!=\n{b!r}")
    test([record(f) for f in pb.fills_since(T0)], [record(f) for f in ref.fills_since(T0)])
    test(pb.positions(), ref.positions())
    test(pb.account(), ref.account())
    for op in ops:
        if op[0] == 'submit': test(state_record(pb.order(op[1].client_id)), state_record(ref.order(op[1].client_id)))


def no_duplicates(book: Path) -> int:
    "Every order at the broker once, by client id and by content; how many orders."
    b = Book(book)
    try: subs = [a['order'] for op, a in b.commands() if op == 'submit']
    finally: b.close()
    ids = Counter(o['client_id'] for o in subs)
    content = Counter(tuple(sorted((k, str(v)) for k, v in o.items() if k not in ('client_id', 'attempt'))) for o in subs)
    assert max(ids.values()) == 1, [c for c, n in ids.items() if n > 1]
    assert max(content.values()) == 1, [c for c, n in content.items() if n > 1]
    return len(subs)


def reference_and_server(server, seed: int, *extra: str):
    "A stream, its run on an in-process SimBroker (the reference, its events), and a server process of the same configuration."
    ops = stream(40, seed=seed)
    ref = SimBroker(SYMS, 50_000.0, participation=0.2)
    return ops, ref, play(ref, ops), server('--symbols', *SYMS, '--cash', '50000', '--participation', '0.2', *extra)


def test_identity_with_simbroker(server):
    "The same orders and bars through a server process and an in-process SimBroker: the same events, fills, positions, cash."
    ops, ref, want, s = reference_and_server(server, 1)
    pb = PaperBroker(s.url, timeout=5)
    assert play(pb, ops) == want
    assert sum(e['fill'] is not None for e in want) > 10                 # the session trades
    same_book(pb, ref, ops)
    assert s.stop() == 0                                                  # SIGTERM: a clean exit


def test_restart_and_bad_config(server, tmp_path):
    "A SIGTERMed server restarted from its book has the same book; a book reopened with other settings is one line of error, exit 2."
    ops = stream(15, seed=2)
    ref = SimBroker(SYMS, 50_000.0); play(ref, ops)
    s = server('--symbols', *SYMS, '--cash', '50000')
    play(PaperBroker(s.url, timeout=5), ops)
    assert s.stop() == 0
    s.start()
    pb = PaperBroker(s.url, timeout=5)
    same_book(pb, ref, ops)
    assert pb.info()['replayed'] > 15
    r = subprocess.run([sys.executable, '-m', 'smallcap.live.paper', '--book', str(s.book), '--cash', '1'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'cash=50000.0' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_kill9_at_random_points(server):
    "SIGKILL at random instants (a timer) and die-after-commit at random requests; restart from the book and re-send what was unanswered."
    ops, ref, want, s = reference_and_server(server, 3, '--snapshot-every', '10')   # restarts from snapshots and from the log after them
    pb = PaperBroker(s.url, timeout=2, retries=1)
    rng = random.Random(7)
    crashes = {'kill': 0, 'restarts': 0}                       # the die-after-commit crashes: restarts - kill

    def arm() -> None:
        "The next crash: a SIGKILL after a random delay, or the server dying right after committing a random request."
        if rng.random() < .5:
            pid = s.proc.pid
            def k():
                time.sleep(rng.uniform(0.01, 0.25))
                try: os.kill(pid, signal.SIGKILL); crashes['kill'] += 1
                except ProcessLookupError: pass
            threading.Thread(target=k, daemon=True).start()
        else:
            import requests
            requests.post(s.url + '/admin/faults', json={'faults': [{'op': rng.choice(['submit', 'on_bar', '*']), 'action': 'die', 'skip': rng.randrange(6)}]}, timeout=5)

    def on_error(op) -> None:
        for _ in range(100):                                    # bounded: the process is dying
            if s.proc.poll() is not None: break
            time.sleep(0.02)
        died = s.proc.poll()
        if died is not None:
            crashes['restarts'] += 1
            s.ensure()
            if crashes['restarts'] < 6: arm()

    arm()
    got = play(pb, ops, on_error)
    assert crashes['restarts'] >= 3, crashes                  # the test did crash the server
    assert got == want                                        # every event once, in order, across restarts
    n = no_duplicates(s.book)
    assert n == sum(op[0] == 'submit' for op in ops)
    s.kill(); s.start()                                       # a last restart from the book: the same book
    pb = PaperBroker(s.url, timeout=5)
    assert pb.info()['snapshot'] > 0
    same_book(pb, ref, ops)


def test_dropped_replies_resolved_by_lookup(server):
    "A submit applied whose reply is dropped: submit_once looks it up (one order); a dropped on_bar reply: its events come with the retry."
    import requests
    s = server('--symbols', *SYMS)
    pb = PaperBroker(s.url, timeout=2)
    o = Order('s1', 'ABC', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    requests.post(s.url + '/admin/faults', json={'faults': [{'op': 'submit', 'action': 'drop'}]}, timeout=5)
    with pytest.raises(UnknownOutcome): pb.submit(o)
    requests.post(s.url + '/admin/faults', json={'faults': [{'op': 'submit', 'action': 'drop'}]}, timeout=5)
    st = submit_once(pb, o)
    assert st.client_id == o.client_id and st.is_open
    requests.post(s.url + '/admin/faults', json={'faults': [{'op': 'on_bar', 'action': 'drop'}]}, timeout=5)
    one = np.ones(3)
    pb.on_bar(T0, 1, 5 * one, 5.1 * one, 4.9 * one, 5 * one, 1e4 * one, one > 0, 0 * one)     # dropped, retried: already processed
    ev = pb.events()
    assert [(e.kind.value, e.client_id) for e in ev] == [('filled', o.client_id)]
    assert pb.positions()['ABC'].qty == 100
    assert no_duplicates(s.book) == 1


def test_503_retried_and_slow_replies(server):
    "503 before applying: submit_once and the idempotent calls retry; more 503s than retries is a RetryableError; a reply slower than the timeout is an unknown outcome."
    import requests
    s = server('--symbols', *SYMS)
    pb = PaperBroker(s.url, timeout=0.5, retries=2)
    fault = lambda *f: requests.post(s.url + '/admin/faults', json={'faults': list(f)}, timeout=5).raise_for_status()
    o = Order('s1', 'XYZ', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    fault({'op': 'submit', 'action': '503', 'times': 2})
    assert submit_once(pb, o, retries=3).client_id == o.client_id
    fault({'op': 'open_orders', 'action': '503', 'times': 2})
    assert [x.client_id for x in pb.open_orders()] == [o.client_id]
    fault({'op': 'positions', 'action': '503', 'times': 5})
    with pytest.raises(RetryableError): pb.positions()
    o2 = Order('s1', 'QQQ', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    fault({'op': 'submit', 'action': 'delay', 'seconds': 1.0})
    with pytest.raises(UnknownOutcome): pb.submit(o2)
    assert pb.order(o2.client_id) is not None                 # it was applied
    assert no_duplicates(s.book) == 2
    with pytest.raises(OrderRejected, match='not in the simulator'): pb.submit(Order('s1', 'NOPE', Side.BUY, 1, T0, Intent.ENTER_LONG))
    r = requests.post(s.url + '/admin/faults', json={'faults': [{'op': 'submit', 'action': 'explode'}]}, timeout=5)
    assert r.status_code == 400 and 'action must be one of' in r.json()['message']
    r = requests.post(s.url + '/call', json={'op': 'on_bar', 'args': {'time': T0.value + 10**11, 'day': 1, 'open': [1.0]}}, timeout=5)
    assert r.status_code == 400 and "'open' has shape (1,)" in r.json()['message']


def test_die_after_commit_flag(server):
    "Started with --fault: the server dies (SIGKILL) right after committing the second submit; restarted from the book, submit_once finds the order: one order, not two."
    import json
    s = server('--symbols', *SYMS, '--fault', json.dumps({'op': 'submit', 'action': 'die', 'skip': 1}))
    pb = PaperBroker(s.url, timeout=2, retries=0)
    a = Order('s1', 'ABC', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    b = Order('s1', 'XYZ', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    pb.submit(a)
    with pytest.raises(UnknownOutcome): pb.submit(b)
    assert s.proc.wait(10) == -signal.SIGKILL
    s.args = s.args[:-2]; s.start()                          # restarted without the fault
    assert submit_once(pb, b).client_id == b.client_id       # committed before the death: found, not sent again
    assert no_duplicates(s.book) == 2
    assert [x.client_id for x in pb.open_orders()] == [a.client_id, b.client_id]


@settings(max_examples=6)
@given(seed=st.integers(0, 2**31), participation=st.sampled_from([None, 0.05, 0.5]))
def test_identity_property(tmp_path_factory, seed, participation):
    "Any stream of orders and bars gives the same events, fills, positions and cash through the server (in a thread) as in process."
    from smallcap.live.paper import PaperServer
    ops = stream(25, seed=seed)
    ref = SimBroker(SYMS, 50_000.0, participation=participation)
    want = play(ref, ops)
    with PaperServer(tmp_path_factory.mktemp('prop') / 'b.sqlite', SYMS, 50_000.0, participation=participation) as srv:
        pb = PaperBroker(srv.url, timeout=5)
        assert play(pb, ops) == want
        same_book(pb, ref, ops)


def test_port_file_follows_a_restart_on_another_port(server):
    "A client given the port file finds a server restarted on another port (kill -9, then a new free port)."
    s = server('--symbols', *SYMS)
    pb = PaperBroker(port_file=s.book.with_suffix('.port'), timeout=2, retries=1)
    o = Order('s1', 'ABC', Side.BUY, 100, T0, Intent.ENTER_LONG, tif=TimeInForce.GTC)
    pb.submit(o)
    old = s.port
    s.kill(); s.port = 0; s.start()
    assert s.port != old
    assert [x.client_id for x in pb.open_orders()] == [o.client_id]   # the lost connection: the port file read again, the retry answered
    assert pb.url == s.url
    with pytest.raises(Exception, match='a url or a port_file'): PaperBroker()
