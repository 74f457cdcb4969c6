"""smallcap.backtest.overfit: published worked examples, independent implementations, simulations and properties.

Sources of the reference numbers:
- DSR: Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", JPM 40(5), numerical example (pp. 9-10 of
  SSRN 2460551): annualised SR 2.5, 250 observations a year, T = 1250, N = 100, V[SR_n] = 1/2 (annualised),
  skew -3, kurtosis 10 -> SR0 ~ 0.1132, DSR ~ 0.9004; with N = 46, DSR ~ 0.9505.
- MinBTL: Bailey, Borwein, Lopez de Prado & Zhu (2014), "Pseudo-Mathematics and Financial Charlatanism",
  Notices of the AMS 61(5): with 5 years of data no more than 45 independent trials for an SR of 1;
  E[max_N] ~ 1.57 for N = 10.
- PSR / MinTRL / DSR from a list of trials: mlfinlab's tests (mlfinlab/tests/test_backtest_statistics.py).
- DSR: vectorbt.returns.metrics.deflated_sharpe_ratio (installed here), an independent implementation.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_py
from smallcap.backtest.overfit import (DSRResult, PBOResult, dsr_from_trials, deflated_sharpe_ratio, expected_max_sharpe,
                                       kurtosis, min_backtest_length, min_track_record_length, pbo,
                                       probabilistic_sharpe_ratio, psr_from_returns, sharpe_ratio, skewness)
from smallcap.core import ConfigError, DataError

Q = 250                       # the DSR paper's observations per year
SR, V = 2.5 / math.sqrt(Q), 0.5 / Q


# ---------------------------------------------------------------- published examples and other implementations

def test_dsr_paper_numerical_example():
    assert expected_max_sharpe(100, V) == pytest.approx(0.1132, abs=1e-4)
    assert deflated_sharpe_ratio(SR, 100, V, 1250, -3, 10) == pytest.approx(0.9004, abs=1e-3)
    assert deflated_sharpe_ratio(SR, 100, V, 1250, -3, 10) == pytest.approx(0.9004, abs=1e-4)
    assert deflated_sharpe_ratio(SR, 46, V, 1250, -3, 10) == pytest.approx(0.9505, abs=1e-4)
    # the rejection in the paper: below 0.95 at N = 100, above at N = 46
    assert deflated_sharpe_ratio(SR, 100, V, 1250, -3, 10) < 0.95 < deflated_sharpe_ratio(SR, 46, V, 1250, -3, 10)


def test_dsr_matches_vectorbt():
    from vectorbt.returns.metrics import deflated_sharpe_ratio as vbt_dsr
    rng = np.random.default_rng(5)
    for _ in range(20):
        sr, n_tr, var, n = rng.uniform(0, 0.2), int(rng.integers(2, 1000)), rng.uniform(1e-5, 0.01), int(rng.integers(50, 5000))
        g3 = rng.uniform(-2, 1); g4 = 1 + g3**2 + rng.uniform(0, 10)
        ours = deflated_sharpe_ratio(sr, n_tr, var, n, g3, g4)
        theirs = float(vbt_dsr(est_sharpe=sr, var_sharpe=var, nb_trials=n_tr, backtest_horizon=n, skew=g3, kurtosis=g4))
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_psr_mintrl_dsr_match_mlfinlab_tests():
    assert probabilistic_sharpe_ratio(1.14, 1.0, 250, 0, 3) == pytest.approx(0.95727, abs=1e-4)
    assert min_track_record_length(1.14, 1.0, 0, 3, 0.05) == pytest.approx(228.73497, abs=1e-4)
    assert deflated_sharpe_ratio(1.14, 3, np.var([3.5, 1.01, 1.02]), 250) == pytest.approx(0.95836, abs=1e-4)


def test_psr_normal_closed_form_without_scipy():
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    for sr, b, n in [(0.12, 0.0, 500), (0.05, 0.02, 2000), (-0.03, 0.0, 100)]:
        assert probabilistic_sharpe_ratio(sr, b, n) == pytest.approx(phi((sr - b) * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2)), abs=1e-12)


def test_min_backtest_length_paper_examples():
    assert min_backtest_length(45, 1.0) == pytest.approx(5.0, abs=0.01)        # 5 years -> at most 45 trials
    assert expected_max_sharpe(45, 1 / 5) == pytest.approx(1.0, abs=1e-3)      # the same statement through E[max_N]
    assert expected_max_sharpe(10, 1.0) == pytest.approx(1.57, abs=0.005)
    assert min_backtest_length(7, 1.0) == pytest.approx(1.92, abs=0.01)         # "What to look for in a backtest": ~2 years
    for N in (2, 10, 45, 1000, 10**6): assert min_backtest_length(N, 1.0) < 2 * math.log(N)


def test_expected_max_sharpe_against_simulation():
    rng = np.random.default_rng(0)
    for N, tol in [(10, 0.03), (100, 0.015), (1000, 0.01)]:
        sim = rng.standard_normal((2000, N)).max(1).mean()
        assert expected_max_sharpe(N, 1.0) == pytest.approx(sim, rel=tol)


# ---------------------------------------------------------------- calibration by simulation

def test_psr_is_calibrated_under_the_null():
    "With true SR = SR*, PSR > 0.95 should happen ~5% of the time (4,000 series of 250 normal returns)."
    R = np.random.default_rng(0).normal(0.1, 1.0, (250, 4000))
    rate = float((psr_from_returns(R, 0.1) > 0.95).mean())
    assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)                # measured: 0.049


def test_psr_moment_correction_helps_with_negative_skew():
    "Negatively skewed, fat-tailed returns (skew ~ -2.9, kurtosis ~ 17.5): the corrected PSR over-rejects less."
    rng = np.random.default_rng(0)
    sig = 0.8
    L = rng.lognormal(0, sig, (250, 4000))
    R = -(L - math.exp(sig**2 / 2)) / math.sqrt((math.exp(sig**2) - 1) * math.exp(sig**2)) + 0.1
    corrected = float((psr_from_returns(R, 0.1) > 0.95).mean())
    naive = float((probabilistic_sharpe_ratio(sharpe_ratio(R), 0.1, 250) > 0.95).mean())
    assert corrected < naive and corrected < 0.09 and naive > 0.10             # measured: 0.069 vs 0.118


def test_dsr_rejects_the_best_of_pure_noise():
    "Best of 100 noise trials over 1,250 periods: PSR(0) > 0.95 almost always, DSR > 0.95 almost never."
    psr_hits = dsr_hits = 0
    for s in range(100):
        d = dsr_from_trials(np.random.default_rng(1000 + s).normal(0, 0.01, (1250, 100)))
        psr_hits += d.psr > 0.95; dsr_hits += d.dsr > 0.95
    assert psr_hits >= 95 and dsr_hits <= 5                                    # measured (300 seeds): 99.7% and 0%


# ---------------------------------------------------------------- PBO

def _loop_logits(X, S, f):
    "Reference CSCV: a loop over combinations, concatenated blocks, scipy ranks."
    from scipy.stats import rankdata
    T, N = X.shape
    X = X[T % S:]
    blocks = X.reshape(S, -1, N)
    out = []
    for c in itertools.combinations(range(S), S // 2):
        o = [i for i in range(S) if i not in c]
        R, Rb = f(np.concatenate(blocks[list(c)])), f(np.concatenate(blocks[o]))
        w = rankdata(Rb)[np.argmax(R)] / (N + 1)
        out.append(math.log(w / (1 - w)))
    return np.array(out)


@pytest.mark.parametrize('metric,f', [('sharpe', lambda J: J.mean(0) / J.std(0, ddof=1)), ('mean', lambda J: J.mean(0)),
                                      ('sortino', lambda J: J.mean(0) / np.sqrt((np.minimum(J, 0) ** 2).mean(0)))])
def test_pbo_matches_the_per_combination_reference(metric, f):
    X = np.random.default_rng(1).normal(0.0003, 0.01, (517, 30))
    r = pbo(X, n_splits=10, metric=metric)
    np.testing.assert_allclose(r.logits, _loop_logits(X, 10, f), atol=1e-9)
    assert r.n_combinations == 252 and r.n_obs == 510
    np.testing.assert_allclose(pbo(X, n_splits=10, metric=f).logits, r.logits, atol=1e-9)


def test_pbo_pure_noise_is_one_half():
    """100 trials x 1,000 iid N(0,1) periods, S = 16, 40 seeds. One matrix's PBO has sd ~0.15 (measured over 200
    seeds: mean 0.488, sd 0.154), so the mean of 40 has a standard error of ~0.024: we require it within 0.08."""
    ps = np.array([pbo(np.random.default_rng(s).normal(0, 1, (1000, 100))).pbo for s in range(40)])
    assert abs(ps.mean() - 0.5) < 0.08
    assert 0.08 < ps.std(ddof=1) < 0.25                                         # the spread the tolerance is built on


def test_pbo_with_a_real_edge_is_near_zero():
    """One trial with an edge of 0.2 per period among 99 noise trials: measured mean PBO 0.017 over 50 seeds (max 0.17);
    these 20 seeds: mean 0.025, max 0.20 (a seed where the edged trial lost some in-sample halves to noise)."""
    ps, losses = [], []
    for s in range(20):
        M = np.random.default_rng(500 + s).normal(0, 1, (1000, 100)); M[:, 7] += 0.2
        r = pbo(M); ps.append(r.pbo); losses.append(r.prob_loss)
    assert np.mean(ps) < 0.05 and max(ps) < 0.25
    assert np.mean(losses) < 0.05


def test_pbo_noise_with_an_odd_number_of_trials():
    "Uniform OOS ranks give E[PBO] = ceil(N/2)/N: 6/11 for N = 11 (300 small matrices, S = 8)."
    ps = [pbo(np.random.default_rng(s).normal(0, 1, (200, 11)), n_splits=8).pbo for s in range(300)]
    assert abs(np.mean(ps) - 6 / 11) < 0.04                                    # measured 0.557, se 0.013


def test_pbo_result_shape_and_outputs():
    M = pd.DataFrame(np.random.default_rng(2).normal(0, 0.01, (400, 20)), columns=[f"c{i}" for i in range(20)],
                     index=pd.date_range('2026-01-02', periods=400, freq='D', tz='UTC'))
    r = pbo(M, n_splits=8)
    assert isinstance(r, PBOResult) and r.n_combinations == math.comb(8, 4) == len(r.logits) == len(r.is_blocks)
    assert set(r.pairs['trial']) <= set(M.columns)
    assert r.pbo == float((r.logits <= 0).mean()) and r.prob_loss == float((r.pairs['oos_metric'] < 0).mean())
    assert ((r.pairs['w'] > 0) & (r.pairs['w'] < 1)).all() and (r.pairs['oos_rank'].between(1, 20)).all()
    # each combination's out-of-sample blocks are the complement of its in-sample ones, and every half appears once
    assert len({tuple(b) for b in r.is_blocks}) == r.n_combinations
    s = r.summary()
    assert s['pbo'] == r.pbo and s['n_splits'] == 8 and s['metric'] == 'sharpe'
    assert 'pbo=' in repr(r)


def test_pbo_constant_trials_do_not_break_it():
    "A trial that never traded (all zeros) has Sharpe 0 everywhere: it ranks, it is not NaN."
    M = np.random.default_rng(3).normal(0, 0.01, (320, 10)); M[:, 4] = 0.0
    r = pbo(M, n_splits=8)
    assert np.isfinite(r.logits).all()


# ---------------------------------------------------------------- properties

REAL = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-0.3, 0.3, **REAL), b=st.floats(-0.3, 0.3, **REAL), bench=st.floats(-0.3, 0.3, **REAL),
       n=st.integers(2, 10_000), g3=st.floats(-2, 2, **REAL), extra=st.floats(0, 10, **REAL))
def test_psr_is_monotone_in_sr(a, b, bench, n, g3, extra):
    """PSR rises with SR wherever 1 - g3 (SR + SR*)/2 + SR* SR (g4 - 1)/4 > 0, which holds on this realistic
    per-period domain (|SR|, |SR*| <= 0.3, |skew| <= 2, kurtosis in [1 + skew^2, 11 + skew^2])."""
    g4 = 1 + g3**2 + extra
    lo, hi = sorted((a, b))
    assert probabilistic_sharpe_ratio(lo, bench, n, g3, g4) <= probabilistic_sharpe_ratio(hi, bench, n, g3, g4) + 1e-15


@settings(max_examples=200, deadline=None)
@given(sr=st.floats(-0.5, 0.5, **REAL), n_trials=st.floats(1.000001, 1e5, **REAL), var=st.floats(1e-8, 0.05, **REAL),
       n=st.integers(2, 10_000), g3=st.floats(-2, 2, **REAL), extra=st.floats(0, 10, **REAL))
def test_dsr_never_exceeds_psr_against_zero(sr, n_trials, var, n, g3, extra):
    g4 = 1 + g3**2 + extra
    if 1 - g3 * sr + (g4 - 1) / 4 * sr**2 <= 0: return
    assert expected_max_sharpe(n_trials, var) >= 0 and expected_max_sharpe(max(2, round(n_trials)), var) > 0
    assert deflated_sharpe_ratio(sr, n_trials, var, n, g3, g4) <= probabilistic_sharpe_ratio(sr, 0.0, n, g3, g4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.01, 100, **REAL), n_trials=st.integers(2, 12))
def test_pbo_is_invariant_to_scale_and_column_order(seed, scale, n_trials):
    rng = np.random.default_rng(seed)
    M = rng.normal(0, 1, (96, n_trials))
    r = pbo(M, n_splits=6)
    assert 0 <= r.pbo <= 1
    assert pbo(M * scale, n_splits=6).pbo == r.pbo
    perm = rng.permutation(n_trials)
    np.testing.assert_allclose(pbo(M[:, perm], n_splits=6).logits, r.logits, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(n1=st.floats(1, 1e6, **REAL), n2=st.floats(1, 1e6, **REAL), t1=st.floats(0.1, 5, **REAL), t2=st.floats(0.1, 5, **REAL))
def test_min_backtest_length_monotone(n1, n2, t1, t2):
    (na, nb), (ta, tb) = sorted((n1, n2)), sorted((t1, t2))
    assert min_backtest_length(na, 1.0) <= min_backtest_length(nb, 1.0) + 1e-12
    assert min_backtest_length(100, tb) <= min_backtest_length(100, ta) + 1e-12


# ---------------------------------------------------------------- conveniences, errors, light import

def test_dsr_from_trials_is_consistent():
    M = pd.DataFrame(np.random.default_rng(9).normal(0.0002, 0.01, (750, 40)))
    d = dsr_from_trials(M, periods_per_year=252)
    assert isinstance(d, DSRResult)
    srs = sharpe_ratio(M)
    assert d.best == srs.idxmax() and d.sr == pytest.approx(srs.max())
    assert d.var_sr == pytest.approx(srs.var(ddof=1)) and d.n == 750 and d.n_trials == 40
    assert d.skew == pytest.approx(skewness(M[d.best])) and d.kurtosis == pytest.approx(kurtosis(M[d.best]))
    assert d.dsr == pytest.approx(deflated_sharpe_ratio(d.sr, 40, d.var_sr, 750, d.skew, d.kurtosis))
    assert d.sr_annual == pytest.approx(d.sr * math.sqrt(252)) and dsr_from_trials(M).sr_annual is None


@pytest.mark.parametrize('call,exc,text', [
    (lambda: probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 0.0), ConfigError, 'kurtosis'),
    (lambda: probabilistic_sharpe_ratio(0.1, 0.0, 1), ConfigError, 'n (the number of observations)'),
    (lambda: probabilistic_sharpe_ratio(float('nan'), 0.0, 250), ConfigError, 'sr must be finite'),
    (lambda: deflated_sharpe_ratio(0.1, 0, 0.01, 250), ConfigError, 'n_trials'),
    (lambda: deflated_sharpe_ratio(0.1, 10, -0.01, 250), ConfigError, 'var_sr'),
    (lambda: min_backtest_length(10, -1.0), ConfigError, 'target_sr'),
    (lambda: min_track_record_length(0.1, alpha=0.0), ConfigError, 'alpha'),
    (lambda: sharpe_ratio([0.01, float('nan'), 0.02]), DataError, 'first at row 1'),
    (lambda: sharpe_ratio(['a', 'b']), DataError, 'numeric'),
    (lambda: sharpe_ratio([0.01, 0.02], periods_per_year=-1), ConfigError, 'periods_per_year'),
    (lambda: dsr_from_trials(np.ones((10, 1))), DataError, 'at least 2 trials'),
    (lambda: pbo(np.zeros((100, 4)), n_splits=7), ConfigError, 'n_splits'),
    (lambda: pbo(np.zeros((100, 4)), metric='sharp'), ConfigError, 'metric'),
    (lambda: pbo(np.zeros((100, 1))), DataError, 'at least 2 trials'),
    (lambda: pbo(np.zeros((10, 4)), n_splits=16), DataError, 'too few'),
])
def test_errors_name_the_argument(call, exc, text):
    with pytest.raises(exc, match=text.replace('(', r'\(').replace(')', r'\)')):
        call()


def test_import_is_light():
    r = run_py("import sys, smallcap.backtest.overfit as o; "
               "print(sorted(m for m in ('scipy', 'vectorbt', 'numba', 'sklearn', 'backtrader') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'
