"""The live journal (`smallcap.live.journal`): round trips of every record kind, an event-engine run journalled and rebuilt,
kill -9 at random instants while appending, and files it must refuse without changing them."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from smallcap.core import ConfigError, DataError, Fill, Intent, Order, Side
from smallcap.execution.broker import EventKind, OrderEvent
from smallcap.live.journal import Journal, event_of, fill_of, order_of
from smallcap.risk import RiskConfig, RiskState

T = pd.Timestamp('2026-03-02 15:00', tz='UTC')


def _order(sym='ABC', k=0):
    return Order('s1', sym, Side.BUY, 100 + k, T + pd.Timedelta(minutes=k), Intent.ENTER_LONG, type='bracket', limit_price=5.0,
                 stop_loss=4.5, take_profit=6.0)


def test_every_record_kind_round_trips(tmp_path):
    p = tmp_path / 'j #1?%.sqlite'                                         # the reopen check reads it by URI
    j = Journal(p, 'PA1', 's1')
    o = _order()
    f1 = Fill(o.client_id, 'ABC', Side.BUY, 60, 5.0, T + pd.Timedelta('1min'), 0.5, 0.01)
    f2 = Fill(o.client_id, 'ABC', Side.BUY, 40, 5.02, T + pd.Timedelta('2min'))
    ev1 = OrderEvent(EventKind.PARTIALLY_FILLED, o.client_id, f1.ts, f1, 60, 40, slippage=0.3)
    ev2 = OrderEvent(EventKind.FILLED, o.client_id, f2.ts, f2, 100, 0)
    acc = OrderEvent(EventKind.ACCEPTED, o.client_id, T, None, 0, 100)
    j.note('start', T, mode='paper', version='x')
    j('intent', o); j('event', acc); j('event', ev1); j.event(ev2)
    late = Fill('s1-XYZ-manual', 'XYZ', Side.SELL, 10, 3.0, T + pd.Timedelta('3min'))
    j.fill(late)
    state = RiskState.new(['ABC', 'XYZ'], 10_000.0); state.apply_fills([f1, f2, late])
    j.snapshot(state, T + pd.Timedelta('4min'))
    j.note('reconcile', T + pd.Timedelta('5min'), adopted=1, missing=[])
    j.note('stop', T + pd.Timedelta('6min'), why='end of day')
    j.close()
    j = Journal(p, 'PA1', 's1')                                             # read back from a fresh open
    e = j.events()
    assert e.kind.tolist() == ['start', 'intent', 'event', 'event', 'fill', 'event', 'fill', 'fill', 'snapshot', 'reconcile', 'stop']
    assert e.seq.is_monotonic_increasing and e.seq.is_unique
    assert order_of(j.events('intent').payload[0]) == o
    assert [event_of(p) for p in j.events('event').payload] == [acc, ev1, ev2]
    assert [fill_of(p) for p in j.events('fill').payload] == [f1, f2, late]
    fr = j.fills()
    assert fr.qty.tolist() == [60, 40, 10] and fr.ts.tolist() == [f1.ts, f2.ts, late.ts] and fr.commission.tolist() == [0.5, 0.0, 0.0]
    od = j.orders()
    assert od.client_id.tolist() == [o.client_id] and od.status.tolist() == ['filled'] and od.filled.tolist() == [100]
    snap = j.events('snapshot').payload[0]
    assert snap['state'] == json.loads(json.dumps(state.to_dict())) and snap['equity'] == pytest.approx(state.equity)
    assert e.payload[0] == {'mode': 'paper', 'version': 'x'} and e.ts[0] == T
    assert j.rebuild_state(['ABC', 'XYZ'], 10_000.0).to_dict() == state.to_dict()


def test_decisions_with_reason_codes_round_trip(tmp_path):
    from smallcap.risk import Decisions, Reason, reason_mask
    d = Decisions(T, np.array(['ABC', 'XYZ'], object), np.array([0, 1]), np.array([1, -1], np.int8),
                  np.array([Intent.ENTER_LONG, Intent.EXIT_LONG], object), np.array([100, 50]), np.array([40, 0]),
                  np.array([reason_mask(Reason.APPROVED), reason_mask(Reason.EXIT_STOP)]), np.array([5.0, np.nan]),
                  np.array([np.nan, np.nan]), np.array([4.5, np.nan]), np.array([6.0, np.nan]), np.array([False, True]))
    j = Journal(tmp_path / 'j.sqlite', 'PA1', 's1')
    j('decisions', (d, Decisions.empty(T)))
    j('decisions', Decisions.empty(T))                                     # an empty batch writes nothing
    f = j.decision_frame()
    ref = d.to_frame()
    assert len(f) == 2 and f.symbol.tolist() == ['ABC', 'XYZ'] and f.action.tolist() == ref.action.tolist()
    assert f.reasons.tolist() == [['approved'], ['exit_stop']] and f.approved.tolist() == [40, 0]
    assert f.time.tolist() == [T, T] and f.stop[0] == 4.5 and np.isnan(f.price[1]) and f.at_bar.tolist() == [False, True]


def _journalled_run(tmp_path, monkeypatch, snapshot_at=None):
    "The event engine on a random minute market with the journal attached (decisions, events) and guarding the broker (intents)."
    from test_loop_properties import _market, _signals
    from smallcap.backtest import event
    from smallcap.backtest.plan import prepare
    from smallcap.execution.costs import Costs
    from smallcap.execution.sim import SimBroker
    bars, rng = _market(4, 7, 0.05, 0.2)
    cfg = RiskConfig(sizing='fixed_fraction', fraction=0.2, max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                     min_price=0.1, max_price=1_000.0, max_positions=3, stop_pct=0.02, target_r=2.0, cooldown_minutes=0.0)
    plan = prepare(_signals(bars, rng, 0.3), bars, costs=Costs(participation=0.1), risk=cfg, fill='realistic')
    j = Journal(tmp_path / 'run.sqlite', 'PA1', plan.strategy_id)
    loops = []

    class Loop(event.TradingLoop):
        def __init__(self, *a, **k):
            super().__init__(*a, journal=j, **k); loops.append(self)

        def step(self, bar):
            out = super().step(bar)
            self.steps = getattr(self, 'steps', 0) + 1
            if self.steps == snapshot_at: j.snapshot(self.state, bar.time)
            return out
    monkeypatch.setattr(event, 'TradingLoop', Loop)
    monkeypatch.setattr(event, 'SimBroker', lambda *a, **k: j.guard(SimBroker(*a, **k)))
    fills, orders, _ = event.run(plan)
    return plan, j, loops[0], fills


@pytest.mark.parametrize('snapshot_at', [None, 20])
def test_a_journalled_event_run_rebuilds_the_engines_state(tmp_path, monkeypatch, snapshot_at):
    plan, j, loop, fills = _journalled_run(tmp_path, monkeypatch, snapshot_at)
    jf = j.fills()
    assert len(fills) > 5 and len(jf) == len(fills), "the journal lost or doubled fills"
    assert (j.events('snapshot').empty) == (snapshot_at is None)
    st = loop.state
    r = j.rebuild_state(list(plan.symbols), plan.cash, date=st.date)
    assert r.symbols.tolist() == st.symbols.tolist()
    assert r.qty.tolist() == st.qty.tolist()
    np.testing.assert_allclose(r.cash, st.cash, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.realized, st.realized, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.avg_price, st.avg_price, rtol=0, atol=1e-9)
    # independent reference: cash from the journal's fills alone
    sq = np.where(jf.side == 'buy', 1, -1) * jf.qty
    assert r.cash == pytest.approx(plan.cash - (sq * jf.price).sum() - jf.commission.sum() - jf.fees.sum())
    # every order was written before it was sent: its first record is its intent
    e = j.events()
    first = e[e.client_id.notna()].groupby('client_id').kind.first()
    assert set(first) == {'intent'} and set(jf.client_id) <= set(first.index)
    a = j.events('answer')
    sub = a[a.payload.map(lambda p: p['op'] == 'submit')]
    assert sub.client_id.tolist() == j.events('intent').client_id.tolist(), "an intent without the broker's answer"
    d = j.decision_frame()
    assert len(d) and d.reasons.map(len).min() >= 1


def test_the_guard_journals_the_intent_and_a_broker_error_before_raising(tmp_path):
    from smallcap.core import BrokerError

    class Down:
        time = None
        def submit(self, order): raise BrokerError('broker unreachable')
    j = Journal(tmp_path / 'j.sqlite', 'PA1', 's1')
    b = j.guard(Down())
    b.time = T                                                              # attributes pass through to the broker
    assert Down.time is None and b.time == T
    with pytest.raises(BrokerError, match='unreachable'): b.submit(_order())
    e = j.events()
    assert e.kind.tolist() == ['intent', 'answer'] and e.payload[1] == {'op': 'submit', 'error': 'BrokerError: broker unreachable'}
    assert j.orders().status.tolist() == ['sent']


def test_rebuild_state_can_fail_when_a_fill_is_missing(tmp_path, monkeypatch):
    "The equality check above is not vacuous: a state rebuilt without the last fill differs from the engine's."
    plan, j, loop, fills = _journalled_run(tmp_path, monkeypatch)
    all_fills = [fill_of(p) for p in j.events('fill').payload]
    r = RiskState.from_fills(all_fills[:-1], list(plan.symbols), plan.cash, plan.cash, loop.state.date)
    assert r.qty.tolist() != loop.state.qty.tolist() or r.cash != pytest.approx(loop.state.cash)


CHILD = textwrap.dedent("""
    import sys, pandas as pd
    from smallcap.core import Fill, Side
    from smallcap.execution.broker import EventKind, OrderEvent
    from smallcap.live.journal import Journal
    j = Journal(sys.argv[1], 'PA1', 's1')
    n = len(j.events('event'))
    print('ready', n, flush=True)
    t0 = pd.Timestamp('2026-03-02 15:00', tz='UTC')
    while True:
        f = Fill(f'c{n}', 'ABC', Side.BUY, n + 1, 5.0, t0 + pd.Timedelta(seconds=n))
        j.event(OrderEvent(EventKind.FILLED, f'c{n}', f.ts, f, n + 1, 0, reason='x' * (n % 5000)))   # two rows, one transaction
        n += 1
""")


def test_kill_9_at_random_instants_leaves_a_prefix_and_appending_goes_on(tmp_path):
    p = tmp_path / 'k.sqlite'
    script = tmp_path / 'child.py'; script.write_text(CHILD)
    rng = np.random.default_rng(15)
    seen = 0
    for kill in range(10):
        child = subprocess.Popen([sys.executable, str(script), str(p)], stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline().split()
            assert line[0] == 'ready' and int(line[1]) == seen, f"kill {kill}: reopened with {line} after {seen} events"
            try: child.wait(timeout=float(rng.uniform(0.02, 0.4)))
            except subprocess.TimeoutExpired: pass
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30); child.stdout.close()
        j = Journal(p, 'PA1', 's1')
        e = j.events()
        ev, fl = e[e.kind == 'event'], e[e.kind == 'fill']
        n = len(ev)
        assert n >= seen, "committed events vanished"
        assert len(fl) == n, "an event without its fill: a torn transaction"
        assert ev.client_id.tolist() == [f'c{i}' for i in range(n)] and fl.payload.map(lambda d: d['qty']).tolist() == list(range(1, n + 1))
        assert (e.kind.to_numpy()[::2] == 'event').all() and e.seq.tolist() == sorted(e.seq)
        assert [len(d['reason']) for d in ev.payload] == [i % 5000 for i in range(n)]
        j.close()
        seen = n
    assert seen > 10, "the child never got to write"


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _journal_file(tmp_path, name='j.sqlite'):
    p = tmp_path / name
    j = Journal(p, 'PA1', 's1')
    for k in range(200): j.intent(_order('ABC', k))
    j.close()
    return p


@pytest.mark.parametrize('account,strategy,err,msg', [('PA2', 's1', ConfigError, "account 'PA1', strategy 's1', not account 'PA2'"),
                                                    ('PA1', 's2', ConfigError, "strategy 's1', not account 'PA1', strategy 's2'"),
                                                    ('', 's1', ConfigError, 'account must be a non-empty string'),
                                                    ('PA1', None, ConfigError, 'strategy must be a non-empty string')])
def test_another_account_or_strategy_is_refused_and_nothing_changes(tmp_path, account, strategy, err, msg):
    p = _journal_file(tmp_path); before = _digest(p)
    with pytest.raises(err, match=msg.replace('(', r'\(')): Journal(p, account, strategy)
    wal = tmp_path / 'j.sqlite-wal'
    assert _digest(p) == before and (not wal.exists() or wal.stat().st_size == 0)     # a read-only look leaves at most an empty WAL


def test_files_that_are_not_intact_journals_are_refused_and_nothing_changes(tmp_path):
    cases = {}
    (tmp_path / 'text.txt').write_text('hello, not a database\n' * 200); cases['text.txt'] = 'not a readable journal'
    con = sqlite3.connect(tmp_path / 'other.db'); con.execute('CREATE TABLE t (x)'); con.commit(); con.close()
    cases['other.db'] = 'not a smallcap journal'
    p = _journal_file(tmp_path, 'trunc.sqlite'); b = p.read_bytes(); p.write_bytes(b[:len(b) // 2]); cases['trunc.sqlite'] = 'not a readable journal'
    p = _journal_file(tmp_path, 'corrupt.sqlite'); b = bytearray(p.read_bytes())
    b[4096 * 2:4096 * 3] = os.urandom(4096); p.write_bytes(bytes(b)); cases['corrupt.sqlite'] = 'not a readable journal'
    p = _journal_file(tmp_path, 'header.sqlite'); b = bytearray(p.read_bytes()); b[:16] = b'x' * 16; p.write_bytes(bytes(b))
    cases['header.sqlite'] = 'not a readable journal'
    p = _journal_file(tmp_path, 'newer.sqlite')
    con = sqlite3.connect(p); con.execute('DROP TRIGGER meta_no_update'); con.execute("UPDATE meta SET value = '99' WHERE key = 'schema'"); con.commit(); con.close()
    cases['newer.sqlite'] = 'schema 99, newer'
    (tmp_path / 'odd #?%.sqlite').write_bytes(b'\0' * 5000); cases['odd #?%.sqlite'] = 'not a readable journal'
    for name, msg in cases.items():
        f = tmp_path / name; before = _digest(f)
        with pytest.raises(DataError, match=msg): Journal(f, 'PA1', 's1')
        assert _digest(f) == before, f"{name} was changed by a refused open"


def test_bad_records_are_refused_and_nothing_is_written(tmp_path):
    j = Journal(tmp_path / 'j.sqlite', 'PA1', 's1')
    j.note('start', mode='paper')
    with pytest.raises(ConfigError, match="'alpaca_secret_key' looks like a secret"): j.note('start', alpaca_secret_key='abc')
    from pydantic import SecretStr
    with pytest.raises(ConfigError, match="'key' looks like a secret"): j.note('reconcile', broker={'key': SecretStr('abc')})
    with pytest.raises(ConfigError, match="kind must be 'start', 'stop', 'reconcile' or 'scan'"): j.note('fill', x=1)
    with pytest.raises(ConfigError, match="cannot record 'orders'"): j('orders', [])
    with pytest.raises(ConfigError, match='unknown record kind'): j.append('nonsense', {})
    with pytest.raises(TypeError, match='cannot journal a object'): j.note('stop', why=object())
    with pytest.raises(sqlite3.DatabaseError, match='append-only'): j.con.execute('UPDATE events SET kind = kind')
    with pytest.raises(sqlite3.DatabaseError, match='append-only'): j.con.execute("DELETE FROM meta")
    assert j.events().kind.tolist() == ['start']
