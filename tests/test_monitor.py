"""The position monitor: on random trade/quote paths it triggers where a brute-force scan finds the first crossing of each
level (stop, trailing stop, target, time stop; long and short); in the engine with protection='engine' a replay sends
each exit once, at the first crossing of the recorded trades and quotes, journalled intent first; the documented
difference to protection='broker' (a resting stop fills in the bar, the monitor's market exit at the next bar) is pinned."""
from __future__ import annotations

import asyncio
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.core import ConfigError, Fill, Side
from smallcap.data.synth import SynthConfig, build_store
from smallcap.execution.loop import OrderManager
from smallcap.execution.sim import SimBroker
from smallcap.live.engine import LiveEngine, replay
from smallcap.live.feed import Bar, Quote, ReplayFeed, Trade
from smallcap.live.journal import Journal
from smallcap.live.monitor import PositionMonitor
from smallcap.risk import RiskConfig, RiskState
from smallcap.strategy.base import get_strategy
from test_live_engine import _Crash, _cut             # a crash between two feed events

T0 = pd.Timestamp('2026-03-02 15:00', tz='UTC')            # 10:00 New York


# ---- the monitor against a brute-force scan ------------------------------------------------------------------------

def _reference(qty, entry, stop, target, trail, hold_s, events):
    "Plain Python: the first event whose price crosses the stop, the trailing level or the target, or that comes after the time stop."
    hi = lo = entry
    long_ = qty > 0
    for ts, kind, a, b in events:
        px = a if kind == 'trade' else (a if long_ else b)
        if not px > 0: continue
        reasons = []
        best = hi if long_ else lo
        tl = (best - trail * best if long_ else best + trail * best) if trail is not None else math.nan
        cands = [x for x in (stop, tl) if not math.isnan(x)]
        level = (max(cands) if long_ else min(cands)) if cands else math.nan
        trailing = not math.isnan(tl) and not (stop >= tl if long_ else stop <= tl)
        if not math.isnan(level) and (px <= level if long_ else px >= level): reasons.append('exit_trailing' if trailing else 'exit_stop')
        elif not math.isnan(target) and (px >= target if long_ else px <= target): reasons.append('exit_target')
        if hold_s is not None and ts >= hold_s: reasons.append('exit_time')
        if reasons: return ts, ','.join(reasons), 'sell' if long_ else 'buy', px
        hi, lo = max(hi, px), min(lo, px)
    return None


@st.composite
def _paths(draw):
    long_ = draw(st.booleans())
    n = draw(st.integers(1, 40))
    steps = draw(st.lists(st.integers(-6, 6), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(0, 90), min_size=n, max_size=n))
    kinds = draw(st.lists(st.sampled_from(['trade', 'quote']), min_size=n, max_size=n))
    spreads = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    stop_c = draw(st.integers(2, 30))                  # stop distance in cents below a long's entry (above a short's)
    target_c = draw(st.one_of(st.none(), st.integers(2, 40)))
    trail = draw(st.one_of(st.none(), st.sampled_from([0.01, 0.02, 0.05])))
    hold = draw(st.one_of(st.none(), st.integers(1, 40)))   # minutes
    px, t, ev = 200, 0, []
    for d, g, k, s in zip(steps, gaps, kinds, spreads):
        px = max(px + d, 50); t += g
        ev.append((t, k, (px - s) / 100 if k == 'quote' else px / 100, (px + s) / 100 if k == 'quote' else px / 100))
    return long_, ev, stop_c, target_c, trail, hold


def _position(config, long_, stop, target):
    st_ = RiskState.new(['AAA', 'BBB'], 100_000.0)
    st_.apply_fill(Fill('e', 'AAA', Side.BUY if long_ else Side.SELL, 100, 2.0, T0))
    st_.stop[0], st_.target[0] = stop, target
    om = OrderManager(SimBroker(['AAA', 'BBB'], 100_000.0), st_, 'demo', config, protect=False)
    m = PositionMonitor(om)
    m.sync()
    return m


@settings(max_examples=300, deadline=None)
@given(_paths())
def test_the_monitor_triggers_at_the_first_crossing(path):
    long_, ev, stop_c, target_c, trail, hold = path
    sign = 1 if long_ else -1
    stop = (200 - sign * stop_c) / 100
    target = math.nan if target_c is None else (200 + sign * target_c) / 100
    m = _position(RiskConfig(trail_pct=trail, max_hold_minutes=hold), long_, stop, target)
    at = lambda s: (T0 + pd.Timedelta(seconds=s)).to_pydatetime()
    for t, k, a, b in ev:
        if k == 'trade': m.on_trade(Trade('AAA', at(t), a, 100))
        else: m.on_quote(Quote('AAA', at(t), a, b, 100, 100))
        m.on_trade(Trade('BBB', at(t), 1.0, 100))                                  # a flat symbol never triggers
    ref = _reference(sign * 100, 2.0, stop, target, trail, None if hold is None else hold * 60, ev)
    got = m.frame()
    if ref is None:
        assert got.empty and not m.om.sent
        return
    assert len(got) == 1 and len(m.om.sent) == 1                                   # one exit, never a second
    r = got.iloc[0]
    assert (r.ts, r.reason, r.side, r.price, r.symbol) == (T0 + pd.Timedelta(seconds=ref[0]), ref[1], ref[2], ref[3], 'AAA')
    rec = m.om.sent[0][0]
    assert (rec['type'], rec['side'], rec['qty'], rec['reason']) == ('market', ref[2], 100, ref[1])
    want = 'stop_loss' if 'exit_stop' in ref[1] or 'exit_trailing' in ref[1] else 'take_profit' if 'exit_target' in ref[1] else ('exit_long' if long_ else 'exit_short')
    assert rec['intent'] == want


def test_the_reference_can_fail():
    "A monitor judging a long at the ask (not the bid) differs from the reference: the comparison above has teeth."
    ev = [(1, 'quote', 1.94, 1.96)]
    assert _reference(100, 2.0, 1.95, math.nan, None, None, ev)[1] == 'exit_stop'
    m = _position(RiskConfig(), True, 1.95, math.nan)
    m.on_quote(Quote('AAA', (T0 + pd.Timedelta(seconds=1)).to_pydatetime(), 1.96, 1.94, 100, 100))    # bid and ask swapped
    assert m.frame().empty


def test_bad_protection_is_refused():
    with pytest.raises(ConfigError, match='protection'):
        LiveEngine(get_strategy('sma_cross'), ['AAA'], protection='local')


# ---- the engine with protection='engine' on a recorded replay -------------------------------------------------------

START, END = '2025-11-24', '2025-11-26'
RISK = RiskConfig(stop_pct=0.01, target_r=2.0, max_positions=3)


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    warnings.filterwarnings('ignore')
    return build_store(tmp_path_factory.mktemp('mon') / 'st.duckdb',
                       SynthConfig(seed=3, n_symbols=4, start=START, n_sessions=2, n_delisted=0, min_splits=0, gap_prob=0.5))


@pytest.fixture(scope='module')
def engine_replay(store, tmp_path_factory):
    j = Journal(tmp_path_factory.mktemp('monj') / 'j.sqlite', 'replay', get_strategy('sma_cross').id)
    return replay(get_strategy('sma_cross'), store, START, END, risk=RISK, journal=j, protection='engine'), j


def _ticks(store, syms):
    "The recorded trades and quotes in the order the engine saw them."
    async def read():
        return [e async for e in ReplayFeed(store, syms, START, END, kinds=('quotes', 'trades'), chunk='1D')]
    return asyncio.run(read())


def test_engine_protection_exits_once_at_the_first_crossing(store, engine_replay):
    rp, j = engine_replay
    eng = rp.engine
    om, mon = eng.loop.orders, eng.monitor
    trig = mon.frame()
    assert len(trig) >= 3, 'the replay has mid-bar exits to check'
    assert not any(r['type'] in ('stop', 'trailing_stop') for r, _ in om.sent)    # nothing rests at the broker
    orders = rp.result.orders
    fills = rp.result.fills
    ticks = _ticks(store, eng.symbols)
    by_sym = {}
    for e in ticks: by_sym.setdefault(e.symbol, []).append(e)
    entries = orders[orders.intent.isin(['enter_long', 'enter_short'])]
    checked = 0
    for cid, f in fills.groupby('order_id', sort=False):
        e = entries[entries.order_id == cid]
        if e.empty: continue
        e = e.iloc[0]
        long_ = e.side == 'buy'
        start = f.ts.iloc[0] + pd.Timedelta(minutes=1)                   # the paper market reports the fill at its bar's close
        later = orders[(orders.symbol == e.symbol) & (orders.intent != e.intent) & (pd.to_datetime(orders.ts) >= f.ts.iloc[0])]
        exit_ = later.iloc[0] if len(later) else None
        if exit_ is None: continue
        first = None
        for x in by_sym.get(e.symbol, []):
            t = pd.Timestamp(x.ts)
            if t < start: continue
            px = x.price if isinstance(x, Trade) else (x.bid if long_ else x.ask)
            if not px > 0: continue
            if (px <= e.stop if long_ else px >= e.stop) or (px >= e.target if long_ else px <= e.target):
                first = (t, px); break
        mine = trig[trig.order_id == exit_.order_id]
        if len(mine):                                                      # the monitor's exit: at the first crossing
            assert first is not None and mine.ts.iloc[0] == first[0] and mine.price.iloc[0] == first[1], (e.symbol, mine, first)
            checked += 1
        elif first is not None:                                            # a bar's exit came first: sent before any crossing
            assert first[0] >= pd.Timestamp(exit_.ts) + pd.Timedelta(minutes=1), (e.symbol, exit_, first)
    assert checked >= 3
    ids = [cid for _, cid in om.sent]
    assert len(ids) == len(set(ids))
    ev = j.events()
    for cid in trig.order_id:                                              # one order, journalled before it was sent
        mine = ev[ev.client_id == cid]
        assert mine.kind.tolist()[:2] == ['intent', 'answer'], mine
    f = fills.groupby('order_id').reason.agg(set)                           # every fill of a monitor's exit carries its reason codes
    assert set(trig.order_id) <= set(f.index)
    assert [f[c] for c in trig.order_id] == [{r} for r in trig.reason]


def test_broker_protection_ignores_trades_and_quotes(store):
    "protection='broker' (the default): feeding the recorded trades and quotes changes nothing (replay = backtest parity holds)."
    s = get_strategy('sma_cross')
    plain = replay(s, store, START, END, risk=RISK)
    eng = LiveEngine(s, plain.engine.symbols, risk=RISK)
    feed = ReplayFeed(store, eng.symbols, START, END, kinds=('bars', 'status', 'quotes', 'trades'), chunk='1D')
    asyncio.run(eng.run(feed, signals=False))
    assert eng.monitor.frame().empty and eng.monitor.watch == {}
    got = pd.DataFrame([f[:5] for f in eng.loop.orders.fills]); want = pd.DataFrame([f[:5] for f in plain.engine.loop.orders.fills])
    pd.testing.assert_frame_equal(got, want)
    assert abs(eng.state.equity - plain.engine.state.equity) < 1e-9


# ---- the documented difference to protection='broker' ---------------------------------------------------------------

def _bar(sym, t, o, h, l, c, vol=100_000):
    return Bar(sym, t.to_pydatetime(), (t + pd.Timedelta(minutes=1)).to_pydatetime(), o, h, l, c, vol, c, 10)


def _crash_run(protection, t0=T0, sessions=('regular',), px=(2.0, 1.99, 1.98, 1.97, 2.00, 2.04, 2.08, 2.10, 2.11, 2.12)):
    "A long entered on a cross up, then a trade through its stop in the middle of a minute."
    risk = RiskConfig(eod_flatten=False, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0, stop_pct=0.05, target_r=None, sessions=sessions)
    eng = LiveEngine(get_strategy('sma_cross', fast=2, slow=3), ['AAA'], risk=risk, protection=protection)
    ev = [_bar('AAA', t0 + pd.Timedelta(minutes=k), p, p + 0.005, p - 0.005, p) for k, p in enumerate(px)]
    k = len(px)
    at = lambda m, s: (t0 + pd.Timedelta(minutes=m, seconds=s)).to_pydatetime()
    ev += [Trade('AAA', at(k, 10), 2.12, 100), Trade('AAA', at(k, 20), 1.80, 100), Trade('AAA', at(k, 40), 2.05, 100),
           _bar('AAA', t0 + pd.Timedelta(minutes=k), 2.12, 2.12, 1.80, 2.05),
           Trade('AAA', at(k + 1, 5), 2.06, 100), _bar('AAA', t0 + pd.Timedelta(minutes=k + 1), 2.06, 2.07, 2.05, 2.06),
           _bar('AAA', t0 + pd.Timedelta(minutes=k + 2), 2.06, 2.07, 2.05, 2.06)]

    class Feed:
        async def __aiter__(self):
            for e in ev: yield e
    asyncio.run(eng.run(Feed(), signals=False))
    fills = pd.DataFrame(eng.loop.orders.fills, columns=['ts', 'j', 'buy', 'qty', 'price', 'slip', 'intent', 'cid', 'reason'])
    return eng, fills, t0 + pd.Timedelta(minutes=k)


def test_a_resting_stop_fills_in_the_bar_the_monitors_exit_at_the_next():
    b_eng, b, crash = _crash_run('broker')
    e_eng, e, _ = _crash_run('engine')
    assert len(b) == 2 and len(e) == 2 and b.iloc[0].ts == e.iloc[0].ts < crash     # the same entry
    bx, ex = b.iloc[1], e.iloc[1]
    stop = float(b_eng.loop.orders.sent[1][0]['stop'])
    assert (bx.ts, bx.intent, bx.reason) == (crash, 'stop_loss', 'exit_stop') and bx.price <= stop    # the resting stop: in the crash bar
    assert e_eng.monitor.frame().ts.tolist() == [crash + pd.Timedelta(seconds=20)]                  # the trade through the stop
    assert (ex.ts, ex.intent, ex.reason) == (crash + pd.Timedelta(minutes=1), 'stop_loss', 'exit_stop')   # a market exit: the next bar's open
    assert abs(ex.price - 2.06) < 0.01
    assert not b_eng.state.qty.any() and not e_eng.state.qty.any()
    assert b_eng.monitor.frame().empty                                                              # 'broker' in regular hours: the stop rests


def test_broker_protection_is_covered_by_the_monitor_after_hours():
    "Outside regular hours a resting stop does not work at the broker: under 'broker' the monitor cancels it and exits by a marketable limit."
    t0 = pd.Timestamp('2026-03-02 21:30', tz='UTC')                                                # 16:30 New York: after hours
    eng, f, crash = _crash_run('broker', t0, ('regular', 'after-hours'), (2.0, 1.99, 1.98, 1.97, 2.00, 2.01, 2.02, 2.02, 2.02, 2.02))
    om = eng.loop.orders
    stops = [cid for r, cid in om.sent if r['type'] == 'stop']
    assert stops, 'the loop rests a plain stop order after hours'
    assert all(not eng.sim.order(c).order.extended_hours for c in stops)                          # which a broker does not work there
    trig = eng.monitor.frame()
    assert trig.ts.tolist() == [crash + pd.Timedelta(seconds=20)] and trig.reason.tolist() == ['exit_stop']
    rec = next(r for r, cid in om.sent if cid == trig.order_id.iloc[0])
    assert (rec['type'], rec['side'], rec['limit']) == ('limit', 'sell', 1.79)                     # 1.80 less extended_limit_pct, on the tick grid
    assert eng.sim.order(trig.order_id.iloc[0]).order.extended_hours
    assert str(eng.sim.order(stops[-1]).status) == 'canceled'                                     # the resting stop went
    assert len(f) == 2 and f.iloc[1].ts == crash + pd.Timedelta(minutes=1) and f.iloc[1].reason == 'exit_stop' and not eng.state.qty.any()


# ---- a restart between a trigger and the next bar -------------------------------------------------------------------

def test_a_restart_after_a_trigger_sends_no_second_exit(store, tmp_path):
    "Crashed just before the first mid-bar exit, right after it and right after the second, and restarted on the same journal and paper broker: the broker ends with an uninterrupted run's orders and fills, no exit twice."
    s = get_strategy('sma_cross')
    kinds = ('bars', 'status', 'quotes', 'trades')
    clean = LiveEngine(s, _symbols(store), risk=RISK, protection='engine')
    at = []
    om = clean.loop.orders
    send = om.exit_now
    om.exit_now = lambda *a, **k: (at.append(clean.stats.events), send(*a, **k))[1]
    feed = lambda: ReplayFeed(store, clean.symbols, START, END, kinds=kinds, chunk='1D')
    asyncio.run(clean.run(feed(), signals=False))
    assert len(at) >= 2
    j = Journal(tmp_path / 'j.sqlite', 'replay', s.id)
    broker = None
    for n in (at[0] - 1, at[0], at[1], None):                         # just before the first trigger, just after it, just after the second
        eng = LiveEngine(s, clean.symbols, broker, RISK, journal=j, protection='engine')
        broker = eng.sim
        if n is None: asyncio.run(eng.run(feed(), signals=False)); break
        with pytest.raises(_Crash): asyncio.run(eng.run(_cut(feed(), n), signals=False))
    orders = lambda b: sorted((o.client_id, o.order.symbol, str(o.order.side), o.order.qty, str(o.order.intent), str(o.order.type), str(o.order.bar_time)) for o in b.all_orders())
    fills = lambda b: sorted((f.client_id, f.qty, round(f.price, 9), str(f.ts)) for f in b.fills_since(pd.Timestamp(0, tz='UTC')))
    o = orders(broker)
    assert len(o) == len({x[1:] for x in o}), 'two orders with the same content at the broker'
    assert o == orders(clean.sim) and fills(broker) == fills(clean.sim)
    assert broker.qty.tolist() == clean.sim.qty.tolist()


def _symbols(store):
    return sorted(set(store.bars(None, START, END, as_='arrow').column('symbol').to_pylist()))


# ---- water marks across a restart ------------------------------------------------------------------------------------

def test_water_marks_survive_a_restart(tmp_path):
    "The monitor's high between bars (a trade above every bar's high) goes into the journal's snapshots; an engine restarted on the journal trails from it, one that forgot it would not."
    s = get_strategy('sma_cross', fast=2, slow=3)
    risk = RiskConfig(eod_flatten=False, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0, stop_pct=0.05, trail_pct=0.03, target_r=None)
    px = (2.0, 1.99, 1.98, 1.97, 2.00, 2.04, 2.08, 2.10)
    ev = [_bar('AAA', T0 + pd.Timedelta(minutes=k), p, p + 0.005, p - 0.005, p) for k, p in enumerate(px)]
    k = len(px)
    ev += [Trade('AAA', (T0 + pd.Timedelta(minutes=k, seconds=10)).to_pydatetime(), 2.40, 100),   # a new high no bar holds
           _bar('AAA', T0 + pd.Timedelta(minutes=k), 2.11, 2.12, 2.10, 2.11), _bar('AAA', T0 + pd.Timedelta(minutes=k + 1), 2.11, 2.12, 2.10, 2.11)]

    class Feed:
        async def __aiter__(self):
            for e in ev: yield e
    path = tmp_path / 'j.sqlite'
    eng = LiveEngine(s, ['AAA'], risk=risk, protection='engine', journal=Journal(path, 'acct', s.id))
    asyncio.run(eng.run(Feed(), signals=False))
    assert eng.state.qty[0] > 0 and eng.monitor.frame().empty             # long, its trailing level (2.40 - 3%) not crossed by 2.40's trade itself
    marks = eng.monitor.marks()
    assert marks['AAA'][0] == 2.40 and eng.state.high[0] < 2.40            # the monitor knows a high the state does not
    assert Journal(path, 'acct', s.id).latest_snapshot()['monitor'] == marks
    again = LiveEngine(s, ['AAA'], risk=risk, protection='engine', journal=Journal(path, 'acct', s.id))
    assert again.monitor.marks() == marks
    q = Quote('AAA', (T0 + pd.Timedelta(minutes=k + 2, seconds=5)).to_pydatetime(), 2.30, 2.31, 100, 100)   # under 2.40 - 3% = 2.328
    again.monitor.sync(again._atr, 'regular')
    assert again.monitor.on_quote(q) is not None                           # trails from the high it reached before the restart
