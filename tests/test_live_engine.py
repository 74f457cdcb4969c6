"""The live engine on recorded sessions: a replay through the engine and the paper broker gives the event engine's
orders, fills and final equity for every library strategy and both combinators; the live-only semantics (status halts,
stale data, pause, kill switch, a clean stop) are pinned; the journal of a replay rebuilds the engine's state; bad input
is refused with a clear error."""
from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest

from smallcap.backtest.core import backtest
from smallcap.core import ConfigError, DataError
from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, build_store
from smallcap.live.engine import LiveEngine, replay
from smallcap.live.feed import Bar, Status
from smallcap.live.journal import Journal
from smallcap.risk import RiskConfig
from smallcap.strategy.base import get_strategy

START, END = '2025-11-24', '2025-11-29'     # Mon-Wed regular days, Thanksgiving, the Friday half day
CASES = {
    'sma_cross': {}, 'sma_cross_ema': dict(kind='ema', fast=5, slow=20), 'rsi_reversion': dict(short=True),
    'bollinger_reversion': dict(short=True), 'stochrsi_ema': dict(trend=20), 'dual_momentum': dict(lookback=30, top=3),
    'atr_breakout': dict(length=10, k=0.0), 'orb': dict(gap_min=0.02), 'gap_and_go': dict(rvol_min=1.0, gap_min=0.02),
    'vwap_reclaim': dict(below_bars=5),
    'arbiter': dict(members=('orb', {'name': 'sma_cross', 'params': {'fast': 5, 'slow': 20}}, 'rsi_reversion')),
    'ensemble': dict(members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.6),
}
RISKS = {'default': RiskConfig(), 'binding': RiskConfig(max_positions=2, stop_pct=0.03, trail_pct=0.04, target_r=2.0, max_bars_held=60)}


def strategy(case: str):
    return get_strategy('sma_cross' if case == 'sma_cross_ema' else case, **CASES[case])


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    warnings.filterwarnings('ignore')
    return build_store(tmp_path_factory.mktemp('live') / 'st.duckdb',
                       SynthConfig(seed=3, n_symbols=6, start=START, n_sessions=4, n_delisted=0, min_splits=0, gap_prob=0.5))


@pytest.fixture(scope='module')
def bars(store):
    return Panel.from_bars(store.bars(None, START, END))


def _same(a, b) -> None:
    "Same orders, fills and final equity (1e-9 relative)."
    pd.testing.assert_frame_equal(a.fills.reset_index(drop=True), b.fills.reset_index(drop=True), check_exact=False, rtol=1e-9, atol=0)
    cols = ['ts', 'symbol', 'side', 'type', 'intent', 'requested', 'qty', 'filled', 'status', 'reason', 'order_id']
    pd.testing.assert_frame_equal(a.orders[cols].reset_index(drop=True), b.orders[cols].reset_index(drop=True))
    assert abs(a.equity.iloc[-1] / b.equity.iloc[-1] - 1) <= 1e-9


@pytest.mark.parametrize('risk', list(RISKS))
@pytest.mark.parametrize('case', list(CASES))
def test_replay_equals_the_event_backtest(store, bars, case, risk):
    s = strategy(case)
    bt = backtest(s, bars, engine='event', store=store, risk=RISKS[risk])
    live = replay(s, store, START, END, risk=RISKS[risk], status_halts=False)    # halts as a backtest knows them (live difference 1 is pinned below)
    _same(live.result, bt)
    assert not any('signal cells differed' in n for n in live.result.notes), live.result.notes
    assert live.engine.stats.bars == len(bars)
    if case in ('sma_cross', 'rsi_reversion') and risk == 'binding': assert len(bt.fills) > 20    # the comparison has something to compare


def test_the_check_catches_a_difference(store, bars):
    "A replay under other limits differs from the backtest, and `_same` says so (the parity test can fail)."
    s = strategy('sma_cross')
    bt = backtest(s, bars, engine='event', store=store, risk=RISKS['default'])
    live = replay(s, store, START, END, risk=RiskConfig(max_positions=1), status_halts=False)
    with pytest.raises(AssertionError): _same(live.result, bt)


def test_status_halts_are_the_only_difference(store, bars):
    "With halts known as they happen, the first order that differs from the backtest's is refused in the bar a halt began in."
    s = strategy('sma_cross')
    bt = backtest(s, bars, engine='event', store=store).orders
    live = replay(s, store, START, END).result.orders
    key = ['ts', 'symbol', 'side', 'intent', 'status', 'reason']
    n = min(len(bt), len(live))
    diff = np.flatnonzero((bt[key].iloc[:n].to_numpy() != live[key].iloc[:n].to_numpy()).any(axis=1))
    assert len(diff), 'the store plants halts that begin inside traded bars'
    first = live.iloc[diff[0]] if live.iloc[diff[0]].status == 'rejected' else bt.iloc[diff[0]]
    st = store.status([first.symbol], START, END)
    began = pd.DatetimeIndex(st[st.kind == 'halt'].ts).floor('1min')
    assert first.ts in began, (first, began)
    row = live[(live.ts == first.ts) & (live.symbol == first.symbol)]
    assert 'rejected_halted' in row.reason.iloc[0], row


def _bar(sym: str, t: pd.Timestamp, px: float = 2.0, vol: int = 1000) -> Bar:
    return Bar(sym, t.to_pydatetime(), (t + pd.Timedelta(minutes=1)).to_pydatetime(), px, px * 1.01, px * 0.99, px, vol, px, 10)


class _Feed:
    "A list of events as a feed."
    def __init__(self, events, symbols=('AAA', 'BBB')): self.events, self.symbols = events, tuple(symbols)
    async def __aiter__(self):
        for e in self.events: yield e


def _run(eng, events, **kw):
    import asyncio
    return asyncio.run(eng.run(_Feed(events), signals=False, **kw))


T0 = pd.Timestamp('2025-11-24 15:00', tz='UTC')        # 10:00 New York


def _capture(eng):
    seen = []
    step = eng.loop.step
    eng.loop.step = lambda ctx: (seen.append(ctx), step(ctx))[1]
    return seen


def test_a_status_halt_marks_the_symbol_halted_at_that_bars_close():
    "Live difference 1: halted within the bar in which the halt began (it traded before it); the backtest only knows bars without trades."
    eng = LiveEngine(get_strategy('sma_cross'), ['AAA', 'BBB'])
    seen = _capture(eng)
    ev = [_bar('AAA', T0), _bar('BBB', T0), Status('AAA', (T0 + pd.Timedelta(seconds=90)).to_pydatetime(), 'halt', 'LUDP'),
          _bar('AAA', T0 + pd.Timedelta(minutes=1)), _bar('BBB', T0 + pd.Timedelta(minutes=1)), _bar('BBB', T0 + pd.Timedelta(minutes=2)),
          Status('AAA', (T0 + pd.Timedelta(minutes=3, seconds=10)).to_pydatetime(), 'resume'), _bar('AAA', T0 + pd.Timedelta(minutes=4)),
          _bar('BBB', T0 + pd.Timedelta(minutes=4))]
    _run(eng, ev)
    halted = [c.halted.tolist() for c in seen]
    assert halted == [[False, False], [True, False], [True, False], [False, False]]     # minute 2: halted at its close though AAA traded in it


def test_late_bars_are_not_decided():
    "Live difference 2: a bar that arrives more than `stale_after` seconds after its close is not decided (nothing is sent)."
    now = {'t': 0.0}
    eng = LiveEngine(get_strategy('sma_cross', fast=2, slow=3), ['AAA'], stale_after=5.0, clock=lambda: now['t'])
    seen = _capture(eng)
    ev = [_bar('AAA', T0 + pd.Timedelta(minutes=k), 2.0 + 0.01 * k) for k in range(6)]
    now['t'] = (T0 + pd.Timedelta(minutes=10)).value / 1e9           # everything arrives minutes late
    _run(eng, ev)
    assert (eng.stats.stale, eng.stats.bars, len(seen), len(eng.loop.orders.sent)) == (6, 0, 0, 0)


def test_pause_resume_kill_and_until():
    eng = LiveEngine(get_strategy('sma_cross', fast=2, slow=3), ['AAA'], risk=RiskConfig(eod_flatten=False, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0))
    px = [2.0 + 0.01 * k for k in range(10)] + [2.1 - 0.02 * k for k in range(5)] + [2.0 + 0.02 * k for k in range(15)]
    ev = [_bar('AAA', T0 + pd.Timedelta(minutes=k), p) for k, p in enumerate(px)]
    eng.pause()
    _run(eng, ev[:10])
    assert eng.stats.paused == 10 and not eng.loop.orders.sent          # paused: the first cross up is not entered
    eng.resume()
    _run(eng, ev[10:20])
    assert eng.state.qty.any(), 'the next cross up is entered once resumed'
    eng.kill('flatten')
    _run(eng, ev[20:], until=T0 + pd.Timedelta(minutes=25))
    assert not eng.state.qty.any() and eng.state.kill_switch
    assert eng.stats.bars < len(ev)                                      # stopped at `until`


def test_stop_finishes_the_minute_in_hand():
    eng = LiveEngine(get_strategy('sma_cross', fast=2, slow=3), ['AAA', 'BBB'])
    ev = [_bar(s, T0 + pd.Timedelta(minutes=k)) for k in range(10) for s in ('AAA', 'BBB')]
    _run(eng, ev, progress=lambda e: e.stop() if e.stats.bars == 3 else None)
    assert eng.stats.bars == 4 and len(eng.window) >= 1                  # the minute whose first bar had arrived is decided too


def test_the_journal_of_a_replay_rebuilds_the_engines_state(store, tmp_path):
    s = strategy('sma_cross')
    j = Journal(tmp_path / 'j.sqlite', 'replay', s.id)
    live = replay(s, store, START, END, risk=RISKS['binding'], journal=j)
    st = live.engine.state
    rebuilt = j.rebuild_state(st.symbols.tolist(), 100_000.0)
    np.testing.assert_array_equal(rebuilt.qty, st.qty)
    assert abs(rebuilt.cash - st.cash) < 1e-6
    kinds = j.events().kind.value_counts()
    assert kinds['start'] == 1 and kinds['stop'] == 1 and kinds['snapshot'] >= 1 and kinds['intent'] == len(live.engine.loop.orders.sent)
    assert kinds['fill'] == len(live.result.fills)


def test_a_restart_reconciles_before_it_trades(store, tmp_path):
    "A second engine on the same journal and broker rebuilds the state from the journal and reconciles first: nothing to fix, same positions."
    s = strategy('sma_cross')
    j = Journal(tmp_path / 'j.sqlite', 'replay', s.id)
    first = replay(s, store, START, '2025-11-26', risk=RISKS['binding'], journal=j).engine
    again = LiveEngine(s, first.symbols, first.sim, RISKS['binding'], journal=j)
    rec = again.reconciliation
    assert rec is not None and not rec.halted, str(rec)
    np.testing.assert_array_equal(again.state.qty, first.state.qty)
    assert abs(again.state.cash - first.state.cash) < 1e-6
    assert j.events('reconcile').shape[0] == 1
    assert len(again.loop.orders.live) == len(first.sim.open_orders())         # the working orders adopted with the journal's records


def test_bad_input_is_refused(store):
    with pytest.raises(ConfigError, match='unknown strategy|not registered|no strategy'): replay('no_such_strategy', store, START, END)
    with pytest.raises(DataError, match='nothing to replay'): replay('sma_cross', store, START, END, symbols=['NOPE'])
    with pytest.raises(DataError, match='nothing to replay'): replay('sma_cross', store, '2024-01-02', '2024-01-05')
    with pytest.raises(ConfigError, match='duplicate symbols'): LiveEngine(get_strategy('sma_cross'), ['AAA', 'aaa'])


class _Crash(Exception):
    "The engine process dying between two feed events."


async def _cut(feed, n: int):
    "The feed's first `n` events, then a crash."
    k = 0
    async for e in feed:
        if k == n: raise _Crash
        k += 1
        yield e


def _book(b):
    "A broker's orders (client id and content), fills, positions and cash."
    orders = sorted((s.client_id, s.order.symbol, str(s.order.side), s.order.qty, str(s.order.intent), str(s.order.type), str(s.order.bar_time))
                    for s in b.all_orders())
    fills = sorted((f.client_id, f.qty, round(f.price, 9), str(f.ts)) for f in b.fills_since(pd.Timestamp(0, tz='UTC')))
    return orders, fills, b.qty.tolist(), round(b.account().cash, 6)


@pytest.mark.parametrize('case', ['sma_cross', 'orb'])
def test_a_restart_resumes_where_the_journal_stopped(store, tmp_path, case):
    "Crashed between feed events at three instants and restarted each time on the same journal and broker: the broker ends with an uninterrupted run's orders, fills, positions and cash, no order twice, and the journal's positions are the broker's."
    import asyncio
    from smallcap.live.feed import ReplayFeed
    s, risk = strategy(case), RISKS['binding']
    clean = replay(s, store, START, END, risk=risk, status_halts=False).engine
    syms, total = clean.symbols, clean.stats.events
    kinds = ('bars', 'status') + (('quotes',) if clean.costs.slippage == 'spread' else ())     # what `replay` reads
    feed = lambda: ReplayFeed(store, syms, START, END, kinds=kinds, chunk='1D')
    j = Journal(tmp_path / 'j.sqlite', 'replay', s.id)
    broker, resumed = None, []
    for n in (total // 5, total // 2, 4 * total // 5, None):
        eng = LiveEngine(s, syms, broker, risk, journal=j, status_halts=False)
        broker = eng.sim
        if n is None: asyncio.run(eng.run(feed(), signals=False)); break
        with pytest.raises(_Crash): asyncio.run(eng.run(_cut(feed(), n), signals=False))
        resumed.append(eng.stats.resumed)
    assert resumed[0] == 0 and resumed[1] > 0 and resumed[2] > resumed[1], resumed       # each restart resumed later
    assert eng.reconciliation is not None and not eng.reconciliation.halted, str(eng.reconciliation)
    a, b = _book(broker), _book(clean.sim)
    assert len(a[0]) == len({o[1:] for o in a[0]}), "two orders with the same content at the broker"
    assert a == b
    assert j.rebuild_state(syms, 100_000.0).qty.tolist() == broker.qty.tolist()
    assert j.events('reconcile').shape[0] == 3


def test_a_scan_universe_enters_only_what_the_latest_scan_kept(store, bars, tmp_path):
    "With a universe from a scan re-run every 30 minutes, the replay equals the event backtest of the strategy's signals with each entry outside the latest run's symbols removed; the runs are made here independently, by `run_scan` at each minute's latest scheduled time."
    import dataclasses
    from smallcap.live.engine import Rescan
    from smallcap.scan import run_scan
    s, risk = strategy('sma_cross'), RISKS['binding']
    spec = {'gap_min': 0.0, 'rank_by': 'gap', 'top': 2}
    j = Journal(tmp_path / 'j.sqlite', 'replay', s.id)
    got = replay(s, store, START, END, risk=risk, status_halts=False, journal=j, universe=Rescan(spec, store, first='09:25', every='30min'))
    ends = (bars.index + pd.Timedelta('1min')).tz_convert('America/New_York')
    first = ends.normalize() + pd.Timedelta('9h25min')
    at = first + (ends - first) // pd.Timedelta('30min') * pd.Timedelta('30min')
    kept = {a: set(run_scan(store, spec, at=a).symbol) for a in at.unique()}
    allowed = pd.DataFrame([bars.close.columns.isin(kept[a]) for a in at], index=bars.index, columns=bars.close.columns)
    assert 0 < allowed.to_numpy().mean() < 1, 'the scan keeps some symbols and not others'
    sig = s.signals(bars)
    ref = backtest(dataclasses.replace(sig, entries_long=sig.entries_long & allowed), bars, engine='event', store=store, risk=risk)
    assert sig.entries_short is None or not sig.entries_short.to_numpy().any()
    key = ['ts', 'symbol', 'side', 'qty', 'price']
    pd.testing.assert_frame_equal(got.result.fills[key].reset_index(drop=True), ref.fills[key].reset_index(drop=True), check_exact=False, rtol=1e-9)
    assert len(ref.fills) > 5 and len(ref.fills) < len(backtest(s, bars, engine='event', store=store, risk=risk).fills)
    runs = j.events('scan')
    assert len(runs) == got.engine.stats.scans == len(kept) and got.engine.stats.scans == len(got.engine.universe.runs)
