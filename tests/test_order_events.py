"""Order events folded in exactly once, whatever order they arrive in (`OrderManager.on_event`, `Journal.rebuild_state`).

A scripted broker wraps the paper broker (the one fill model) and delivers its order events the way IB and Alpaca can:
each batch in a random interleaving (a later partial before an earlier one, a cancel's confirmation before the fill that
raced it), with repeats of events already delivered, late acknowledgements, and events of orders that are not ours; and it
confirms a random share of cancels only after the next bar has traded, so fills race our cancels. The event engine runs
the real loop on a random minute market against it, journalled. Checked after every bar and at the end:

1. no risk limit is broken: open positions never exceed `max_positions` (the loop's and the broker's), no position is
   larger than one symbol's cap and no book larger than the gross cap (at the prices paid, with room for the bar's move);
2. no fill is counted twice: the loop's positions equal the broker's own book and the sum of the broker's executions;
3. the loop's state equals `Journal.rebuild_state` of the journal that recorded the same run (repeats and all).
A last test switches the de-duplication off and shows that the checks catch the double count.
"""
from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.core import Fill
from smallcap.execution.broker import EventKind, OrderEvent
from smallcap.execution.sim import SimBroker
from smallcap.risk import RiskConfig
from test_loop_properties import _market, _signals


class Scripted(SimBroker):
    "The paper broker, with its events scrambled, repeated and acknowledged late, and some cancels confirmed after the next bar."
    def __init__(self, *a, seed: int = 0, dup: float = 0.3, slow_cancel: float = 0.5, **k):
        super().__init__(*a, **k)
        self.rng, self.dup, self.slow_cancel = np.random.default_rng(seed), dup, slow_cancel
        self._held: list[OrderEvent] = []          # emitted, not yet delivered
        self._seen: list[OrderEvent] = []          # delivered (candidates for repeats)
        self._asked: list[str] = []                # cancels not yet carried out
        self.stats = dict(delivered=0, repeats=0, late_acks=0, foreign=0, raced=0, swapped=0)

    def _emit(self, e: OrderEvent) -> None: self._held.append(e)      # never pushed: delivered by `events()`, scrambled

    def cancel(self, client_id: str):
        if client_id in self._orders and self.rng.random() < self.slow_cancel:
            self._asked.append(client_id); return self.order(client_id)   # still working: confirmed after the next bar
        return super().cancel(client_id)

    @property
    def working(self) -> bool: return bool(self._pending) or bool(self._asked)

    def on_bar(self, *a, **k) -> None:
        asked, self._asked = self._asked, []
        later = [c for c in asked if self.rng.random() < 0.5]
        for c in asked:
            if c not in later: super().cancel(c)
        n = len(self._fills)
        super().on_bar(*a, **k)
        self.stats['raced'] += sum(f.client_id in later for f in self._fills[n:])
        for c in later: super().cancel(c)                             # the cancel lost the race with the bar's fills

    def events(self) -> list[OrderEvent]:
        batch, self._held = self._held, []
        if not batch: return []
        rng, out = self.rng, list(batch)
        for e in rng.choice(np.array(self._seen + batch, object), size=int(rng.binomial(len(batch), self.dup))).tolist():
            out.append(e); self.stats['repeats'] += 1
        for e in batch:
            if rng.random() < 0.2:
                out.append(OrderEvent(EventKind.ACCEPTED, e.client_id, e.ts, filled=0, remaining=self._orders[e.client_id].order.qty))
                self.stats['late_acks'] += 1
        if rng.random() < 0.2:
            e = batch[0]
            out.append(OrderEvent(EventKind.FILLED, 'someone-else', e.ts, Fill('someone-else', self.symbols[0], 'buy', 7, 5.0, e.ts), 7, 0))
            self.stats['foreign'] += 1
        order = rng.permutation(len(out))
        self.stats['swapped'] += int((np.diff(order[order < len(batch)]) < 0).sum())
        self._seen.extend(batch); self.stats['delivered'] += len(out)
        return [out[i] for i in order]


def _run(cfg, n, seed, thin_p, limit_p, dup, slow, monkeypatch, no_dedupe=False):
    "The event engine on a random market against the scripted broker, journalled; the per-bar books and the loop at the end."
    from smallcap.backtest import event
    from smallcap.backtest.plan import prepare
    from smallcap.execution.costs import Costs
    from smallcap.execution.loop import OrderManager
    from smallcap.live.journal import Journal
    bars, rng = _market(n, seed, 0.05, thin_p)
    plan = prepare(_signals(bars, rng, limit_p), bars, costs=Costs(participation=0.1), risk=cfg, fill='realistic')
    d = tempfile.mkdtemp()
    j = Journal(f'{d}/run.sqlite', 'PA1', plan.strategy_id)
    j.con.execute('PRAGMA synchronous=OFF')                           # durability is test_journal's; here only the records count
    brokers, loops, seen = [], [], []

    def broker(*a, **k):
        b = Scripted(*a, seed=seed, dup=dup, slow_cancel=slow, **k); brokers.append(b)
        return j.guard(b)

    from smallcap.execution.loop import TradingLoop

    class Loop(TradingLoop):
        def __init__(self, *a, **k):
            super().__init__(*a, journal=j, **k); loops.append(self)

        def step(self, bar):
            out = super().step(bar)
            b = brokers[0]
            seen.append((bar.time, self.state.qty.copy(), b.qty.copy(), self.state.avg_price.copy(), self.state.equity))
            return out
    monkeypatch.setattr(event, 'TradingLoop', Loop)
    monkeypatch.setattr(event, 'SimBroker', broker)
    monkeypatch.setattr(event, 'SKIP', False)
    if no_dedupe:
        orig = OrderManager.on_event

        def counted_every_time(self, ev):                            # forget what was counted: every fill event adds its shares
            for book in (self.live, self.closing, self.done):
                if (r := book.get(ev.client_id)) is not None and ev.fill is not None: r.filled = ev.filled - ev.fill.qty
            orig(self, ev)
        monkeypatch.setattr(OrderManager, 'on_event', counted_every_time)
    event.run(plan)
    loop, b = loops[0], brokers[0]
    for _ in range(100):                                              # the events still held at the end of the data
        if not b._held: break
        loop.drain()
    return plan, j, loop, b, seen


def _check(cfg, plan, j, loop, b, seen):
    st = loop.state
    # 1. limits, after every bar: slots, one symbol's cap, the gross cap (at the prices paid; the bar's move and the spread allowed)
    for t, q_state, q_broker, avg, equity in seen:
        for name, q in (('loop', q_state), ('broker', q_broker)):
            assert (q != 0).sum() <= cfg.max_positions, f"{t}: {name} holds {(q != 0).sum()} positions > max_positions={cfg.max_positions}"
        value = np.abs(q_state) * np.nan_to_num(avg)
        peak = max(s[4] for s in seen if s[0] <= t)
        assert value.max(initial=0) <= 1.5 * cfg.max_position_pct * peak, f"{t}: a position of ${value.max():,.0f} is over the symbol cap"
        assert value.sum() <= 1.5 * cfg.max_gross_pct * peak, f"{t}: a book of ${value.sum():,.0f} is over the gross cap"
    # 2. each fill once: the loop's positions are the broker's book and the sum of its executions
    ex = pd.DataFrame([(f.symbol, f.signed_qty) for f in b.fills_since(pd.Timestamp(0, tz='UTC'))], columns=['symbol', 'q'])
    by_exec = ex.groupby('symbol').q.sum().reindex(plan.symbols, fill_value=0).to_numpy() if len(ex) else np.zeros(len(plan.symbols), int)
    assert st.qty.tolist() == b.qty.tolist(), f"positions {st.qty.tolist()} != the broker's {b.qty.tolist()}: a fill counted twice or lost"
    assert st.qty.tolist() == by_exec.tolist(), f"positions {st.qty.tolist()} != the sum of unique executions {by_exec.tolist()}"
    # 3. the journal rebuilds the same state
    r = j.rebuild_state(list(plan.symbols), plan.cash, date=st.date)
    assert r.qty.tolist() == st.qty.tolist(), f"journal positions {r.qty.tolist()} != the loop's {st.qty.tolist()}"
    np.testing.assert_allclose([r.cash, *r.realized], [st.cash, *st.realized], rtol=0, atol=1e-6, err_msg="journal cash or P&L != the loop's")
    np.testing.assert_allclose(np.nan_to_num(r.avg_price), np.nan_to_num(st.avg_price), rtol=1e-12, atol=0)


CFG = dict(sizing=st.sampled_from(['fixed_fraction', 'fixed_notional']), fraction=st.sampled_from([0.1, 0.4]),
           notional=st.sampled_from([3_000.0, 30_000.0]), max_positions=st.integers(1, 3), max_gross_pct=st.sampled_from([0.3, 1.0]),
           stop_pct=st.sampled_from([None, 0.02]), target_r=st.sampled_from([None, 2.0]), trail_pct=st.sampled_from([None, 0.03]),
           max_bars_held=st.sampled_from([None, 6]), max_daily_loss_pct=st.sampled_from([None, 0.01]))


@st.composite
def scenarios(draw):
    kw = {k: draw(v) for k, v in CFG.items()}
    cfg = RiskConfig(max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0, min_price=0.1, max_price=1_000.0,
                     cooldown_minutes=0.0, **kw)
    return (cfg, draw(st.integers(1, 4)), draw(st.integers(0, 2**31 - 1)), draw(st.sampled_from([0.0, 0.3])), draw(st.sampled_from([0.0, 0.5])),
            draw(st.sampled_from([0.0, 0.3, 1.0])), draw(st.sampled_from([0.0, 0.5, 1.0])))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_scrambled_repeated_and_racing_events_count_each_fill_once(scn):
    with pytest.MonkeyPatch.context() as m:
        _check(scn[0], *_run(*scn, m))


CASE = (RiskConfig(sizing='fixed_fraction', fraction=0.4, max_position_pct=0.5, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
                   min_price=0.1, max_price=1_000.0, max_positions=3, stop_pct=0.02, target_r=2.0, cooldown_minutes=0.0), 4)


def test_the_scenarios_scramble_repeat_and_race():
    "Not vacuous: repeats, late acks, foreign events, swapped events and fills that raced a cancel all occur, with partial fills."
    tot = {}
    for seed in range(3):
        with pytest.MonkeyPatch.context() as m:
            plan, j, loop, b, seen = _run(*CASE, seed, 0.3, 0.5, 0.3, 1.0, m)
            for k, v in b.stats.items(): tot[k] = tot.get(k, 0) + v
            o = j.orders()
            tot['partial'] = tot.get('partial', 0) + int(((o.filled > 0) & (o.filled < o.qty)).sum())
    assert all(v > 0 for v in tot.values()), tot


def test_the_checks_catch_a_double_count():
    "With the de-duplication switched off (every fill event adds its shares), the same checks fail."
    with pytest.MonkeyPatch.context() as m:
        res = _run(*CASE, 1, 0.3, 0.5, 1.0, 0.5, m, no_dedupe=True)
        with pytest.raises(AssertionError, match='counted twice|unique executions|max_positions|cap'): _check(CASE[0], *res)
    with pytest.MonkeyPatch.context() as m:
        _check(CASE[0], *_run(*CASE, 1, 0.3, 0.5, 1.0, 0.5, m))           # and they pass with it on
