"""The compiled entry pipeline (`smallcap.risk_nb`, behind `smallcap.risk`'s array functions and `RiskEngine.decide`) against
the NumPy formulation it replaced (`tests/risk_reference.py`), on random configurations, rows, states and bars."""
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import risk_reference as ref
import smallcap.risk as risk
from smallcap.risk import SIZINGS, BarContext, RiskConfig, RiskEngine, RiskState, Sizing

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the NumPy reference divides by zero prices
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
opt = lambda s: st.one_of(st.none(), s)


@st.composite
def configs(draw):
    return RiskConfig(sizing=draw(st.sampled_from(SIZINGS)), fraction=draw(st.sampled_from([0.05, 0.2, 1.0])),
                      stop_pct=draw(opt(st.sampled_from([0.001, 0.02, 0.05, 0.3]))), stop_atr=draw(opt(st.sampled_from([1.0, 2.5]))),
                      target_pct=draw(opt(st.sampled_from([0.03, 0.1]))), target_r=draw(opt(st.sampled_from([1.0, 2.0]))),
                      use_signal_size=draw(st.booleans()), lot_size=draw(st.sampled_from([1, 100])), min_shares=draw(st.sampled_from([1, 50])),
                      max_position_pct=draw(st.sampled_from([0.01, 0.1, 1.0])), max_position_value=draw(opt(st.sampled_from([2_000.0, 50_000.0]))),
                      max_shares=draw(opt(st.sampled_from([10, 700]))), max_adv_pct=draw(opt(st.sampled_from([0.001, 0.01]))),
                      max_gross_pct=draw(st.sampled_from([0.2, 1.0, 4.0])), max_gross_value=draw(opt(st.sampled_from([30_000.0]))),
                      max_positions=draw(st.integers(1, 4)), allow_short=draw(st.booleans()), allow_pyramiding=draw(st.booleans()),
                      loss_budget=draw(st.booleans()), cooldown_minutes=draw(st.sampled_from([0.0, 5.0])), min_price=draw(st.sampled_from([0.0, 1.0])),
                      max_price=draw(st.sampled_from([20.0, 1000.0])), min_avg_volume=draw(st.sampled_from([0.0, 100_000.0])),
                      min_avg_dollar_volume=draw(st.sampled_from([0.0, 500_000.0])), block_halted=draw(st.booleans()),
                      ssr_rule=draw(st.sampled_from(['block', 'uptick', 'ignore'])), leverage=draw(st.sampled_from([1.0, 4.0])),
                      non_marginable_below=draw(st.sampled_from([0.0, 3.0])), max_daily_loss_pct=draw(opt(st.sampled_from([0.01, 0.05]))),
                      trail_pct=draw(opt(st.sampled_from([0.02, 0.1]))), trail_atr=draw(opt(st.sampled_from([1.5]))),
                      max_bars_held=draw(opt(st.sampled_from([1, 5]))), max_hold_minutes=draw(opt(st.sampled_from([3.0, 30.0]))),
                      kill_switch_mode=draw(st.sampled_from(['flatten', 'freeze'])), eod_minutes=draw(st.sampled_from([5.0, 400.0])))


PRICES = st.sampled_from([np.nan, 0.0, 0.0123, 0.5, 0.999, 1.0, 2.345, 3.999, 4.0, 7.77, 19.99, 55.5])
def floats(draw, n, choices): return np.array(draw(st.lists(st.sampled_from(choices), min_size=n, max_size=n)), float)
def bools(draw, n): return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))


@st.composite
def rows(draw):
    n = draw(st.integers(1, 12))
    px = np.array(draw(st.lists(PRICES, min_size=n, max_size=n)))
    side = np.array(draw(st.lists(st.sampled_from([1, -1]), min_size=n, max_size=n)), np.int8)
    f = lambda ch: floats(draw, n, ch)
    return dict(price=px, side=side, atr=f([np.nan, 0.0, 0.05, 0.4]), stop=px * f([np.nan, 0.9, 1.0, 1.1, 2.0]),
                size=f([np.nan, 0.0, 0.01, 0.3]), limit=px * f([np.nan, 1.0, 1.01, 0.99]), qty=f([np.nan, np.nan, 0.0, 150.0, 1234.0]),
                avg_volume=f([np.nan, 0.0, 5e4, 2e6]), held=f([0.0, 0.0, 100.0, 5000.0]).astype(np.int64))


def same(a, b, what):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


@SETTINGS
@given(configs(), rows(), st.sampled_from([0.0, 25_000.0, 100_000.0]))
def test_size_shares(c, r, equity):
    got, want = risk.size_shares(c, equity, **r), ref.size_shares(c, equity, **r)
    for f in fields(Sizing): same(getattr(got, f.name), getattr(want, f.name), f.name)


@SETTINGS
@given(configs(), rows(), st.data())
def test_gates_screen_settle(c, r, data):
    n = len(r['price'])
    b = lambda: bools(data.draw, n)
    tick = np.array(data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)), np.int8)
    args = (r['side'], r['price'], data.draw(st.booleans()), b(), b(), b(), b(), tick, r['avg_volume'], b())
    same(risk.entry_gates(c, *args), ref.entry_gates(c, *args), 'entry_gates')
    kw = dict(atr=r['atr'], stop=r['stop'], size=r['size'], limit=r['limit'], qty=r['qty'], held=r['held'],
              gates=np.where(b(), int(risk.REASON_BITS.REJECTED_COOLDOWN), 0))
    got, want = risk.screen_entries(c, 50_000.0, *args, **kw), ref.screen_entries(c, 50_000.0, *args, **kw)
    same(got.shares, want.shares, 'screen shares'); same(got.reasons, want.reasons, 'screen reasons')
    red = np.array(data.draw(st.lists(st.sampled_from([0, int(risk.REASON_BITS.REDUCED_MARGIN), int(risk.REASON_BITS.REDUCED_ADV_CAP)]), min_size=n, max_size=n)), np.int64)
    q = np.minimum(got.shares, np.array(data.draw(st.lists(st.sampled_from([0, 1, 49, 10_000]), min_size=n, max_size=n))))
    same(risk.settle_entries(c, q, got.reasons | red, got.sizing.requested), ref.settle_entries(c, q, got.reasons | red, got.sizing.requested), 'settle')


def test_panel_shapes():
    "The array functions keep taking a whole panel (bars x symbols) with per-bar and per-symbol broadcasting."
    rng = np.random.default_rng(0)
    T, N = 40, 6
    px = rng.choice([np.nan, 0.8, 3.0, 12.0], (T, N))
    args = (np.int8(1), px, True, rng.random((T, 1)) < 0.1, rng.random((T, N)) < 0.1, True, rng.random((T, N)) < 0.2,
            rng.choice([-1, 0, 1], (T, N)).astype(np.int8), np.full((T, N), 3e5), False)
    c = RiskConfig(sizing='fixed_fraction')
    got, want = risk.screen_entries(c, 1e5, *args, atr=np.full((T, N), 0.1)), ref.screen_entries(c, 1e5, *args, atr=np.full((T, N), 0.1))
    assert got.shares.shape == (T, N)
    same(got.shares, want.shares, 'shares'); same(got.reasons, want.reasons, 'reasons')


@st.composite
def books(draw):
    n = draw(st.integers(1, 8))
    syms = [f'S{i}' for i in range(n)]
    s = RiskState.new(syms, 100_000.0)
    px = np.array(draw(st.lists(st.sampled_from([0.5, 2.0, 4.0, 9.5]), min_size=n, max_size=n)))
    s.qty = np.array(draw(st.lists(st.sampled_from([0, 0, 0, 500, -300, 2000]), min_size=n, max_size=n)), np.int64)
    s.avg_price = np.where(s.qty != 0, px, 0.0); s.last_price = px * np.array(floats(draw, n, [0.97, 1.0, 1.02]))
    s.stop = np.where(s.qty != 0, px * np.array(floats(draw, n, [np.nan, 0.95])), np.nan)
    s.target = np.where(s.qty != 0, px * np.array(floats(draw, n, [np.nan, 1.03, 0.97])), np.nan)
    s.high, s.low = np.where(s.qty != 0, px * 1.04, np.nan), np.where(s.qty != 0, px * 0.96, np.nan)
    s.bars_held = np.where(s.qty != 0, np.array(draw(st.lists(st.sampled_from([0, 1, 4, 9]), min_size=n, max_size=n))), 0)
    s.pending = np.array(draw(st.lists(st.sampled_from([0, 0, 200, -100]), min_size=n, max_size=n)), np.int64)
    s.pending_stop = np.where(s.pending != 0, px * 0.9, np.nan)
    T0 = pd.Timestamp('2026-03-02 15:00', tz='UTC')
    s.last_exit = np.array(draw(st.lists(st.sampled_from([risk.NAT_NS, (T0 - pd.Timedelta(minutes=2)).value]), min_size=n, max_size=n)), np.int64)
    s.cash = float(100_000.0 - s.qty @ px); s.day_start_equity = draw(st.sampled_from([100_000.0, 104_000.0])); s.date = T0.date()
    s.kill_switch = draw(st.booleans()) and draw(st.booleans())
    s.entry_time = np.where(s.qty != 0, (T0 - pd.Timedelta(minutes=draw(st.sampled_from([1, 10, 60])))).value, risk.NAT_NS)
    f = lambda ch: floats(draw, n, ch)
    close = px * f([0.95, 1.0, 1.05])
    bar = BarContext(T0, syms, close, open=close * f([0.9, 1.0, 1.1]), high=close * f([1.0, 1.01, 1.06]), low=close * f([0.94, 0.99, 1.0]), atr=f([np.nan, 0.1]), avg_volume=f([np.nan, 2e6]),
                     halted=bools(draw, n), entries_long=bools(draw, n), entries_short=bools(draw, n), exits_long=bools(draw, n),
                     exits_short=bools(draw, n), stop=close * f([np.nan, np.nan, 0.9]), size=f([np.nan, 0.02]), limit=close * f([np.nan, 1.01]),
                     priority=f([0.0, 1.0, 2.0, np.nan]) if draw(st.booleans()) else None,
                     session=draw(st.sampled_from(['regular', 'premarket'])), session_close=pd.Timestamp('2026-03-02 21:00', tz='UTC'))
    return s, bar


@SETTINGS
@given(configs(), books())
def test_decide(c, book):
    "Whole decisions and the state they leave, with the compiled pipeline and with the NumPy reference."
    s, bar = book
    s1, s2 = s.copy(), s.copy()
    got = RiskEngine(c).decide(s1, bar)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(risk, '_entries', ref._entries); m.setattr(risk, '_exits', ref._exits)
        want = RiskEngine(c).decide(s2, bar)
    for g, w in zip(got, want):
        for f in fields(g):
            a, b = getattr(g, f.name), getattr(w, f.name)
            if isinstance(a, np.ndarray): same(a.astype(str) if a.dtype == object else a, b.astype(str) if b.dtype == object else b, f.name)
            else: assert a == b, f.name
    for k in s1.arrays: same(s1.arrays[k], s2.arrays[k], k)


@SETTINGS
@given(configs(), books())
def test_protective_level(c, book):
    s, bar = book
    got, want = risk.protective_level(c, s.qty, s.stop, s.high, s.low, bar.atr), ref.protective_level(c, s.qty, s.stop, s.high, s.low, bar.atr)
    same(got[0], want[0], 'level'); same(got[1], want[1], 'trails')


def test_reference_can_disagree():
    "The comparison sees a changed rule: a reference with another min_shares gives other shares."
    r = dict(price=np.array([4.0]), side=np.int8(1), qty=np.array([30.0]))
    got = risk.screen_entries(RiskConfig(min_shares=1), 1e5, 1, r['price'], True, False, False, True, False, 0, np.array([1e6]), False, qty=r['qty'])
    want = ref.screen_entries(RiskConfig(min_shares=50), 1e5, 1, r['price'], True, False, False, True, False, 0, np.array([1e6]), False, qty=r['qty'])
    assert not np.array_equal(got.shares, want.shares)

