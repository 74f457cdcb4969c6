"""Alpaca as a broker of the live engine (issue 16), proven against the loopback Alpaca (`smallcap.broker.loopback`) with
the real alpaca-py client pointed at it only through its documented `url_override` (`SMALLCAP_ALPACA_URL`):

- a replayed session through `replay(..., broker=LoopbackMarket)` equals the simulator's replay of it: exactly the
  in-process `SimBroker` when nothing is placed inside a bar, and, with stops and targets placed at fills, exactly a
  `SimBroker` whose events reach the engine after each bar (the remote semantics, as `tests/test_paper_engine.py`);
- fault drills, one test each (429 storm, 5xx, timeout after accept, socket drop, silent socket, duplicated and
  out-of-order updates, a server restart mid-session): no order twice at the broker (by client id and by content), no
  fill lost or counted twice, the same result as without the fault, and the journal tells what happened;
- the key and secret (distinctive fakes) appear in no log, journal, book, result or printed output;
- bad input (missing or wrong credentials, an unknown symbol, orders Alpaca would refuse) is refused with a clear
  error before anything is sent, and a stalled server hits our timeout (alpaca-py sets none).
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from smallcap.broker.alpaca import CLIENT_ATTRS, AlpacaBroker
from smallcap.broker.loopback import LoopbackAlpaca, LoopbackMarket
from smallcap.config import Settings
from smallcap.core import BrokerError, ConfigError, Order
from smallcap.data.synth import SynthConfig, build_store
from smallcap.execution.broker import EventKind, OrderRejected
from smallcap.execution.costs import Costs
from smallcap.live.engine import replay
from smallcap.live.journal import Journal
from smallcap.live.paper import Book, apply_command
from smallcap.risk import RiskConfig
from smallcap.strategy.base import get_strategy
from test_paper_engine import AfterBar          # the simulator with the remote semantics: a bar's events after the bar

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = 'PK-ZQX7731-FAKE-KEY-ID', 'sk-ZQX9f3e-FAKE-SECRET-0042'
START, END = '2025-11-24', '2025-11-25'
CUT = pd.Timestamp('2025-11-24 17:00', tz='UTC')                 # the drills replay the first 2.5 hours (the whole day costs ~10 s a run here)
RISK = RiskConfig(max_positions=2, stop_pct=0.03, trail_pct=0.04, target_r=2.0, max_bars_held=30, min_avg_volume=0, min_avg_dollar_volume=0, max_adv_pct=None)
NO_STOPS = RiskConfig(sizing='fixed_fraction', stop_pct=None, target_r=None, min_avg_volume=0, min_avg_dollar_volume=0, max_adv_pct=None)


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    warnings.filterwarnings('ignore')
    return build_store(tmp_path_factory.mktemp('alpaca') / 'st.duckdb',
                       SynthConfig(seed=11, n_symbols=3, start=START, n_sessions=1, n_delisted=0, min_splits=0, gap_prob=0.5))


@pytest.fixture(scope='module')
def syms(store):
    return sorted(set(store.bars(None, START, END, as_='arrow').column('symbol').to_pylist()))


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    "The credentials come from the environment only (distinctive fakes, searched for in every artefact)."
    for k in ('SMALLCAP_ALPACA_KEY_ID', 'SMALLCAP_ALPACA_SECRET_KEY', 'SMALLCAP_ALPACA_URL', 'SMALLCAP_ALPACA_PAPER', 'SMALLCAP_ENV'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('APCA_API_KEY_ID', KEY); monkeypatch.setenv('APCA_API_SECRET_KEY', SECRET)
    return monkeypatch


def server(tmp: Path, syms, **kw) -> LoopbackAlpaca:
    return LoopbackAlpaca(tmp / 'book.sqlite', syms, 100_000.0, participation=Costs().participation, costs=Costs(), key_id=KEY, secret_key=SECRET, **kw).start()


def market(creds, url: str, stream_url: str, **kw) -> LoopbackMarket:
    creds.setenv('SMALLCAP_ALPACA_URL', url)                      # the documented url_override, through the settings
    kw = {'stream_wait': 2.0, 'timeout': 5.0, **kw}
    return LoopbackMarket(Settings(), stream_url, **kw)


def session(store, broker=None, journal=None, risk=RISK, end=END):
    return replay(get_strategy('sma_cross'), store, START, end, risk=risk, broker=broker, journal=journal)


def same(a, b) -> None:
    "Same fills (the spread a fill paid is not on Alpaca's wire), same orders, same final equity."
    cols = [c for c in a.fills.columns if c != 'slippage']
    pd.testing.assert_frame_equal(a.fills[cols].reset_index(drop=True), b.fills[cols].reset_index(drop=True))
    oc = ['ts', 'symbol', 'side', 'type', 'intent', 'qty', 'filled', 'status', 'order_id']
    pd.testing.assert_frame_equal(a.orders[oc].reset_index(drop=True), b.orders[oc].reset_index(drop=True))
    assert a.equity.iloc[-1] == pytest.approx(b.equity.iloc[-1], abs=1e-6)


@pytest.fixture(scope='module')
def reference(store, syms):
    "The session through the simulator, its events after each bar (the remote semantics)."
    return session(store, AfterBar(syms, 100_000.0, Costs(), participation=Costs().participation)).result


@pytest.fixture(scope='module')
def short(store, syms):
    "The drills' reference: the first hours of the session through the simulator, its events after each bar."
    r = session(store, AfterBar(syms, 100_000.0, Costs(), participation=Costs().participation), end=CUT).result
    assert len(r.fills) >= 6 and r.orders.intent.isin(['stop_loss', 'take_profit']).any()
    return r


# ---- (a) a whole session through alpaca-py equals the simulator ------------------------------------------------------------

def test_no_stops_session_equals_the_in_process_simulator(store, syms, tmp_path, creds):
    local = session(store, risk=NO_STOPS).result
    with server(tmp_path, syms) as srv:
        mkt = market(creds, srv.url, srv.stream_url)
        try: remote = session(store, mkt, risk=NO_STOPS).result
        finally: mkt.close()
        assert len(remote.fills) >= 4
        same(remote, local)
        assert mkt.stats['stream_misses'] == 0 and mkt.stats['caught_up'] == 0      # every update came over the socket


def test_session_with_stops_equals_the_simulator_and_the_broker_agrees(store, syms, tmp_path, creds, reference):
    with server(tmp_path, syms) as srv:
        mkt = market(creds, srv.url, srv.stream_url)
        try:
            rep = session(store, mkt)
            pos, cash = mkt.positions(), mkt.account().cash
        finally: mkt.close()
        res = rep.result
        assert res.orders.intent.isin(['stop_loss', 'take_profit']).any() and (res.orders.type == 'trailing_stop').any()
        assert 'replace' in srv.calls                                           # trailing stops moved by Alpaca replaces
        same(res, reference)
        assert {s: p.qty for s, p in pos.items()} == {s: p.qty for s, p in srv.sim.positions().items()}
        assert cash == pytest.approx(srv.sim.cash)


# ---- (b) fault drills ----------------------------------------------------------------------------------------------------

def _drill(store, syms, tmp_path, creds, short, faults, **kw):
    "The session with faults on: the result, the journal, the server's book and the broker's stats."
    j = Journal(tmp_path / 'j.sqlite', 'paper', get_strategy('sma_cross').id)
    srv = server(tmp_path, syms, faults=faults)
    mkt = market(creds, srv.url, srv.stream_url, journal=j, **kw)
    try: res = session(store, mkt, journal=j, end=CUT).result
    finally: mkt.close()
    _no_duplicates_no_lost_fills(srv.book, srv.sim.fills_since(pd.Timestamp(0, tz='UTC')), j)
    same(res, short)
    srv.stop()
    return res, j, mkt.stats


def _no_duplicates_no_lost_fills(book: Book, fills, j: Journal) -> None:
    orders = [a['order'] for op, a in book.commands() if op == 'submit']
    cids = [o['client_id'] for o in orders]
    assert len(cids) == len(set(cids)), 'an order twice under one client id'
    content = [tuple(sorted((k, str(v)) for k, v in o.items() if k not in ('client_id', 'strategy'))) for o in orders]
    assert len(content) == len(set(content)), 'the same order twice under two client ids'
    assert set(cids) == set(j.events('intent').client_id), 'the broker and the journal disagree on the orders sent'
    key = lambda f: (f.client_id, f.qty, round(f.price, 9), f.ts)
    assert sorted(map(key, j.unique_fills())) == sorted(map(key, fills)), 'a fill lost or counted twice'


def _answers(j: Journal, text: str) -> list[dict]:
    return [p for p in j.events('answer').payload if text in str(p.get('error', ''))]


def test_drill_429_storm(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': '*', 'action': '429', 'times': 6, 'skip': 5, 'retry_after': 0.05}])
    assert st['retries'] >= 5                                                   # each 429 waited its Retry-After and was sent again (one ran out of retries: submit_once sent it again)


def test_drill_5xx(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': 'submit', 'action': '500', 'times': 2, 'skip': 1},
                                                                 {'op': 'orders', 'action': '503', 'times': 2}, {'op': 'bar', 'action': '503', 'times': 2, 'skip': 3}])
    assert len(_answers(j, 'UnknownOutcome')) == 2                              # the journal tells: no answer, looked up, sent again


def test_drill_timeout_after_accept(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': 'submit', 'action': 'accept_timeout', 'seconds': 1.2, 'skip': 1},
                                                                 {'op': 'submit', 'action': 'accept_504', 'skip': 2},
                                                                 {'op': 'submit', 'action': 'duplicate', 'skip': 3}], timeout=0.6)
    assert len(_answers(j, 'UnknownOutcome')) == 2 and len(_answers(j, 'DuplicateOrder')) == 1


def test_drill_socket_drop(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': 'stream', 'action': 'drop', 'times': 2, 'skip': 4}], stream_wait=0.3)
    assert st['stream_misses'] >= 2 and st['caught_up'] >= 1
    assert any(p.get('reason') == 'rest catch-up' for p in j.events('event').payload)     # the journal tells which events came by REST


def test_drill_silent_socket(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': 'stream', 'action': 'silent', 'times': 4, 'skip': 2}], stream_wait=0.3)
    print(st); assert st['stream_misses'] >= 1 and st['caught_up'] >= 1


def test_drill_duplicated_and_out_of_order_updates(store, syms, tmp_path, creds, short):
    res, j, st = _drill(store, syms, tmp_path, creds, short, [{'op': 'stream', 'action': 'duplicate', 'times': 10_000}])
    assert st['duplicates'] > 10                                                # each repeat dropped by its execution id
    (d := tmp_path / 'reorder').mkdir()
    _drill(store, syms, d, creds, short, [{'op': 'stream', 'action': 'reorder', 'times': 10_000}])


def _proc(d: Path, syms, port: int = 0, stream_port: int = 0, faults=()) -> subprocess.Popen:
    "A loopback Alpaca process; ready once its port file exists."
    pf = d / 'alpaca.port'
    pf.unlink(missing_ok=True)
    cmd = [sys.executable, '-m', 'smallcap.broker.loopback', '--book', str(d / 'book.sqlite'), '--symbols', *syms, '--cash', '100000',
           '--participation', str(Costs().participation), '--port', str(port), '--stream-port', str(stream_port), '--port-file', str(pf),
           *sum((['--fault', json.dumps(f)] for f in faults), [])]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=open(d / 'server.out', 'a'), stderr=subprocess.STDOUT, env={**os.environ, 'APCA_API_KEY_ID': KEY, 'APCA_API_SECRET_KEY': SECRET})
    for _ in range(600):                                              # bounded: 30 s
        if pf.exists(): return p
        if p.poll() is not None: raise AssertionError(f"loopback exited {p.returncode}: {(d / 'server.out').read_text()}")
        time.sleep(0.05)
    raise AssertionError('the loopback did not start in 30 s')


def test_drill_server_restart_mid_session(store, syms, tmp_path, creds, short, capsys, caplog):
    "The server is killed (-9) right after taking orders, twice, and restarted on its book: the engine never notices but in its journal."
    caplog.set_level(logging.DEBUG)
    first = _proc(tmp_path, syms, faults=[{'op': 'submit', 'action': 'die', 'skip': 2}, {'op': 'bar', 'action': 'die', 'skip': 40}])
    ports = json.loads((tmp_path / 'alpaca.port').read_text())
    port, sport = int(ports['url'].rsplit(':', 1)[1]), int(ports['stream_url'].rsplit(':', 1)[1].split('/')[0])
    procs, stop = [first], threading.Event()
    def supervise() -> None:                                          # restart the server whenever it dies (same book, same ports)
        while not stop.is_set():
            if procs[-1].poll() is not None and not stop.is_set(): procs.append(_proc(tmp_path, syms, port, sport))
            time.sleep(0.02)
    th = threading.Thread(target=supervise, daemon=True); th.start()
    j = Journal(tmp_path / 'j.sqlite', 'paper', get_strategy('sma_cross').id)
    mkt = market(creds, ports['url'], ports['stream_url'], journal=j, retries=8, backoff=0.1, max_wait=1.0, stream_wait=0.5)
    try: res = session(store, mkt, journal=j, end=CUT).result
    finally:
        mkt.close(); stop.set(); th.join(5)
        for p in procs:
            if p.poll() is None: p.terminate(); p.wait(10)
    assert len(procs) >= 2 and first.returncode == -9                 # it did die, and came back
    book = Book(tmp_path / 'book.sqlite')
    sim = book.sim()                                                   # the broker's fills: its book replayed offline
    for op, a in book.commands(): apply_command(sim, op, a)
    _no_duplicates_no_lost_fills(book, sim.fills_since(pd.Timestamp(0, tz='UTC')), j)
    same(res, short)
    assert _answers(j, 'UnknownOutcome')                               # the journal tells: the answer to an order never came
    # (c) no artefact of the session shows the credentials: logs, journal, book, result, printed output, the server's output
    _no_secrets(tmp_path, capsys, caplog, res)


def _no_secrets(d: Path, capsys, caplog, res) -> None:
    out = capsys.readouterr()
    texts = {'stdout': out.out, 'stderr': out.err, 'log': '\n'.join(r.getMessage() for r in caplog.records),
             'result': res.fills.to_csv() + res.orders.to_csv() + repr(res.inputs) + res.equity.to_csv()}
    texts.update({str(p): p.read_bytes().decode('latin-1') for p in d.rglob('*') if p.is_file()})
    assert len(texts) > 5 and texts['log']
    for where, t in texts.items():
        assert KEY not in t and SECRET not in t, f"a credential shows in {where}"


# ---- (d) bad input: clear errors before anything is sent ----------------------------------------------------------------------

def test_credentials_missing_or_wrong(tmp_path, syms, creds):
    with server(tmp_path, syms) as srv:
        creds.delenv('APCA_API_KEY_ID'); creds.delenv('APCA_API_SECRET_KEY'); creds.setenv('SMALLCAP_ALPACA_URL', srv.url)
        with pytest.raises(ConfigError, match='credentials are missing'): AlpacaBroker()
        creds.setenv('APCA_API_KEY_ID', 'PK-WRONG-KEY'); creds.setenv('APCA_API_SECRET_KEY', 'sk-wrong')
        with pytest.raises(BrokerError, match='HTTP 401.*APCA_API_KEY_ID') as e: AlpacaBroker(stream_url=srv.stream_url)
        assert 'sk-wrong' not in str(e.value) and 'submit' not in srv.calls
        creds.setenv('SMALLCAP_ALPACA_PAPER', 'false')
        with pytest.raises(ConfigError, match="live trading needs env 'live'"): AlpacaBroker()


def test_refusals_before_sending_and_alpacas_reasons(tmp_path, syms, creds):
    t = pd.Timestamp('2025-11-24 15:00', tz='UTC')
    with server(tmp_path, syms, assets={syms[0]: {'easy_to_borrow': False}, syms[1]: {'shortable': False}}) as srv:
        mkt = market(creds, srv.url, srv.stream_url, stream=False)
        try:
            mkt.time, mkt.day = t, 20416
            n = srv.calls.count('submit')
            for o, why in [(Order('s', 'NOPE', 'buy', 10, t, 'enter_long'), 'unknown symbol'),
                           (Order('s', syms[0], 'sell', 10, t, 'enter_short'), 'hard to borrow'),
                           (Order('s', syms[1], 'sell', 10, t, 'enter_short'), 'shortable=false'),
                           (Order('s', syms[2], 'buy', 10, t, 'enter_long', type='limit', tif='gtc', limit_price=1.0, extended_hours=True), 'time in force day')]:
                with pytest.raises(OrderRejected, match=why): mkt.submit(o)
            mkt.time = pd.Timestamp('2025-11-24 13:00', tz='UTC')                       # premarket
            with pytest.raises(OrderRejected, match='outside regular hours'): mkt.submit(Order('s', syms[2], 'buy', 10, t, 'enter_long'))
            assert srv.calls.count('submit') == n                                     # nothing was sent
            mkt.time = t                                                              # Alpaca's own refusal, in our taxonomy, with its reason
            with pytest.raises(OrderRejected, match='trailing_stop orders are not simulated.*HTTP 422'):
                mkt.submit(Order('s', syms[2], 'sell', 10, t, 'exit_long', type='trailing_stop', tif='gtc', trail_percent=2.0))
            st = mkt.submit(Order('s', syms[2], 'buy', 10, t, 'enter_long', type='limit', limit_price=1.0))
            from smallcap.execution.broker import DuplicateOrder, submit_once
            with pytest.raises(DuplicateOrder): mkt.submit(st.order)                   # the same client id again: 422, never a second order
            assert submit_once(mkt, st.order).client_id == st.client_id and srv.submits.count(st.client_id) == 1
            assert mkt.cancel(st.client_id).status == 'canceled' and mkt.cancel('no-such-id') is None
        finally: mkt.close()


def test_every_request_has_a_timeout(tmp_path, syms, creds):
    "alpaca-py sets no timeout; ours fires against a server that stalls (and the adapter fails loudly if alpaca-py's internals move)."
    from alpaca.common.rest import RESTClient
    from alpaca.trading.client import TradingClient
    assert all(hasattr(TradingClient('k', 's'), a) for a in CLIENT_ATTRS)
    assert 'self._session.request(method, url, **opts)' in inspect.getsource(RESTClient._one_request)
    with server(tmp_path, syms) as srv:
        mkt = market(creds, srv.url, srv.stream_url, stream=False, timeout=0.3, retries=1, backoff=0.0)
        try:
            srv.set_faults([{'op': 'positions', 'action': 'stall', 'seconds': 1.5, 'times': 2}])
            t0 = time.monotonic()
            with pytest.raises(BrokerError, match='could not reach Alpaca.*Timeout'): mkt.positions()
            assert time.monotonic() - t0 < 1.4                                        # two tries of 0.3 s, not two stalls of 1.5 s
        finally: mkt.close()


# ---- (e) kill -9 of the engine against the loopback ----------------------------------------------------------------------------

ENGINE = """
import json, sys, warnings
warnings.filterwarnings('ignore'); sys.path.insert(0, 'tests')
from smallcap.broker.loopback import LoopbackMarket
from smallcap.config import Settings
from smallcap.data.store import TickStore
from smallcap.live.engine import replay
from smallcap.live.journal import Journal
from smallcap.strategy.base import get_strategy
import test_alpaca_broker as T
store, jpath, url, surl = sys.argv[1:5]
s = get_strategy('sma_cross')
j = Journal(jpath, 'paper', s.id)
m = LoopbackMarket(Settings(alpaca_url=url), surl, journal=j)
r = replay(s, TickStore(store, read_only=True), T.START, T.CUT, risk=T.RISK, broker=m, journal=j).result
m.close()
print(json.dumps({'equity': float(r.equity.iloc[-1]), 'resumed': int(r.inputs['live']['resumed'])}))
"""


def _records(path: Path) -> int:
    import sqlite3
    if not path.exists(): return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as con: return con.execute('SELECT count(*) FROM events').fetchone()[0]
    except sqlite3.OperationalError: return 0


PLAN = ['intent:1', 'kill', 'sent:1', 'journal:30', 'reconcile:1', 'kill', 'intent:2', 'sent:2', 'journal:7', 'reconcile:1',
        'kill', 'intent:1', 'sent:1', 'journal:60', 'reconcile:1', 'kill', 'intent:3', 'sent:1', 'journal:3', 'kill']


def test_kill_9_of_the_engine_at_20_instants_then_resume(syms, tmp_path, creds, short):
    "Twenty SIGKILLs of the engine (a process trading through alpaca-py at the loopback): at its failpoints (between intent and send, between send and answer, inside a journal write, inside reconciliation) and from outside at random instants; each restart reconciles with the loopback and goes on. No order twice, no fill lost, the uninterrupted result."
    import os, random
    p = tmp_path / 'st.duckdb'
    build_store(p, SynthConfig(seed=11, n_symbols=3, start=START, n_sessions=1, n_delisted=0, min_splits=0, gap_prob=0.5))
    jp, rng, plan, fired, log = tmp_path / 'j.sqlite', random.Random(5), PLAN[:], [], []
    with server(tmp_path, syms) as srv:
        for _ in range(60):                                               # bounded: each start runs to a kill or to the end
            what = plan[0] if plan else None
            env = {**os.environ, **({'SMALLCAP_FAILPOINTS': what} if what and what != 'kill' else {})}
            before = _records(jp)
            e = subprocess.Popen([sys.executable, '-c', ENGINE, str(p), str(jp), srv.url, srv.stream_url], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if what == 'kill':                                            # from outside, once the journal has grown by a random amount
                grow = rng.randint(5, 60)
                for _ in range(3000):
                    if e.poll() is not None or _records(jp) >= before + grow: break
                    time.sleep(0.01)
                if e.poll() is None: e.send_signal(9)
            out, err = e.communicate(timeout=120)
            log.append((what, e.returncode))
            if e.returncode == -9: fired.append(what); plan.pop(0); continue
            assert e.returncode == 0, f"{what}: {err[-3000:]}"
            if what is None: break
            if what.startswith('reconcile'): plan.pop(0); continue        # nothing to reconcile at that start: not a crash instant
            raise AssertionError(f"the session ended before the planned crash {what!r} ({len(fired)} fired): {log}")
        assert len(fired) == 20, (fired, log)
        res = json.loads(out.strip().splitlines()[-1])
        j = Journal(jp, 'paper', get_strategy('sma_cross').id)
        _no_duplicates_no_lost_fills(srv.book, srv.sim.fills_since(pd.Timestamp(0, tz='UTC')), j)
        assert res['resumed'] > 0 and res['equity'] == pytest.approx(short.equity.iloc[-1], abs=1e-6)
        state = j.rebuild_state(syms, 100_000.0)
        assert {s: int(q) for s, q in zip(state.symbols, state.qty) if q} == {s: p.qty for s, p in srv.sim.positions().items()}
        assert j.events("reconcile").shape[0] >= 16


# ---- a dry run: the one-process loopback, its market a store replay, the engine on AlpacaFeed and AlpacaBroker ----------

def test_dry_run_through_alpaca_feed_and_broker(store, syms, tmp_path, creds):
    "The loopback as all of Alpaca in one process (trading REST, trade_updates, the msgpack data stream of a store replay that also moves its market): an engine on the real StockDataStream and TradingClient trades it like paper trading. No order twice, the journal's positions are the loopback's, no secret in the journal."
    import asyncio
    from smallcap.broker.alpaca import AlpacaBroker
    from smallcap.broker.loopback import dry_run
    from smallcap.live.alpaca import AlpacaFeed
    from smallcap.live.engine import LiveEngine
    t0, t1 = pd.Timestamp('2025-11-24 14:30', tz='UTC'), pd.Timestamp('2025-11-24 15:30', tz='UTC')
    lp, md = dry_run(tmp_path / 'dry.sqlite', store, t0, t1, symbols=syms, pace=300.0, key_id=KEY, secret_key=SECRET,
                     participation=Costs().participation, costs=Costs())
    try:
        s = get_strategy('sma_cross', fast=2, slow=5)
        j = Journal(tmp_path / 'j.sqlite', 'paper', s.id)
        creds.setenv('SMALLCAP_ALPACA_URL', lp.url)
        b = AlpacaBroker(Settings(), lp.stream_url, timeout=5.0, journal=j, tick=False, check_session=False)   # its session check reads the wall clock: a replayed day is not today
        eng = LiveEngine(s, syms, broker=b, risk=NO_STOPS, journal=j)
        feed = AlpacaFeed(syms, 'iex', Settings(), url=md.url, history=False, until=t1 - pd.Timedelta(minutes=1), watchdog=None)   # a live stream never ends: stop at the last bar
        asyncio.run(asyncio.wait_for(eng.run(feed, signals=False), 60))
        for _ in range(100):                                              # the replay's last minute steps the market (bounded: 5 s)
            if md.done.is_set(): break
            time.sleep(0.05)
        time.sleep(0.2)                                                   # its trade updates on their way
        b.catch_up(); b.events(); b.close()                              # the updates after the engine's stop handed to its loop (and journalled)                          # the last updates handed to the loop (and journalled) in this thread
        assert md.source.steps >= 50 and eng.stats.bars >= 50             # the replay moved the market and the engine decided its minutes
        cids = lp.submits
        assert len(cids) >= 4 and len(cids) == len(set(cids)), cids        # it traded, no order twice
        assert set(cids) == set(j.events('intent').client_id)
        assert lp.sim.fills_since(pd.Timestamp(0, tz='UTC')), 'nothing filled'
        state = j.rebuild_state(syms, 100_000.0)
        assert {x: int(q) for x, q in zip(state.symbols, state.qty) if q} == {x: p.qty for x, p in lp.sim.positions().items() if p.qty}
        raw = (tmp_path / 'j.sqlite').read_bytes()
        assert KEY.encode() not in raw and SECRET.encode() not in raw
    finally:
        md.stop(); lp.stop()
