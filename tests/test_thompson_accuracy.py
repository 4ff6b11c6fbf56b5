"""The bank's pmf against Thompson-sampling probabilities computed by numerical integration.

For independent Beta arms, P(arm k has the largest draw) = integral of f_k(x) prod_{j != k} F_j(x) dx.
The bank estimates it by the share of M joint draws arm k wins, so its error is Monte Carlo error
with standard deviation sqrt(p (1 - p) / M): tolerances below are derived from that.
"""

import numpy as np
import pytest
from scipy import integrate, stats

import banditroute as br

CASES = [
    [(3, 2), (2, 3)],
    [(30, 10), (25, 12), (5, 5)],
    [(8, 4), (7, 5), (12, 8), (2, 2)],
    [(100, 50), (95, 50), (60, 40), (1, 1)],
]


def true_ts_probabilities(params):
    out = []
    for k, (a, b) in enumerate(params):
        others = [stats.beta(a2, b2) for j, (a2, b2) in enumerate(params) if j != k]
        f = lambda x, a=a, b=b, others=others: stats.beta.pdf(x, a, b) * np.prod([o.cdf(x) for o in others])
        out.append(integrate.quad(f, 0, 1, limit=200, epsabs=1e-12)[0])
    return np.array(out)


def bank_pmf(params, n_draws, seed):
    profiles = [br.BetaPrior(alpha=a, beta=b) for a, b in params]
    router = br.Router([br.Profile(f"p{i}", prior=p) for i, p in enumerate(profiles)],
                       exploration=0.0, n_draws=n_draws, seed=seed)
    return np.array(list(router.probabilities({}).values()))


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"{len(p)}arms")
def test_pmf_within_0_02_at_large_m(params, seed):
    truth = true_ts_probabilities(params)
    assert truth.sum() == pytest.approx(1.0, abs=1e-6)
    m = 20_000  # 4.5 sigma of the Monte Carlo error is at most 0.016 < 0.02
    assert np.abs(bank_pmf(params, m, seed) - truth).max() <= 0.02


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"{len(p)}arms")
def test_pmf_error_is_monte_carlo_error_at_m_1000(params, seed):
    truth = true_ts_probabilities(params)
    m = 1000
    sigma = np.sqrt(truth * (1 - truth) / m) + 1e-12
    z = np.abs(bank_pmf(params, m, seed) - truth) / sigma
    assert z.max() <= 4.5


@pytest.mark.parametrize("params", CASES[1:3], ids=lambda p: f"{len(p)}arms")
def test_bank_pmf_is_unbiased(params, seed):
    """Averaged over independent banks, the pmf converges to the Thompson probabilities."""
    truth = true_ts_probabilities(params)
    m, reps = 1000, 60
    mean = np.mean([bank_pmf(params, m, seed * 1000 + r) for r in range(reps)], axis=0)
    se = np.sqrt(truth * (1 - truth) / m / reps) + 1e-12
    assert (np.abs(mean - truth) / se).max() <= 4.5
