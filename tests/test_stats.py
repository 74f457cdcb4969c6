"""smallcap.backtest.stats against independent references on real data, plus property tests.

References: empyrical (empyrical-reloaded) on the daily GOOG prices that backtesting.py ships (2004-2013), and
backtesting.py's own statistics of its SMA-crossover example run on the same data. Neither is imported by the
library; both are dev dependencies used only here.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smallcap.backtest.stats import drawdown_series, drawdowns, monthly_returns, per_period, per_symbol, stats

empyrical = pytest.importorskip('empyrical')
backtesting = pytest.importorskip('backtesting')
from backtesting.test import GOOG  # noqa: E402

P = 252
TOL = 1e-9
RATIOS = ['total_return', 'cagr', 'volatility', 'sharpe', 'sortino', 'calmar', 'max_drawdown']
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a, b, tol=TOL):
    "Equal to `tol` (absolute, and relative for large values); NaN equals NaN."
    a, b = float(a), float(b)
    if np.isnan(a) or np.isnan(b): return np.isnan(a) and np.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def to_ny_utc(idx: pd.DatetimeIndex) -> pd.DatetimeIndex:
    "Naive dates -> the 16:00 New York close of that date, in UTC (what an engine on daily bars would stamp)."
    return (idx + pd.Timedelta(hours=16)).tz_localize('America/New_York').tz_convert('UTC')


# ---------------------------------------------------------------------------------------------------------------
# 1. empyrical on GOOG daily returns and on a strategy's equity

@pytest.fixture(scope='module')
def goog_close() -> pd.Series:
    return GOOG['Close'].astype(float)


def empyrical_figures(r: pd.Series, rf_daily: float = 0.0) -> dict[str, float]:
    ep = empyrical
    return {'cagr': ep.annual_return(r), 'volatility': ep.annual_volatility(r), 'sharpe': ep.sharpe_ratio(r, risk_free=rf_daily),
            'sortino': ep.sortino_ratio(r, required_return=rf_daily), 'calmar': ep.calmar_ratio(r), 'max_drawdown': ep.max_drawdown(r),
            'total_return': ep.cum_returns_final(r)}


@pytest.mark.parametrize('rf', [0.0, 0.03])
def test_goog_buy_and_hold_matches_empyrical(goog_close, rf):
    s = stats(goog_close, risk_free=rf)
    rf_daily = (1 + rf) ** (1 / P) - 1          # our risk_free is annual; empyrical's is per period
    ref = empyrical_figures(goog_close.pct_change().dropna(), rf_daily)
    for k, v in ref.items():
        if rf and k in ('cagr', 'volatility', 'calmar', 'max_drawdown', 'total_return'): continue   # rf-free figures: checked at rf=0
        assert close(s[k], v), (k, s[k], v)
    assert s.days == len(goog_close) - 1


@pytest.fixture(scope='module')
def bt_run():
    "backtesting.py's SMA(10, 20) crossover example on GOOG, long and short, 0.2% commission, trades closed at the end."
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        n1, n2 = 10, 20

        def init(self):
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self):
            if crossover(self.sma1, self.sma2): self.position.close(); self.buy()
            elif crossover(self.sma2, self.sma1): self.position.close(); self.sell()

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return Backtest(GOOG, SmaCross, cash=10_000, commission=.002, finalize_trades=True).run()


def strategy_frames(s) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    "backtesting.py's equity curve and trades in smallcap's schemas, plus the positions held at each bar's close."
    eq = s._equity_curve['Equity'].astype(float)
    T = s._trades
    size = T['Size'].to_numpy()
    qty = np.abs(size).astype(np.int64)
    trades = pd.DataFrame({'symbol': 'GOOG', 'side': np.where(size > 0, 'long', 'short'), 'entry_time': T['EntryTime'], 'exit_time': T['ExitTime'],
                           'qty': qty, 'entry_price': T['EntryPrice'], 'exit_price': T['ExitPrice'], 'pnl': T['PnL'], 'fees': T['Commission'],
                           'return': T['PnL'] / (T['EntryPrice'] * qty), 'bars_held': T['ExitBar'] - T['EntryBar'],
                           'exit_intent': np.where(size > 0, 'exit_long', 'exit_short')})
    # shares at each bar's close: a trade entered at bar i's open and exited at bar j's open is held at closes i .. j-1
    step = np.zeros(len(eq) + 1)
    np.add.at(step, T['EntryBar'].to_numpy(), size); np.add.at(step, T['ExitBar'].to_numpy(), -size)
    positions = pd.DataFrame({'GOOG': np.cumsum(step[:-1])}, index=eq.index)
    return eq, trades, positions


def test_strategy_equity_matches_empyrical(bt_run, goog_close):
    eq, _, _ = strategy_frames(bt_run)
    s = stats(eq, benchmark=goog_close)
    r = eq.pct_change().dropna()
    for k, v in empyrical_figures(r).items():
        assert close(s[k], v), (k, s[k], v)
    alpha, beta = empyrical.alpha_beta(r, goog_close.pct_change().dropna())
    assert close(s.alpha, alpha) and close(s.beta, beta), (s.alpha, alpha, s.beta, beta)
    # with a risk-free rate too
    s2 = stats(eq, benchmark=goog_close, risk_free=.02)
    rfd = 1.02 ** (1 / P) - 1
    a2, b2 = empyrical.alpha_beta(r, goog_close.pct_change().dropna(), risk_free=rfd)
    assert close(s2.alpha, a2) and close(s2.beta, b2)
    assert close(s2.sharpe, empyrical.sharpe_ratio(r, risk_free=rfd)) and close(s2.sortino, empyrical.sortino_ratio(r, required_return=rfd))


def test_utc_index_gives_the_same_figures(bt_run):
    "The same run stamped at the 16:00 New York close in UTC: every figure but start/end is identical."
    eq, trades, positions = strategy_frames(bt_run)
    a = stats(eq, trades, positions=positions, benchmark=GOOG['Close'])
    eq_u = eq.set_axis(to_ny_utc(eq.index))
    tr_u = trades.assign(entry_time=to_ny_utc(pd.DatetimeIndex(trades.entry_time)), exit_time=to_ny_utc(pd.DatetimeIndex(trades.exit_time)))
    b = stats(eq_u, tr_u, positions=positions.set_axis(eq_u.index), benchmark=GOOG['Close'].set_axis(to_ny_utc(GOOG.index)))
    for k in a.index.drop(['start', 'end']):
        assert a[k] == b[k] or close(a[k], b[k], 1e-15), k
    assert b.start == eq_u.index[0]


# ---------------------------------------------------------------------------------------------------------------
# 2. backtesting.py's own statistics of the same run

def test_matches_backtesting_py_where_definitions_agree(bt_run):
    s = bt_run
    eq, trades, positions = strategy_frames(s)
    ours = stats(eq, trades, benchmark=None)
    assert (ours.start, ours.end) == (s['Start'], s['End'])
    assert close(ours.final_equity, s['Equity Final [$]'])
    assert close(100 * ours.total_return, s['Return [%]'])
    assert close(100 * ours.max_drawdown, s['Max. Drawdown [%]'])
    assert ours.max_drawdown_duration == s['Max. Drawdown Duration']        # bt ceils to the day; ours is whole days on daily data
    assert ours.trades == s['# Trades'] == len(trades)
    assert close(100 * ours.win_rate, s['Win Rate [%]'])
    assert close(100 * ours.best_trade, s['Best Trade [%]']) and close(100 * ours.worst_trade, s['Worst Trade [%]'])
    assert close(100 * ours.expectancy_pct, s['Expectancy [%]'])
    assert close(ours.fees, s['Commissions [$]'])
    # bt's 'Return (Ann.)' is the geometric daily mean compounded over 252 days: our cagr (and empyrical's annual_return)
    assert close(100 * ours.cagr, s['Return (Ann.) [%]'])
    assert close(ours.calmar, s['Calmar Ratio'])
    # exposure: bt marks every bar from a trade's entry bar to its exit bar, inclusive; so do we, from the trades
    # and (held at the close of this bar or the previous one) from the positions frame
    assert close(100 * ours.exposure, s['Exposure Time [%]'])
    assert close(100 * stats(eq, positions=positions).exposure, s['Exposure Time [%]'])
    assert close(100 * stats(eq, trades, positions=positions).exposure, s['Exposure Time [%]'])


def test_backtesting_py_figures_defined_differently_obey_the_derived_relations(bt_run):
    s = bt_run
    eq, trades, _ = strategy_frames(s)
    o = stats(eq, trades)
    # Profit Factor: bt divides the sum of winning trade *returns* by the losing ones; ours uses dollars. With
    # every trade's notional 1 (pnl = return) the two definitions coincide.
    assert close(stats(eq, trades.assign(pnl=trades['return'])).profit_factor, s['Profit Factor'])
    assert not close(o.profit_factor, s['Profit Factor'], 1e-3)            # and they do differ in dollars here
    # Volatility (Ann.): bt annualises the daily variance of compounded returns,
    #   sqrt((var + (1+g)^2)^P - (1+g)^(2P)), with g the geometric mean daily return; ours is sd * sqrt(P).
    #   Both from our figures: var = (volatility / sqrt P)^2, 1 + g = (1 + cagr)^(1/P).
    var, g1 = (o.volatility / np.sqrt(P)) ** 2, (1 + o.cagr) ** (1 / P)
    vol_bt = np.sqrt((var + g1 ** 2) ** P - g1 ** (2 * P))
    assert close(100 * vol_bt, s['Volatility (Ann.) [%]'])
    # Sharpe: bt = annual return / its volatility above (no arithmetic mean at all)
    assert close(o.cagr / vol_bt, s['Sharpe Ratio'])
    # Sortino: bt puts the compounded annual return over our downside deviation; ours the arithmetic mean x P.
    #   mean x P = sharpe x volatility, so bt's Sortino = ours x cagr / (sharpe x volatility)
    assert close(o.sortino * o.cagr / (o.sharpe * o.volatility), s['Sortino Ratio'])
    # CAGR [%]: bt measures years in calendar time, (end - start) / 365.25 days; ours in trading days, n / 252
    years = (o.end - o.start) / pd.Timedelta(days=365.25)
    assert close(100 * ((1 + o.total_return) ** (1 / years) - 1), s['CAGR [%]'])
    # Buy & Hold Return: the benchmark's return from the first bar the strategy could trade (after its warmup)
    from backtesting._util import _indicator_warmup_nbars
    w = _indicator_warmup_nbars(s._strategy)
    assert close(100 * stats(eq, benchmark=GOOG['Close'].iloc[w:]).benchmark_return, s['Buy & Hold Return [%]'])
    # Drawdowns: bt's DrawdownPct column is -drawdown_series; its average drawdown and duration are the means over
    # our table of drawdown periods (bt rounds durations up to whole days)
    assert np.allclose(-drawdown_series(eq).to_numpy(), s._equity_curve['DrawdownPct'].to_numpy(), rtol=0, atol=1e-15)
    tbl = drawdowns(eq)
    assert close(100 * tbl.depth.mean(), s['Avg. Drawdown [%]'])
    assert tbl.duration.mean().ceil('D') == s['Avg. Drawdown Duration']
    assert list(tbl.duration) == list(s._equity_curve['DrawdownDuration'].dropna())
    # Not compared: bt's Alpha/Beta (log returns over every bar, alpha on total rather than mean returns), SQN,
    # Kelly, Avg. Trade (a geometric mean of trade returns), trade durations: we define none of them that way.


def test_turnover_from_fills_equals_turnover_from_trades(bt_run):
    eq, trades, _ = strategy_frames(bt_run)
    legs = pd.DataFrame({'ts': np.r_[trades.entry_time, trades.exit_time], 'symbol': 'GOOG',
                         'side': np.r_[np.where(trades.side == 'long', 'buy', 'sell'), np.where(trades.side == 'long', 'sell', 'buy')],
                         'qty': np.r_[trades.qty, trades.qty], 'price': np.r_[trades.entry_price, trades.exit_price], 'fees': np.r_[trades.fees, 0 * trades.fees]})
    a, b = stats(eq, trades), stats(eq, trades, fills=legs)
    assert close(a.turnover, b.turnover, 1e-12) and close(a.fees, b.fees, 1e-12)
    notional = (trades.qty * (trades.entry_price + trades.exit_price)).sum()
    assert close(a.turnover, notional / eq.mean() / ((len(eq) - 1) / P), 1e-12)


def test_breakdowns_add_up(bt_run):
    eq, trades, _ = strategy_frames(bt_run)
    o = stats(eq, trades)
    ps = per_symbol(trades.assign(symbol=np.where(trades.side == 'long', 'L', 'S')))
    assert ps.trades.sum() == o.trades and close(ps.pnl.sum(), o.pnl) and list(ps.long) == [ps.trades['L'], 0]
    for freq in ('ME', 'QE', 'YE'):
        pp = per_period(eq, trades, freq)
        assert close(np.prod(1 + pp['return'].fillna(0)) - 1, o.total_return, 1e-12)
        assert pp.trades.sum() == o.trades and close(pp.pnl.sum(), o.pnl)
        assert pp.days.sum() == o.days
    mr = monthly_returns(eq)
    months = mr.drop(columns='Year')
    assert np.allclose((1 + months.fillna(0)).prod(axis=1) - 1, mr['Year'], rtol=0, atol=1e-12)
    # empyrical's monthly aggregation agrees
    ref = empyrical.aggregate_returns(eq.pct_change().dropna(), 'monthly')
    assert np.allclose(months.stack().dropna().to_numpy(), ref.to_numpy(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# 3. properties

grid_returns = st.lists(st.integers(-90, 90).map(lambda k: k / 1000), min_size=0, max_size=80)


def curve(rets, start=100.0, freq='D') -> pd.Series:
    "Equity grown from `start` by daily returns `rets` (first value: `start`)."
    return pd.Series(start * np.r_[1, np.cumprod(1 + np.asarray(rets, float))], index=pd.date_range('2021-03-01', periods=len(rets) + 1, freq=freq))


@FAST
@given(grid_returns)
def test_max_drawdown_is_a_fraction_and_figures_never_warn(rets):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        s = stats(curve(rets), pd.DataFrame(), positions=pd.DataFrame(), benchmark=curve(rets[::-1]))
        t = drawdowns(curve(rets))
    assert -1 <= s.max_drawdown <= 0 and s.max_drawdown == s.max_drawdown_bars
    assert (t.depth < 0).all() and (t.depth >= -1).all() and (t.duration > pd.Timedelta(0)).all()
    assert s.max_drawdown_duration == (t.duration.max() if len(t) else pd.Timedelta(0))
    assert s.trades == 0 and s.exposure == 0 and np.isnan(s.win_rate)


@FAST
@given(grid_returns, st.sampled_from([1e-3, 0.37, 3.0, 1e6]))
def test_scaling_equity_leaves_every_ratio_unchanged(rets, c):
    a, b = stats(curve(rets)), stats(curve(rets) * c)
    for k in RATIOS + ['max_drawdown_bars']:
        assert close(a[k], b[k], 1e-9), (k, a[k], b[k])
    assert a.max_drawdown_duration == b.max_drawdown_duration and a.days == b.days


@FAST
@given(st.lists(st.integers(0, 50).map(lambda k: k / 1000), min_size=1, max_size=60))
def test_a_rising_equity_has_no_drawdown(rets):
    s = stats(curve(rets))
    assert s.max_drawdown == 0 and s.max_drawdown_duration == pd.Timedelta(0) and len(drawdowns(curve(rets))) == 0
    assert (drawdown_series(curve(rets)) == 0).all()
    assert np.isnan(s.calmar) and (np.isnan(s.sortino) or s.sortino > 0)


@FAST
@given(st.integers(1, 30), st.floats(0.001, 0.2), st.floats(0.001, 0.2))
def test_alternating_returns_match_the_closed_form(k, a, b):
    "Returns +a, -b repeated k times, growing ((1+a)(1-b) > 1): every figure has a closed form."
    if (1 + a) * (1 - b) < 1.0001: b = 1 - 1.0001 / (1 + a)
    rets = np.tile([a, -b], k)
    n, m = 2 * k, (a - b) / 2
    s = stats(curve(rets))
    g = ((1 + a) * (1 - b)) ** k
    sd = (a + b) / 2 * np.sqrt(n / (n - 1))
    down = b / np.sqrt(2)
    cagr = g ** (P / n) - 1
    expect = {'total_return': g - 1, 'cagr': cagr, 'volatility': sd * np.sqrt(P), 'sharpe': m / sd * np.sqrt(P),
              'sortino': m * P / (down * np.sqrt(P)), 'max_drawdown': -b, 'calmar': cagr / b}
    for key, v in expect.items():
        assert close(s[key], v, 1e-9), (key, s[key], v)
    assert s.max_drawdown_duration == pd.Timedelta(days=2 if k > 1 else 1)


@FAST
@given(st.lists(st.tuples(st.integers(1, 6), st.lists(st.integers(-30, 30), min_size=6, max_size=6)), min_size=1, max_size=6),
       st.integers(-30, 30))
def test_intraday_curve_is_judged_on_new_york_daily_closes(days, first):
    """Minute bars over several New York sessions (incl. after-hours bars past midnight UTC): the daily figures
    depend only on the first bar and each date's last bar, and equal empyrical's on those daily returns."""
    dates = pd.bdate_range('2024-03-04', periods=len(days))              # spans the March DST change
    stamps, vals = [], []
    for d, (nbars, moves) in zip(dates, days):
        times = pd.DatetimeIndex([d + pd.Timedelta(hours=9, minutes=31 + 97 * i) for i in range(nbars - 1)] + [d + pd.Timedelta(hours=19, minutes=59)])
        stamps.append(times.tz_localize('America/New_York').tz_convert('UTC'))
        vals.extend(100 + np.asarray(moves[:nbars], float) + first / 10)
    idx = stamps[0].append(stamps[1:]) if len(stamps) > 1 else stamps[0]
    eq = pd.Series(vals, index=idx)
    s = stats(eq)
    lasts = pd.Series(eq.to_numpy(), index=idx.tz_convert('America/New_York').date).groupby(level=0).last()
    daily = np.r_[eq.iloc[0], lasts.to_numpy()] if days[0][0] > 1 else lasts.to_numpy()
    r = pd.Series(daily[1:] / daily[:-1] - 1)
    assert s.days == len(r)
    assert close(s.total_return, eq.iloc[-1] / eq.iloc[0] - 1, 1e-12)
    if len(r):
        for k, v in empyrical_figures(r).items():
            if not np.isfinite(v) and k in ('sharpe', 'sortino', 'calmar'):    # documented: NaN where empyrical says +-inf
                assert np.isnan(s[k]); continue
            if k in ('volatility', 'sharpe') and len(r) >= 2 and r.std() < 1e-12: continue   # rounding noise counts as zero
            assert close(s[k], v, 1e-9), (k, s[k], v)
    # moving any bar that is neither the first nor a date's last leaves the daily figures unchanged
    inner = np.ones(len(eq), bool); inner[0] = False
    nyd = idx.tz_convert('America/New_York').normalize()
    inner &= np.r_[nyd[1:] == nyd[:-1], False]
    s2 = stats(eq.where(~inner, eq * 0.5))
    for k in RATIOS + ['max_drawdown_duration']:
        assert s[k] == s2[k] or close(s[k], s2[k], 1e-15), k
    assert s2.max_drawdown_bars <= s2.max_drawdown


@FAST
@given(st.lists(st.integers(50, 150), min_size=1, max_size=40))
def test_drawdown_table_matches_a_brute_force_scan(values):
    eq = pd.Series(np.asarray(values, float), index=pd.date_range('2022-01-03', periods=len(values)))
    periods, peak_i, i = [], 0, 1
    while i < len(values):                                          # the obvious loop, as a reference
        if values[i] >= values[peak_i]: peak_i = i; i += 1; continue
        j = i
        while j < len(values) and values[j] < values[peak_i]: j += 1
        seg = values[i:j]
        trough = i + int(np.argmin(seg))
        periods.append((peak_i, trough, j if j < len(values) else None, values[trough] / values[peak_i] - 1))
        if j < len(values): peak_i = j
        i = j + 1 if j < len(values) else j
    t = drawdowns(eq)
    assert len(t) == len(periods)
    for row, (p, tr, rec, depth) in zip(t.itertuples(), periods):
        assert row.peak == eq.index[p] and row.trough == eq.index[tr] and close(row.depth, depth, 1e-15)
        assert (pd.isna(row.recovery) and rec is None) or row.recovery == eq.index[rec]
        assert row.duration == (eq.index[rec] if rec is not None else eq.index[-1]) - eq.index[p]


def test_bad_input_is_named():
    from smallcap.core import ValidationError
    idx = pd.date_range('2024-01-01', periods=4)
    with pytest.raises(ValidationError, match='row 2'):
        stats(pd.Series([1., 2., np.inf, 3.], index=idx))
    with pytest.raises(ValidationError, match='empty'):
        stats(pd.Series([], index=idx[:0], dtype=float))
    with pytest.raises(ValidationError, match='missing column'):
        stats(pd.Series(1., index=idx), pd.DataFrame({'pnl': [1.]}))
    with pytest.raises(ValidationError, match='time zone'):
        stats(pd.Series(1., index=idx.tz_localize('UTC')), pd.DataFrame({'pnl': [1.], 'return': [.1], 'entry_time': idx[:1], 'exit_time': idx[1:2]}))
    with pytest.raises(TypeError, match='DatetimeIndex'):
        stats(pd.Series([1., 2.]))
