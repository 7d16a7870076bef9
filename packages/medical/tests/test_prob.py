"""Probabilistic embeddings: Hellinger/CSD against closed forms and Monte-Carlo, stability, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from vlp_medical.prob import (
    CSDSimilarity,
    HellingerInfoNCE,
    HellingerSimilarity,
    PCMEppLoss,
    ProbabilisticTower,
    SampledInstanceLoss,
    UncertaintyAttenuationLoss,
    VIBLoss,
    csd,
    hellinger_sq,
    kl_to_standard_normal,
    split_gaussian,
    uncertainty,
)


def _gauss(n: int, d: int, seed: int, spread: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=dtype) * spread
    logvar = torch.randn(n, d, generator=g, dtype=dtype) * 0.5 - 0.5
    return torch.cat([mu, logvar], -1)


def test_hellinger_range_identity_symmetry() -> None:
    a, b = _gauss(7, 16, 0), _gauss(5, 16, 1)
    h = hellinger_sq(a, b)
    assert h.shape == (7, 5) and (h >= 0).all() and (h <= 1).all()
    torch.testing.assert_close(h, hellinger_sq(b, a).T)
    assert hellinger_sq(a, a, pairwise=False).abs().max() < 1e-12
    torch.testing.assert_close(hellinger_sq(a[:5], b, pairwise=False), h[:5].diagonal())


def test_hellinger_equals_one_dimensional_closed_form() -> None:
    m1, m2, v1, v2 = 0.3, -1.1, 0.5, 2.0
    ref = 1 - math.sqrt(2 * math.sqrt(v1 * v2) / (v1 + v2)) * math.exp(-((m1 - m2) ** 2) / (4 * (v1 + v2)))
    a = torch.tensor([[m1, math.log(v1)]], dtype=torch.float64)
    b = torch.tensor([[m2, math.log(v2)]], dtype=torch.float64)
    assert hellinger_sq(a, b).item() == pytest.approx(ref, rel=1e-12)
    # Diagonal Gaussians factorise: BC is the product of the per-dimension coefficients.
    a3, b3 = _gauss(1, 3, 2), _gauss(1, 3, 3)
    bc = 1.0
    for d in range(3):
        bc *= (
            1
            - hellinger_sq(
                torch.stack([a3[0, d], a3[0, 3 + d]])[None], torch.stack([b3[0, d], b3[0, 3 + d]])[None]
            ).item()
        )
    assert hellinger_sq(a3, b3).item() == pytest.approx(1 - bc, rel=1e-10)


def test_hellinger_matches_monte_carlo() -> None:
    a, b = _gauss(1, 3, 4, spread=0.5), _gauss(1, 3, 5, spread=0.5)
    mu_a, lv_a = split_gaussian(a[0])
    mu_b, lv_b = split_gaussian(b[0])
    p = torch.distributions.Independent(torch.distributions.Normal(mu_a, (0.5 * lv_a).exp()), 1)
    q = torch.distributions.Independent(torch.distributions.Normal(mu_b, (0.5 * lv_b).exp()), 1)
    z = p.sample((400_000,))
    bc_mc = torch.exp(0.5 * (q.log_prob(z) - p.log_prob(z))).mean()  # BC = E_p sqrt(q/p)
    assert hellinger_sq(a, b).item() == pytest.approx(1 - bc_mc.item(), abs=5e-3)


def test_hellinger_stable_at_d512_in_float32() -> None:
    a = _gauss(6, 512, 6, dtype=torch.float32).requires_grad_()
    b = _gauss(6, 512, 7, dtype=torch.float32)
    h = hellinger_sq(a, b)
    # BC = exp(log BC) underflows (log BC << -88) yet H² is exactly 1 and the similarity's gradient is finite.
    assert torch.isfinite(h).all() and (h > 0.999).all()
    near = a.detach().clone()
    near[:, :512] += 1e-4
    near.requires_grad_()
    s = HellingerSimilarity()(near, a.detach())
    s.diagonal().sum().backward()
    assert torch.isfinite(near.grad).all()
    assert (s.diagonal() > 0.99).all()


def test_chunked_hellinger_equals_unchunked_with_gradients() -> None:
    a = _gauss(10, 8, 8).requires_grad_()
    b = _gauss(6, 8, 9).requires_grad_()
    h1 = hellinger_sq(a, b, chunk_size=None)
    g1 = torch.autograd.grad(h1.square().sum(), (a, b))
    h2 = hellinger_sq(a, b, chunk_size=3)
    g2 = torch.autograd.grad(h2.square().sum(), (a, b))
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(g1, g2)


def test_csd_equals_monte_carlo_expected_squared_distance() -> None:
    a, b = _gauss(2, 4, 10), _gauss(3, 4, 11)
    d = csd(a, b)
    mu_a, lv_a = split_gaussian(a)
    mu_b, lv_b = split_gaussian(b)
    g = torch.Generator().manual_seed(0)
    k = 200_000
    za = mu_a[:, None] + (0.5 * lv_a).exp()[:, None] * torch.randn(2, k, 4, generator=g, dtype=torch.float64)
    zb = mu_b[:, None] + (0.5 * lv_b).exp()[:, None] * torch.randn(3, k, 4, generator=g, dtype=torch.float64)
    mc = (za[:, None] - zb[None]).square().sum(-1).mean(-1)
    torch.testing.assert_close(d, mc, rtol=0.02, atol=0.02)
    torch.testing.assert_close(CSDSimilarity()(a, b), -d)
    assert torch.allclose(csd(a, a, pairwise=False), 2 * uncertainty(a))


def test_kl_is_zero_at_standard_normal_and_positive_otherwise() -> None:
    z = torch.zeros(3, 8)
    assert kl_to_standard_normal(z).item() == 0.0
    assert kl_to_standard_normal(_gauss(3, 4, 1)).item() > 0


@pytest.mark.parametrize(
    "loss,n_inputs",
    [(HellingerInfoNCE(chunk_size=2), 2), (PCMEppLoss(), 2), (VIBLoss(), 2)],
)
def test_gradcheck_losses(loss: torch.nn.Module, n_inputs: int) -> None:
    loss = loss.double()
    xs = [_gauss(4, 3, 20 + i).requires_grad_() for i in range(n_inputs)]

    def f(*inp: torch.Tensor) -> torch.Tensor:
        out = loss(*inp)
        return out["loss"] if isinstance(out, dict) else out

    assert torch.autograd.gradcheck(f, tuple(xs), eps=1e-6, atol=1e-5)


def test_gradcheck_sampled_instance_loss_with_fixed_noise() -> None:
    loss = SampledInstanceLoss(temperature=0.5)
    x = _gauss(4, 3, 30).requires_grad_()

    def f(inp: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # same ε every evaluation: the reparameterised loss is then a smooth function
        return loss(inp)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_hellinger_infonce_prefers_matched_pairs_and_pcmepp_pseudo_positives() -> None:
    a = _gauss(8, 16, 40, spread=3.0, dtype=torch.float32)
    loss = HellingerInfoNCE()
    matched = loss(a, a)["loss"]
    shuffled = loss(a, a.roll(1, 0))["loss"]
    assert matched < shuffled
    pl = PCMEppLoss()
    out = pl(a, a.roll(1, 0))
    assert out["pseudo"] > 0 and torch.isfinite(out["loss"])


def test_probabilistic_tower_convention() -> None:
    from vlp_core.testing import BoringTower

    base = BoringTower(in_dim=5, embed_dim=4)
    tower = ProbabilisticTower(base, init_logvar=-3.0)
    x = torch.randn(2, 5)
    out = tower(x)
    d = base.output_dim
    assert out.embedding.shape == (2, 2 * d) and tower.output_dim == 2 * d
    mu, logvar = split_gaussian(out.embedding)
    torch.testing.assert_close(mu, torch.nn.functional.normalize(base(x).embedding, dim=-1))  # unit means
    assert torch.allclose(logvar, torch.full_like(logvar, -3.0))  # zero-initialised log σ² head
    torch.testing.assert_close(uncertainty(out.embedding), torch.full((2,), d * math.exp(-3.0)))
    raw = ProbabilisticTower(base, normalize_mean=False)
    torch.testing.assert_close(split_gaussian(raw(x).embedding)[0], base(x).embedding)


def test_fresh_probabilistic_towers_do_not_saturate_the_hellinger_similarity() -> None:
    """Regression: with raw (un-normalised) means of a fresh 128-d projection every Bhattacharyya coefficient
    underflowed, PS was exactly 0 for all pairs, the loss had no gradient and zero-shot sat at 0.500."""
    from vlp_core.testing import BoringTower

    torch.manual_seed(0)
    img, txt = ProbabilisticTower(BoringTower(32, 128)), ProbabilisticTower(BoringTower(32, 128))
    a, b = img(torch.randn(16, 32)).embedding, txt(torch.randn(16, 32)).embedding
    ps = HellingerSimilarity()(a, b)
    assert ps.requires_grad
    ps = ps.detach()
    assert float(ps.std()) > 1e-3 and float(ps.min()) > 0.0  # distinct, not underflowed
    loss = HellingerInfoNCE()(img(torch.randn(16, 32)).embedding, txt(torch.randn(16, 32)).embedding)["loss"]
    loss.backward()
    grads = [p.grad for p in img.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) > 1e-4
    saturated = ProbabilisticTower(BoringTower(32, 128), init_logvar=-4.0, normalize_mean=False)
    sat = HellingerSimilarity()(saturated(torch.randn(16, 32) * 10).embedding, b.detach())
    assert float(sat.detach().max()) < 1e-3  # what the old default did: (near) zero similarity everywhere


def test_attenuation_gives_hard_items_more_variance_and_is_stationary_at_its_target() -> None:
    torch.manual_seed(0)
    n, d, ref = 6, 16, -2.5
    mu = torch.nn.functional.normalize(torch.randn(n, d), dim=-1)
    partner = mu.clone()
    partner[0] = -mu[0]  # item 0's partner is far away: the hardest match of the batch
    partner[1:] += 0.05 * torch.randn(n - 1, d)
    partner = torch.nn.functional.normalize(partner, dim=-1)
    lv = torch.full((n, d), ref, requires_grad=True)
    lv_b = torch.full((n, d), ref)
    loss = UncertaintyAttenuationLoss(ref_logvar=ref)
    opt = torch.optim.SGD([lv], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        loss(torch.cat([mu, lv], -1), torch.cat([partner, lv_b], -1)).backward()
        opt.step()
    var = uncertainty(torch.cat([mu, lv.detach()], -1))
    assert var[0] > 1.5 * var[1:].max()  # Σσ² ranks the hard item first
    # For fixed difficulties the term is minimised at mean σ² = exp(ref) · difficulty / mean difficulty.
    difficulty = torch.tensor([4.0, 1.0, 0.5, 0.5])
    target = math.exp(ref) * difficulty / difficulty.mean()
    at = torch.log(target)[:, None].repeat(1, d).requires_grad_()
    UncertaintyAttenuationLoss._term(torch.cat([torch.zeros(4, d), at], -1), difficulty, ref).backward()
    torch.testing.assert_close(at.grad, torch.zeros_like(at), atol=1e-6, rtol=0)
    off = (torch.log(target)[:, None].repeat(1, d) + 0.3).requires_grad_()
    UncertaintyAttenuationLoss._term(torch.cat([torch.zeros(4, d), off], -1), difficulty, ref).backward()
    assert (off.grad > 0).all()  # too much variance everywhere: pushed down


def test_attenuation_partners_follow_equal_label_vectors() -> None:
    nan = float("nan")
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, nan], [0.0, nan], [0.0, 1.0]])
    pos = UncertaintyAttenuationLoss.partners(labels, 5, torch.device("cpu"))
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    assert torch.equal(pos, expected.bool())  # NaN equals NaN only
    assert torch.equal(UncertaintyAttenuationLoss.partners(None, 3, torch.device("cpu")), torch.eye(3).bool())


def test_attenuation_difficulty_with_label_partners_matches_brute_force() -> None:
    # Items 0 and 1 share findings: item 0 "retrieving" item 1's text is a plausible match, so its difficulty is
    # -log(p_00 + p_01), computed here by hand; with the exact pair it is -log p_00.
    a, b = _gauss(4, 8, 3, dtype=torch.float32), _gauss(4, 8, 4, dtype=torch.float32)
    labels = torch.tensor([[1.0], [1.0], [0.0], [2.0]])
    loss = UncertaintyAttenuationLoss()
    p = (loss.scale * loss.similarity(a, b)).softmax(1)
    pt = (loss.scale * loss.similarity(a, b)).T.softmax(1)
    ce_a = -torch.log(torch.stack([p[0, 0] + p[0, 1], p[1, 0] + p[1, 1], p[2, 2], p[3, 3]]))
    ce_b = -torch.log(torch.stack([pt[0, 0] + pt[0, 1], pt[1, 0] + pt[1, 1], pt[2, 2], pt[3, 3]]))
    ref = 0.5 * (
        UncertaintyAttenuationLoss._term(a, ce_a, loss.ref_logvar)
        + UncertaintyAttenuationLoss._term(b, ce_b, loss.ref_logvar)
    )
    torch.testing.assert_close(loss(a, b, labels), ref)
    exact = 0.5 * (UncertaintyAttenuationLoss._term(a, -p.diagonal().log(), loss.ref_logvar)
                   + UncertaintyAttenuationLoss._term(b, -pt.diagonal().log(), loss.ref_logvar))  # fmt: skip
    torch.testing.assert_close(loss(a, b), exact)
    assert not torch.allclose(loss(a, b, labels), exact)
