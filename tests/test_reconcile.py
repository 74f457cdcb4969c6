"""Reconciliation on start (`smallcap.live.reconcile`): each case built by hand at a paper broker with a real journal file,
the outcome and the journal's records checked, a second reconcile changes nothing, and a failing broker writes nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smallcap.core import BrokerError, ConfigError, Intent, Order, Side
from smallcap.execution.loop import TradingLoop
from smallcap.execution.sim import SimBroker
from smallcap.live.journal import Journal
from smallcap.live.reconcile import reconcile
from smallcap.risk import BarContext, RiskConfig, RiskEngine, RiskState

T0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')
M = pd.Timedelta('1min')
SYM = ['ABCD', 'WXYZ']
CFG = RiskConfig(sizing='fixed_notional', notional=1_000, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0, cooldown_minutes=0)


def _bar(sb, k=1, px=10.0):
    one = np.full(len(SYM), px)
    sb.on_bar(T0 + k * M, 0, one, one, one, one, np.full(len(SYM), 1e5), np.ones(len(SYM), bool), np.zeros(len(SYM)))


def _setup(tmp_path):
    return SimBroker(SYM, 10_000.0), Journal(tmp_path / 'j.sqlite', 'PA1', 'demo')


def _loop(j, sb):
    return TradingLoop(RiskEngine(CFG), j.rebuild_state(SYM, 10_000.0), sb, 'demo', protect=False)


def _entry(sym='ABCD', qty=100, k=0, strategy='demo'):
    return Order(strategy, sym, Side.BUY, qty, T0 + k * M, Intent.ENTER_LONG)


def _kinds(j):
    return j.events().kind.tolist()


def test_an_unanswered_intent_is_looked_up_and_its_fill_folded_in_once(tmp_path):
    sb, j = _setup(tmp_path)
    o = _entry()
    j.intent(o); sb.submit(o); _bar(sb)                                  # sent; the answer and the fill never reached the journal
    loop = _loop(j, sb)
    r = reconcile(j, sb, loop)
    assert r.looked_up == [o.client_id] and [f.qty for f in r.fills] == [100] and r.finished == [o.client_id] and not r.halted
    assert loop.state.qty.tolist() == [100, 0] == j.rebuild_state(SYM, 10_000.0).qty.tolist()
    a = j.events('answer').payload.tolist()
    assert a == [{'op': 'lookup', 'status': 'filled', 'filled': 100, 'avg_price': 10.0}]
    assert j.events('event').payload.iloc[-1]['kind'] == 'filled' and j.fills().qty.tolist() == [100]
    assert len(sb.all_orders()) == 1                                          # never re-sent: the broker holds the one order


def test_an_intent_never_sent_is_closed_with_a_reason(tmp_path):
    sb, j = _setup(tmp_path)
    o = _entry()
    j.intent(o)
    r = reconcile(j, sb, _loop(j, sb))
    assert r.closed == [o.client_id] and not r.looked_up and sb.order(o.client_id) is None
    ev = j.events('event').payload.tolist()
    assert [(e['kind'], e['client_id'], e['reason']) for e in ev] == [('canceled', o.client_id, 'reconcile: never reached the broker')]
    assert j.orders().status.tolist() == ['canceled']


def test_an_open_order_the_broker_forgot_is_closed(tmp_path):
    sb, j = _setup(tmp_path)
    o = _entry()
    j.guard(sb).submit(o)                                                # journalled and answered 'new'
    other = SimBroker(SYM, 10_000.0)                                     # a broker that lost it (a reset paper account)
    r = reconcile(j, other, _loop(j, other))
    assert r.closed == [o.client_id]
    assert j.events('event').payload.iloc[-1]['reason'] == 'reconcile: the broker does not know it'


def test_fills_the_journal_missed_are_taken_from_the_broker(tmp_path):
    sb, j = _setup(tmp_path)
    a, b = _entry('ABCD'), _entry('WXYZ', 40)
    g = j.guard(sb)
    g.submit(a); g.submit(b)                                             # answered; their fills happen while the engine is down
    _bar(sb)
    loop = _loop(j, sb)
    assert loop.state.qty.tolist() == [0, 0]
    r = reconcile(j, sb, loop)
    assert sorted(f.qty for f in r.fills) == [40, 100] and not r.looked_up and not r.halted
    assert loop.state.qty.tolist() == [100, 40] == j.rebuild_state(SYM, 10_000.0).qty.tolist()
    assert loop.state.cash == pytest.approx(10_000 - 1_400.0 - sum(f.commission + f.fees for f in r.fills))


@pytest.mark.parametrize('policy', ['adopt', 'cancel'])
def test_a_broker_order_the_journal_does_not_know_is_adopted_or_cancelled(tmp_path, policy):
    sb, j = _setup(tmp_path)
    x = Order('demo', 'ABCD', Side.BUY, 20, T0, Intent.ENTER_LONG, type='limit', limit_price=1.0)   # ours by strategy, never journalled
    alien = Order('manual', 'WXYZ', Side.BUY, 5, T0, Intent.ENTER_LONG, type='limit', limit_price=1.0)
    sb.submit(x); sb.submit(alien)
    loop = _loop(j, sb)
    r = reconcile(j, sb, loop, policy=policy)
    assert r.foreign == [alien.client_id] and sb.order(alien.client_id).is_open     # another strategy's order is left alone
    if policy == 'adopt':
        assert r.adopted == [x.client_id] and not r.cancelled and r.resumed == 1 and x.client_id in loop.orders.live
        assert j.events('answer').payload[0]['op'] == 'adopt' and x.client_id in j.known()
        assert loop.orders.live[x.client_id].role == 'entry'
    else:
        assert r.cancelled == [x.client_id] and not r.adopted and r.resumed == 0 and sb.order(x.client_id).status.value == 'canceled'
    assert j.events('reconcile').payload[0]['policy'] == policy


def test_a_position_mismatch_halts_entries_and_is_reported(tmp_path):
    sb, j = _setup(tmp_path)
    sb.submit(_entry('WXYZ', 30, strategy='manual')); _bar(sb)           # a trade the journal cannot know
    loop = _loop(j, sb)
    r = reconcile(j, sb, loop)
    assert r.mismatch == {'WXYZ': (0, 30)} and r.halted and 'HALTED' in str(r) and 'WXYZ: state 0 != broker 30' in r._repr_markdown_()
    assert 'position mismatch WXYZ' in loop.state.entries_halted
    rec = j.events('reconcile').payload[0]
    assert rec['halted'] and rec['mismatch'] == {'WXYZ': [0, 30]}
    s = RiskState.from_dict(loop.state.to_dict())                        # the flag survives a snapshot
    assert s.entries_halted == loop.state.entries_halted
    one = np.full(2, 10.0)
    e, _ = loop.risk.decide(loop.state, BarContext(T0 + 5 * M, SYM, one, open=one, high=one, low=one, entries_long=np.array([True, False])))
    from smallcap.risk import reasons_of
    assert e.approved.tolist() == [0]
    assert 'rejected_entries_halted' in reasons_of(int(e.reasons[0]))


def test_reconcile_twice_changes_nothing_the_second_time(tmp_path):
    sb, j = _setup(tmp_path)
    a, lost = _entry(), _entry('WXYZ', 10, 1)
    j.intent(a); sb.submit(a); j.intent(lost)
    sb.submit(Order('demo', 'WXYZ', Side.BUY, 20, T0, Intent.ENTER_LONG, type='limit', limit_price=1.0))
    _bar(sb)
    loop = _loop(j, sb)
    first = reconcile(j, sb, loop)
    assert first.looked_up and first.closed and first.cancelled and first.fills
    n, state = len(j.events()), loop.state.to_dict()
    again = reconcile(j, sb, loop)
    assert (again.looked_up, again.closed, again.finished, again.adopted, again.cancelled, again.fills, again.mismatch) == ([], [], [], [], [], [], {})
    assert _kinds(j)[n:] == ['reconcile'] and loop.state.to_dict() == state


def test_a_failing_broker_raises_and_writes_nothing(tmp_path):
    sb, j = _setup(tmp_path)
    o = _entry()
    j.intent(o); sb.submit(o); _bar(sb)
    before = len(j.events())

    class Down(SimBroker):
        def positions(self): raise ConnectionError('gateway timeout')
    down = Down(SYM, 10_000.0); down.__dict__.update(sb.__dict__)
    loop = _loop(j, down)
    with pytest.raises(BrokerError, match=r'positions\(\).*gateway timeout.*nothing was written'):
        reconcile(j, down, loop)
    assert len(j.events()) == before and loop.state.qty.tolist() == [0, 0]
    with pytest.raises(ConfigError, match='policy'): reconcile(j, sb, loop, policy='ignore')
    assert len(j.events()) == before


def test_an_intent_closed_as_never_sent_then_sent_again_under_its_id_is_tracked_again(tmp_path):
    "A minute decided again after a restart sends the closed intent under the same id: the journal's views follow the order's new life (a later restart looks it up and takes its missed fill)."
    sb, j = _setup(tmp_path)
    o = _entry()
    j.intent(o)                                                          # crashed before the send
    r = reconcile(j, sb, _loop(j, sb))
    assert r.closed == [o.client_id] and j.orders().status.tolist() == ['canceled']
    j.intent(o); sb.submit(o); _bar(sb)                                  # sent again (same id); its answer and fill never reached the journal
    loop = _loop(j, sb)
    r = reconcile(j, sb, loop)
    assert r.looked_up == [o.client_id] and [f.qty for f in r.fills] == [100], r
    assert loop.state.qty.tolist() == [100, 0] == j.rebuild_state(SYM, 10_000.0).qty.tolist()
    assert j.orders().drop_duplicates('client_id', keep='last').status.tolist() == ['filled']
