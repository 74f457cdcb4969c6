"""The NumPy formulation of the risk engine's entry pipeline, as it was before the rules moved into the compiled kernels of
`smallcap.risk_nb` (smallcap 3e7b68c): an independent reference that `tests/test_risk_kernels.py` compares the kernels with.
Nothing here is used by the library."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from smallcap.risk import (_B, _NAT, _REASONS, BarContext, Decisions, Intent, RiskConfig, RiskState, Screened, Sizing,
                           _eod, kelly_fraction)

_REDUCED_TO_REJECTED = [(getattr(_B, f'REDUCED_{k}'), getattr(_B, f'REJECTED_{k}'))
                        for k in ('MAX_POSITION', 'MAX_SHARES', 'ADV_CAP', 'GROSS_EXPOSURE', 'MARGIN', 'LOSS_BUDGET')]
_REJECT_BITS = np.int64(sum(int(getattr(_B, r.name)) for r in _REASONS if r.name.startswith('REJECTED_')))
_STOP_BITS = _B.REJECTED_INVALID_STOP | _B.REJECTED_NO_STOP

def _tick(p: np.ndarray) -> np.ndarray:
    "Round prices to a valid tick: $0.01 at or above $1, $0.0001 below."
    return np.where(p >= 1.0, np.round(p, 2), np.round(p, 4))

def _arr(x: Any, n: int, fill: float = np.nan) -> np.ndarray:
    if x is None: return np.full(n, fill)
    a = np.asarray(x, float)
    return a if a.shape == (n,) else np.broadcast_to(a, (n,))          # already one value per row: no broadcast view

def _lots(q: np.ndarray, lot: int) -> np.ndarray:
    q = np.floor(np.where(np.isfinite(q), np.maximum(q, 0), 0) + 1e-9)
    return (q // lot * lot).astype(np.int64)

def size_shares(config: RiskConfig,  # the risk configuration
                equity: float,  # account equity now
                price: np.ndarray,  # close of each entry's symbol
                side: np.ndarray | int,  # +1 long, -1 short
                atr: np.ndarray | None = None,  # ATR of each symbol (NaN: unknown)
                stop: np.ndarray | None = None,  # the signal's stop price (NaN: none)
                size: np.ndarray | None = None,  # the signal's size, a fraction of equity (NaN: none)
                limit: np.ndarray | None = None,  # the entry's limit price (NaN: market)
                qty: np.ndarray | None = None,  # explicit shares (a manual order; NaN: size it)
                avg_volume: np.ndarray | None = None,  # average daily volume (shares; NaN: unknown)
                held: np.ndarray | None = None,  # shares already held or pending on the same side
               ) -> Sizing:
    "Size many entries at once: the sizing method, then the per-symbol caps (dollars, shares, % of ADV)."
    c, close = config, np.asarray(price, float)
    n = len(close); side = np.asarray(side, np.int8)
    if side.shape != (n,): side = np.broadcast_to(side, (n,))
    atr, stop, size, limit, qty, adv = (_arr(x, n) for x in (atr, stop, size, limit, qty, avg_volume))
    held = np.zeros(n, np.int64) if held is None else np.asarray(held, np.int64)
    p = np.where(np.isfinite(limit), np.fmax(close, limit), close)
    # stop distance: the signal's stop, else ATR multiple, else percentage
    given = np.isfinite(stop)
    d_sig = (p - stop) * side
    bad = given & ~(d_sig > 0)
    d_cfg = np.full(n, np.nan) if c.stop_pct is None else c.stop_pct * p
    if c.stop_atr is not None: d_cfg = np.where(np.isfinite(atr) & (atr > 0), c.stop_atr * atr, d_cfg)
    d = np.where(given, np.where(bad, np.nan, d_sig), d_cfg)
    d = np.where(d < p, d, np.nan)                                   # a long stop must stay above zero
    stop_px = _tick(p - side * d)
    t_d = c.target_pct * p if c.target_pct is not None else (c.target_r * d if c.target_r is not None else np.full(n, np.nan))
    target = _tick(p + side * t_d); target = np.where(target > 0, target, np.nan)
    # the method's shares
    if c.sizing == 'fixed_risk': want = c.risk_per_trade * equity / d
    elif c.sizing == 'fixed_fraction': want = c.fraction * equity / p
    elif c.sizing == 'kelly': want = kelly_fraction(c.kelly_win_rate, c.kelly_payoff, c.kelly_multiplier, c.kelly_cap) * equity / p
    else: want = c.notional / p
    if c.use_signal_size: want = np.where(np.isfinite(size) & (size > 0), size * equity / p, want)
    want = np.where(np.isfinite(qty), qty, want)
    bits = np.where(bad, _B.REJECTED_INVALID_STOP, 0) | np.where(~np.isfinite(want) & ~bad & (c.sizing == 'fixed_risk'), _B.REJECTED_NO_STOP, 0)
    requested = _lots(np.where(p > 0, want, 0), c.lot_size)
    # per-symbol caps on the resulting position
    cap_val = min(c.max_position_pct * equity, c.max_position_value if c.max_position_value is not None else np.inf)
    caps = [(_B.REDUCED_MAX_POSITION, np.floor(np.maximum(cap_val, 0) / p + 1e-9))]
    if c.max_shares is not None: caps.append((_B.REDUCED_MAX_SHARES, np.full(n, float(c.max_shares))))
    if c.max_adv_pct is not None: caps.append((_B.REDUCED_ADV_CAP, np.floor(np.where(np.isfinite(adv), c.max_adv_pct * adv, 0.0) + 1e-9)))
    q = requested.astype(float)
    for bit, cap in caps:
        room = np.maximum(np.where(np.isfinite(cap), cap, 0.0) - held, 0.0)
        bits = bits | np.where(room < q, bit, 0); q = np.minimum(q, room)
    return Sizing(requested, _lots(q, c.lot_size), bits.astype(np.int64), p, np.where(np.isfinite(d), stop_px, np.nan), target, d)

def entry_gates(config, side, close, in_session, eod, halted, shortable, ssr, tick, avg_volume, conflict):
    "Reason bits of every entry gate that needs no account state, for arrays of any shape (one bar's symbols or a whole panel)."
    c, B, px, adv = config, _B, np.asarray(close, float), np.asarray(avg_volume, float)
    short = np.asarray(side) < 0
    with np.errstate(invalid='ignore'):
        rules = [(~np.asarray(in_session, bool), B.REJECTED_SESSION), (eod, B.REJECTED_EOD), (conflict, B.REJECTED_CONFLICT),
                 (c.block_halted & np.asarray(halted, bool), B.REJECTED_HALTED),
                 (short & (not c.allow_short), B.REJECTED_SHORT_DISABLED), (short & ~np.asarray(shortable, bool), B.REJECTED_NOT_SHORTABLE),
                 (short & np.asarray(ssr, bool) & ((c.ssr_rule == 'block') | ((c.ssr_rule == 'uptick') & (np.asarray(tick) <= 0))), B.REJECTED_SSR),
                 (~(px > 0), B.REJECTED_NO_DATA), ((px < c.min_price) | (px > c.max_price), B.REJECTED_PRICE_BAND),
                 ((px > 0) & ((c.min_avg_volume > 0) | (c.min_avg_dollar_volume > 0)) & (~(adv >= c.min_avg_volume) | ~(adv * px >= c.min_avg_dollar_volume)), B.REJECTED_LIQUIDITY)]
        g = np.zeros(np.broadcast_shapes(*(np.shape(x) for x, _ in rules)), np.int64)
        for cond, bit in rules: g |= np.where(cond, bit, 0)
    return g

def screen_entries(config, equity, side, close, in_session, eod, halted, shortable, ssr, tick, avg_volume, conflict, atr=None, stop=None, size=None, limit=None, qty=None, held=None, gates=0, sizing=None):
    "The state-free half of the entry pipeline (gates, `size_shares`, `min_shares`) for arrays of any shape: one bar's candidates or a whole panel's cells."
    c, px = config, np.asarray(close, float)
    g = entry_gates(c, side, px, in_session, eod, halted, shortable, ssr, tick, avg_volume, conflict) | np.asarray(gates, np.int64)
    shape = np.broadcast_shapes(g.shape, px.shape)
    if sizing is None:
        def flat(x: Any, dtype: Any = float) -> np.ndarray | None:
            if x is None: return None
            a = np.asarray(x, dtype)
            return a if a.shape == shape and a.ndim == 1 else np.broadcast_to(a, shape).ravel()   # one bar's rows: no view
        sz = size_shares(c, equity, flat(px), flat(side, np.int8), atr=flat(atr), stop=flat(stop), size=flat(size), limit=flat(limit),
                         qty=flat(qty), avg_volume=flat(avg_volume), held=flat(held, np.int64))
        sizing = Sizing(*(np.reshape(getattr(sz, f.name), shape) for f in fields(Sizing)))
    g = g | np.where(px > 0, sizing.reasons & _STOP_BITS, 0)
    bits = g | np.where(g == 0, sizing.reasons & ~_STOP_BITS, 0)                 # caps are reported only for rows no gate rejected
    q = np.where(g == 0, sizing.shares, 0).astype(np.int64)
    return Screened(sizing, np.where(q >= c.min_shares, q, 0), bits)

def settle_entries(config: RiskConfig,  # the risk configuration
                   shares: np.ndarray,  # shares left after every limit (int64)
                   reasons: np.ndarray,  # reason bits gathered so far
                   requested: np.ndarray,  # shares the sizing asked for
                  ) -> tuple[np.ndarray, np.ndarray]:
    "The pipeline's last step, (shares, reasons): `min_shares` again, reductions that took every share become rejections, else `APPROVED`."
    q = np.where(shares >= config.min_shares, shares, 0).astype(np.int64)
    zero, bits = q == 0, np.asarray(reasons, np.int64)
    for red, rej in _REDUCED_TO_REJECTED: bits = np.where(zero & ((bits & red) != 0), (bits & ~red) | rej, bits)
    bits = bits | np.where(zero & ((bits & _REJECT_BITS) == 0), _B.REJECTED_ZERO_SIZE, 0)
    return q, bits | np.where(~zero & (q == requested), _B.APPROVED, 0)

def _allot(q: np.ndarray, unit: np.ndarray, budget: float, lot: int) -> np.ndarray:
    "Share a budget among rows in order: each gets what is left of it, in whole lots."
    live = (q > 0) & (unit > 0)                                  # rejected rows (q = 0, perhaps a NaN price) take nothing
    want = np.where(live, q * np.where(live, unit, 0.0), 0.0)
    c = np.cumsum(want)
    b = max(float(budget), 0.0)
    got = np.minimum(c, b) - np.minimum(c - want, b)
    part = np.floor(np.divide(got, unit, out=np.zeros_like(got), where=live) + 1e-9)
    return np.where(c <= b, q, np.minimum(part // lot * lot, q)).astype(np.int64)

def _margin_rate(c: RiskConfig, price: np.ndarray, side: np.ndarray) -> np.ndarray:
    "Margin needed per dollar of position."
    r = np.where((side > 0) & (price < c.non_marginable_below), 1.0, 1.0 / c.leverage)
    return np.where((side < 0) & (price < 5.0), np.maximum(1.0, 2.5 / np.where(price > 0, price, np.inf)), r)

def _entries(c: RiskConfig, s: RiskState, bar: BarContext, q_post: np.ndarray, mark: np.ndarray, equity: float,
             day_pnl: float, limit_loss: float, exiting: np.ndarray, eod: bool = False) -> Decisions:
    "Gate, size and allot this bar's entries (state changes: approved entries become pending)."
    cand = bar.entries_long | bar.entries_short
    idx = np.flatnonzero(cand)
    if bar.priority is not None and len(idx): idx = idx[np.argsort(-np.nan_to_num(bar.priority[idx], nan=-np.inf), kind='stable')]
    n = len(idx)
    if n == 0: return Decisions.empty(bar.time)
    side = np.where(bar.entries_long[idx], 1, -1).astype(np.int8)
    # positions (exiting ones included: an exit frees nothing until it fills) and pending entries count side by side, never netted:
    # a long that is exiting and a pending short entry in the same symbol are two exposures and one slot
    px, pend = bar.close[idx], s.pending
    busy = (q_post != 0) | (pend != 0)
    held_same = (np.where(np.sign(q_post[idx]) == side, np.abs(q_post[idx]), 0) + np.where(np.sign(pend[idx]) == side, np.abs(pend[idx]), 0))
    B = _B
    short = side < 0
    rules = [(s.kill_switch, B.REJECTED_KILL_SWITCH), (s.day_halted, B.REJECTED_DAILY_LOSS),
             ((bar.end.value < np.where(s.last_exit[idx] == _NAT, _NAT, s.last_exit[idx] + int(c.cooldown_minutes * 60e9))) | (exiting[idx] & (c.cooldown_minutes > 0)), B.REJECTED_COOLDOWN),
             ((held_same > 0) & (not c.allow_pyramiding), B.REJECTED_IN_POSITION)]
    state_gates = np.zeros(n, np.int64)
    for cond, bit in rules: state_gates |= np.where(cond, bit, 0)
    sc = screen_entries(c, equity, side, px, bar.session in c.sessions, _eod(c, bar), bar.halted[idx], bar.shortable[idx], bar.ssr[idx], bar.tick[idx],
                        bar.avg_volume[idx], (bar.entries_long & bar.entries_short)[idx] | np.where(short, bar.exits_short[idx], bar.exits_long[idx]),
                        atr=bar.atr[idx], stop=bar.stop[idx], size=bar.size[idx], limit=bar.limit[idx], qty=bar.qty[idx], held=held_same, gates=state_gates)
    sz, q, bits = sc.sizing, sc.shares, sc.reasons
    # open positions: entries into a flat symbol use a slot, in order
    new = ~busy[idx] & (q > 0)
    slots = c.max_positions - int(np.count_nonzero(busy))
    over = new & (np.cumsum(new) > slots)
    bits |= np.where(over, B.REJECTED_MAX_POSITIONS, 0); q = np.where(over, 0, q)
    # gross exposure, margin, loss budget: greedy in order
    p = sz.price
    gross_cap = min(c.max_gross_pct * equity, c.max_gross_value if c.max_gross_value is not None else np.inf)
    used = lambda v: np.abs(v) * mark                                    # dollars of each symbol's positions, or of its pending entries
    passes = [(B.REDUCED_GROSS_EXPOSURE, p, gross_cap - float(np.sum(used(q_post)) + np.sum(used(pend)))),
              (B.REDUCED_MARGIN, p * _margin_rate(c, p, side), equity - float(used(q_post) @ _margin_rate(c, mark, np.sign(q_post)) + used(pend) @ _margin_rate(c, mark, np.sign(pend))))]
    if c.loss_budget:
        risk_of = lambda v, stop: np.abs(v) @ np.where(v != 0, np.where(np.isfinite(stop), np.maximum((mark - stop) * np.sign(v), 0.0), mark), 0.0)
        passes.append((B.REDUCED_LOSS_BUDGET, np.where(np.isfinite(sz.risk), sz.risk, p), limit_loss + day_pnl - float(risk_of(q_post, s.stop) + risk_of(pend, s.pending_stop))))
    for bit, unit, budget in passes:
        q2 = _allot(q, unit, budget, c.lot_size)
        bits |= np.where(q2 < q, bit, 0); q = q2
    q, bits = settle_entries(c, q, bits, sz.requested)
    zero = q == 0
    # orders outside regular hours are limits through the close
    ext = bar.session is not None and bar.session != 'regular'
    lim = bar.limit[idx]
    if ext: lim = np.where(np.isfinite(lim), lim, _tick(px * (1 + side * c.extended_limit_pct)))
    # approved entries become pending: they count until they fill or expire
    ok = idx[~zero]
    s.pending[ok] += (side.astype(np.int64) * q)[~zero]
    s.pending_stop[ok], s.pending_target[ok], s.pending_bar[ok] = sz.stop[~zero], sz.target[~zero], s.bars_seen
    intent = np.where(short, Intent.ENTER_SHORT, Intent.ENTER_LONG).astype(object)
    return Decisions(bar.time, bar.symbols[idx], idx.astype(np.int64), side, intent, sz.requested, q, bits, p, lim, sz.stop, sz.target,
                     np.zeros(n, bool), ext)


def protective_level(config, qty, stop, high, low, atr):
    "Each position's protective exit level (its stop, tightened by the trailing level) and whether the trailing level is the one that binds."
    c, q = config, np.asarray(qty)
    long_ = q > 0
    tl = np.full(len(q), np.nan)
    if c.trail_pct is not None or c.trail_atr is not None:
        best = np.where(long_, high, low)
        td = c.trail_pct * best if c.trail_pct is not None else np.full(len(q), np.nan)
        if c.trail_atr is not None: td = np.where(np.isfinite(atr) & (atr > 0), c.trail_atr * atr, td)
        tl = best - np.sign(q) * td
    level = np.where(long_, np.fmax(stop, tl), np.fmin(stop, tl))
    return level, np.isfinite(tl) & ~np.where(long_, stop >= tl, stop <= tl)


def _exits(c: RiskConfig, s: RiskState, bar: BarContext, repeat: bool, eod: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    "Exit reason bits, inside-the-bar fill prices and at-bar flags for every symbol (before the bar is marked)."
    q = s.qty; long_, short_ = q > 0, q < 0; open_ = long_ | short_
    o, h, l, atr = bar.open, bar.high, bar.low, bar.atr
    tgt = s.target
    prot, trails = protective_level(c, q, s.stop, s.high, s.low, atr)
    hit = open_ & np.where(long_, l <= prot, h >= prot)
    trail = hit & trails
    hit_t = open_ & ~hit & np.where(long_, h >= tgt, l <= tgt)
    price = np.where(hit, np.where(long_, np.fmin(o, prot), np.fmax(o, prot)), np.where(hit_t, np.where(long_, np.fmax(o, tgt), np.fmin(o, tgt)), np.nan))
    bits = np.where(hit & ~trail, _B.EXIT_STOP, 0) | np.where(trail, _B.EXIT_TRAILING, 0) | np.where(hit_t, _B.EXIT_TARGET, 0)
    end = bar.end.value
    if c.max_bars_held is not None: bits |= np.where(open_ & (s.bars_held + (0 if repeat else 1) >= c.max_bars_held), _B.EXIT_TIME, 0)
    if c.max_hold_minutes is not None: bits |= np.where(open_ & (end - s.entry_time >= c.max_hold_minutes * 60e9), _B.EXIT_TIME, 0)
    if _eod(c, bar): bits |= np.where(open_, _B.EXIT_EOD, 0)
    bits |= np.where((long_ & bar.exits_long) | (short_ & bar.exits_short), _B.EXIT_SIGNAL, 0)
    bits |= np.where((long_ & bar.entries_short) | (short_ & bar.entries_long), _B.EXIT_REVERSE, 0)
    if s.kill_switch and c.kill_switch_mode == 'flatten': bits |= np.where(open_, _B.EXIT_KILL_SWITCH, 0)
    return bits.astype(np.int64), price, hit | hit_t
