"""The live engine with the paper server as its broker (`LiveEngine(..., broker=PaperBroker(url))`): the same orders and
fills as with the in-process SimBroker when no order is placed from inside a bar (no protective stops), and, with
protective stops, the documented difference exactly: the same as an in-process SimBroker whose events reach the engine
after each bar (an order placed at a fill is tried from the next bar)."""
from __future__ import annotations

import asyncio
import warnings

import pandas as pd
import pytest

from smallcap.execution.costs import Costs
from smallcap.execution.sim import SimBroker
from smallcap.data.synth import SynthConfig, build_store
from smallcap.live.engine import LiveEngine, live_result
from smallcap.live.feed import ReplayFeed
from smallcap.live.paper import PaperBroker, PaperServer
from smallcap.risk import RiskConfig
from smallcap.strategy.base import get_strategy

START, END = '2025-11-24', '2025-11-26'
UNTIL = pd.Timestamp('2025-11-25 16:00', tz='UTC')   # the first day warms the volume average up; half of the second trades
NO_STOPS = RiskConfig(sizing='fixed_fraction', stop_pct=None, target_r=None)
STOPS = RiskConfig(max_positions=2, stop_pct=0.01, target_r=1.0, max_bars_held=60)


class AfterBar(SimBroker):
    "The in-process reference of the remote semantics: the events of a bar reach the listener after the bar is done."
    def on_bar(self, *a, **k) -> None:
        real, buf = self.listener, []
        self.listener = buf.append if real is not None else None
        try: super().on_bar(*a, **k)
        finally: self.listener = real
        for e in buf: real(e)


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    warnings.filterwarnings('ignore')
    return build_store(tmp_path_factory.mktemp('paper') / 'st.duckdb',
                       SynthConfig(seed=3, n_symbols=6, start=START, n_sessions=2, n_delisted=0, min_splits=0, gap_prob=0.5))


def run(store, risk, broker=None):
    "A replay of [START, END) through the live engine with this broker; its result."
    s = get_strategy('sma_cross')
    syms = sorted(set(store.bars(None, START, END, as_='arrow').column('symbol').to_pylist()))
    feed = ReplayFeed(store, syms, START, END, kinds=('bars', 'status'), chunk='1D')
    eng = LiveEngine(s, syms, broker(syms) if broker else None, risk, Costs(), 100_000.0)
    asyncio.run(eng.run(feed, until=UNTIL, signals=False))
    return live_result(eng, store), eng


def same(a, b) -> None:
    pd.testing.assert_frame_equal(a.fills.reset_index(drop=True), b.fills.reset_index(drop=True))
    cols = ['ts', 'symbol', 'side', 'type', 'intent', 'qty', 'filled', 'status', 'order_id']
    pd.testing.assert_frame_equal(a.orders[cols].reset_index(drop=True), b.orders[cols].reset_index(drop=True))
    assert a.equity.iloc[-1] == b.equity.iloc[-1]


@pytest.mark.parametrize('risk', ['no_stops', 'stops'])
def test_engine_on_the_paper_server(store, tmp_path, risk):
    rc = {'no_stops': NO_STOPS, 'stops': STOPS}[risk]
    servers = []
    def paper(syms):
        srv = PaperServer(tmp_path / f'{risk}.sqlite', syms, 100_000.0, participation=Costs().participation, costs=Costs()).start()
        servers.append(srv)
        return PaperBroker(srv.url, timeout=10)
    try:
        remote, eng = run(store, rc, paper)
        local, _ = run(store, rc)
        after, _ = run(store, rc, lambda syms: AfterBar(syms, 100_000.0, Costs(), participation=Costs().participation))
    finally:
        for s in servers: s.stop()
    assert len(remote.fills) > 5
    same(remote, after)                                       # the remote semantics, exactly
    if risk == 'no_stops': same(remote, local)                # nothing placed inside a bar: no difference at all
    else:
        assert remote.orders.intent.isin(['stop_loss', 'take_profit']).any()
        assert not remote.fills.equals(local.fills)           # the difference does arise here (stops placed at fills, tried a bar later)


def test_a_restarted_engine_reconciles_with_a_restarted_server(store, tmp_path):
    "An engine with a journal on the paper server; server and engine restarted (the server from its book): reconciliation finds nothing to fix."
    import numpy as np
    from smallcap.live.journal import Journal
    s = get_strategy('sma_cross')
    j = Journal(tmp_path / 'j.sqlite', 'paper', s.id)
    syms = sorted(set(store.bars(None, START, END, as_='arrow').column('symbol').to_pylist()))
    srv = PaperServer(tmp_path / 'book.sqlite', syms, 100_000.0, participation=Costs().participation, costs=Costs()).start()
    try:
        first = LiveEngine(s, syms, PaperBroker(srv.url, timeout=10), STOPS, Costs(), 100_000.0, j)
        asyncio.run(first.run(ReplayFeed(store, syms, START, END, kinds=('bars', 'status'), chunk='1D'), until=UNTIL, signals=False))
        assert first.state.qty.any() and first.sim.open_orders()       # positions and resting orders to reconcile
    finally: srv.stop()
    srv = PaperServer(tmp_path / 'book.sqlite').start()                  # rebuilt from its book
    try:
        again = LiveEngine(s, syms, PaperBroker(srv.url, timeout=10), STOPS, Costs(), 100_000.0, j)
        rec = again.reconciliation
        assert rec is not None and not rec.halted, str(rec)
        np.testing.assert_array_equal(again.state.qty, first.state.qty)
        assert abs(again.state.cash - first.state.cash) < 1e-6
        assert len(again.loop.orders.live) == len(again.sim.open_orders()) > 0
    finally: srv.stop()
