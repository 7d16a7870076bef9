"""Soft-DTW kernel: brute force over all monotone paths, gradcheck, tslearn/pysdtw parity, masks, hard DTW paths."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vlp_surgical.dtw import (
    SoftDTW,
    dtw_path,
    pairwise_sqeuclidean,
    soft_alignment,
    soft_dtw,
    soft_dtw_divergence,
)


def _paths(n: int, m: int) -> list[list[tuple[int, int]]]:
    """Every monotone alignment path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1)."""
    out: list[list[tuple[int, int]]] = []

    def walk(i: int, j: int, acc: list[tuple[int, int]]) -> None:
        if (i, j) == (n - 1, m - 1):
            out.append(acc)
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, acc + [(i + di, j + dj)])

    walk(0, 0, [(0, 0)])
    return out


def _brute(cost: np.ndarray, gamma: float) -> float:
    totals = np.array([sum(cost[i, j] for i, j in p) for p in _paths(*cost.shape)])
    if gamma == 0:
        return float(totals.min())
    z = -totals / gamma
    return float(-gamma * (z.max() + np.log(np.exp(z - z.max()).sum())))


def _cell_loop(cost: np.ndarray, gamma: float, relaxation: str) -> float:
    """The recursion cell by cell (like the reference code), as an independent oracle for the 'prob' relaxation."""
    n, m = cost.shape
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            nb = np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]])
            z = -nb / gamma
            p = np.exp(z - z.max())
            p /= p.sum()
            if relaxation == "logsumexp":
                soft = -gamma * (z.max() + np.log(np.exp(z - z.max()).sum()))
            else:
                soft = float(sum(pk * v for pk, v in zip(p, nb) if pk > 0))
            r[i, j] = cost[i - 1, j - 1] + soft
    return float(r[n, m])


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 4), (3, 3), (4, 2), (2, 5), (4, 4)])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
def test_equals_brute_force_over_all_paths(n: int, m: int, gamma: float) -> None:
    g = torch.Generator().manual_seed(n * 10 + m)
    cost = torch.randn(3, n, m, generator=g, dtype=torch.float64)
    got = soft_dtw(cost, gamma)
    want = torch.tensor([_brute(c.numpy(), gamma) for c in cost], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("relaxation", ["logsumexp", "prob"])
def test_equals_cell_by_cell_recursion(relaxation: str) -> None:
    cost = torch.rand(4, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = soft_dtw(cost, 0.3, relaxation=relaxation)
    want = torch.tensor([_cell_loop(c.numpy(), 0.3, relaxation) for c in cost], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_prob_relaxation_is_bounded_below_by_hard_dtw() -> None:
    cost = torch.rand(8, 6, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hard = soft_dtw(cost, 0.0)
    assert bool((soft_dtw(cost, 0.5, relaxation="prob") >= hard - 1e-12).all())
    assert bool((soft_dtw(cost, 0.5) <= hard + 1e-12).all())  # log-sum-exp soft-min lies below the minimum


@pytest.mark.parametrize("relaxation", ["logsumexp", "prob"])
@pytest.mark.parametrize("backend", ["numba", "analytic", "autograd"])
def test_gradcheck_float64_with_lengths(relaxation: str, backend: str) -> None:
    g = torch.Generator().manual_seed(3)
    cost = torch.rand(3, 5, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    xl, yl = torch.tensor([5, 3, 2]), torch.tensor([4, 4, 1])

    def fn(c: torch.Tensor) -> torch.Tensor:
        return soft_dtw(c, 0.7, x_lengths=xl, y_lengths=yl, relaxation=relaxation, backend=backend)

    assert torch.autograd.gradcheck(fn, (cost,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("relaxation", ["logsumexp", "prob"])
def test_analytic_backward_equals_autograd(relaxation: str) -> None:
    cost = torch.randn(4, 9, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    xl, yl = torch.tensor([9, 4, 7, 1]), torch.tensor([6, 6, 2, 3])
    grads = []
    for backend in ("numba", "analytic", "autograd"):
        c = cost.clone().requires_grad_(True)
        v = soft_dtw(c, 0.2, x_lengths=xl, y_lengths=yl, relaxation=relaxation, backend=backend)
        (v * torch.arange(1, 5)).sum().backward()
        grads.append((v.detach(), c.grad))
    for other in grads[1:]:  # numba == torch wavefront (analytic) == plain autograd
        torch.testing.assert_close(grads[0][0], other[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[0][1], other[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("relaxation", ["logsumexp", "prob"])
@pytest.mark.parametrize("gamma", [0.0, 0.05, 1.0])
def test_numba_fast_path_equals_torch_wavefront(relaxation: str, gamma: float) -> None:
    from vlp_surgical.dtw import numba_available

    assert numba_available()  # a declared dependency: the CPU fast path must be active in this environment
    g = torch.Generator().manual_seed(11)
    # n > m exercises the transposition, unequal lengths the masks, the band the +inf cells (sample 3: no path).
    cost = torch.rand(5, 9, 6, generator=g, dtype=torch.float64) * 3
    xl, yl = torch.tensor([9, 4, 7, 1, 9]), torch.tensor([6, 6, 2, 3, 1])
    for band in (None, 1.0):
        out = {}
        for backend in ("numba", "analytic"):
            c = cost.clone().requires_grad_(True)
            v = soft_dtw(c, gamma, x_lengths=xl, y_lengths=yl, relaxation=relaxation, band=band, backend=backend)
            torch.where(torch.isfinite(v), v, torch.zeros_like(v)).mul(torch.arange(1.0, 6.0)).sum().backward()
            out[backend] = (v.detach(), c.grad)
        torch.testing.assert_close(out["numba"][0], out["analytic"][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["numba"][1], out["analytic"][1], rtol=1e-10, atol=1e-12)
        assert float(out["numba"][1][0, 4:].abs().sum()) == 0.0 or int(xl[0]) > 4  # padding rows of sample 0 exist
        assert float(out["numba"][1][1, 4:].abs().sum()) == 0.0  # sample 1 has 4 rows: no gradient on padding
    # float32 agrees to float32 rounding, and the default picks the fast path on CPU.
    c32 = cost.float()
    torch.testing.assert_close(soft_dtw(c32, 0.1, x_lengths=xl, y_lengths=yl, relaxation=relaxation),
                               soft_dtw(c32, 0.1, x_lengths=xl, y_lengths=yl, relaxation=relaxation,
                                        backend="analytic"), rtol=1e-5, atol=1e-5)  # fmt: skip
    assert soft_dtw(c32, 0.1, relaxation=relaxation, backend="auto").dtype == torch.float32


def test_padded_equals_unpadded_and_padding_gets_no_gradient() -> None:
    g = torch.Generator().manual_seed(5)
    lens = [(7, 3), (2, 6), (5, 5), (1, 1)]
    seqs = [(torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(m, 4, generator=g, dtype=torch.float64))
            for n, m in lens]  # fmt: skip
    x = torch.full((4, 7, 4), 1e3, dtype=torch.float64)  # garbage padding must not matter
    y = torch.full((4, 6, 4), -1e3, dtype=torch.float64)
    for k, (a, b) in enumerate(seqs):
        x[k, : len(a)], y[k, : len(b)] = a, b
    x.requires_grad_(True)
    xl, yl = torch.tensor([n for n, _ in lens]), torch.tensor([m for _, m in lens])
    v = soft_dtw(pairwise_sqeuclidean(x, y), 0.5, x_lengths=xl, y_lengths=yl)
    v.sum().backward()
    for k, (a, b) in enumerate(seqs):
        a = a.clone().requires_grad_(True)
        ref = soft_dtw(pairwise_sqeuclidean(a[None], b[None]), 0.5)
        ref.sum().backward()
        torch.testing.assert_close(v[k], ref[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad[k, : len(a)], a.grad, rtol=1e-10, atol=1e-12)
        assert bool((x.grad[k, len(a) :] == 0).all())
    # NaN in padded cost cells (e.g. cosine of zero padding) neither leaks into values nor gradients.
    cost = torch.rand(2, 4, 3, dtype=torch.float64)
    padded = cost.clone()
    padded[0, 2:], padded[1, :, 1:] = float("nan"), float("nan")
    padded.requires_grad_(True)
    v = soft_dtw(padded, 0.3, x_lengths=torch.tensor([2, 4]), y_lengths=torch.tensor([3, 1]))
    v.sum().backward()
    torch.testing.assert_close(v[0], soft_dtw(cost[0, :2], 0.3))
    torch.testing.assert_close(v[1], soft_dtw(cost[1, :, :1], 0.3))
    assert bool(torch.isfinite(padded.grad).all())


def test_transpose_symmetry() -> None:
    cost = torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(soft_dtw(cost, 0.3), soft_dtw(cost.transpose(1, 2), 0.3))
    xl, yl = torch.tensor([4, 2, 3]), torch.tensor([9, 5, 1])
    torch.testing.assert_close(
        soft_dtw(cost, 0.3, x_lengths=xl, y_lengths=yl),
        soft_dtw(cost.transpose(1, 2), 0.3, x_lengths=yl, y_lengths=xl),
    )


def test_gamma_to_zero_converges_to_hard_dtw_and_path_is_optimal() -> None:
    g = torch.Generator().manual_seed(7)
    cost = torch.rand(5, 6, 4, generator=g, dtype=torch.float64)
    xl, yl = torch.tensor([6, 3, 6, 1, 2]), torch.tensor([4, 4, 1, 3, 2])
    hard, paths = dtw_path(cost, x_lengths=xl, y_lengths=yl)
    torch.testing.assert_close(soft_dtw(cost, 1e-4, x_lengths=xl, y_lengths=yl), hard, atol=1e-3, rtol=0)
    for k, path in enumerate(paths):
        n, m = int(xl[k]), int(yl[k])
        assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
        steps = np.diff(path, axis=0)
        assert {tuple(s) for s in steps} <= {(1, 0), (0, 1), (1, 1)}
        c = cost[k, :n, :m].numpy()
        assert math.isclose(float(c[path[:, 0], path[:, 1]].sum()), float(hard[k]), rel_tol=1e-12)
        assert math.isclose(float(hard[k]), _brute(c, 0.0), rel_tol=1e-12)
    # The hard sub-gradient is the optimal path as a 0/1 matrix.
    align = soft_alignment(cost[:1], 0.0)
    expected = torch.zeros(6, 4, dtype=torch.float64)
    expected[paths[0][:, 0], paths[0][:, 1]] = 1
    torch.testing.assert_close(align[0], expected)


def test_soft_alignment_marginals() -> None:
    # For log-sum-exp, ∂/∂D is the expected alignment: every path visits (0, 0) and (n-1, m-1) once.
    cost = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    a = soft_alignment(cost, 1.0)
    torch.testing.assert_close(a[:, 0, 0], torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(a[:, -1, -1], torch.ones(2, dtype=torch.float64))
    assert bool((a >= 0).all() & (a <= 1 + 1e-12).all())


def test_band_excludes_cells_like_brute_force() -> None:
    cost = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = soft_dtw(cost, 0.5, band=0.0)  # only the diagonal path survives
    torch.testing.assert_close(got, cost[0].diagonal().sum().reshape(1))
    wide = soft_dtw(cost, 0.5, band=10.0)
    torch.testing.assert_close(wide, soft_dtw(cost, 0.5))


def test_divergence_is_zero_on_identical_inputs_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(10)
    x = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(soft_dtw_divergence(x, x, 1.0), torch.zeros(3, dtype=torch.float64))
    assert bool((soft_dtw_divergence(x, x.flip(1), 1.0) > 0).all())
    torch.testing.assert_close(SoftDTW(1.0, normalize=True)(x, x.flip(1)), soft_dtw_divergence(x, x.flip(1), 1.0))


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="gamma"):
        soft_dtw(torch.zeros(1, 2, 2), -1.0)
    with pytest.raises(ValueError, match="x_lengths"):
        soft_dtw(torch.zeros(2, 2, 2), x_lengths=torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="cost"):
        soft_dtw(torch.zeros(2))
    with pytest.raises(ValueError, match="relaxation"):
        soft_dtw(torch.zeros(1, 2, 2), relaxation="max")


# ------------------------------------------------------------------------------------------------- peer parity
def test_matches_tslearn_per_sample_on_unequal_lengths() -> None:
    tslearn_metrics = pytest.importorskip("tslearn.metrics")
    g = torch.Generator().manual_seed(11)
    lens = [(8, 5), (3, 9), (6, 6), (2, 1), (9, 9)]
    x = torch.randn(5, 9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 9, 3, generator=g, dtype=torch.float64)
    xl, yl = torch.tensor([a for a, _ in lens]), torch.tensor([b for _, b in lens])
    xg = x.clone().requires_grad_(True)
    ours = soft_dtw(pairwise_sqeuclidean(xg, y), 0.1, x_lengths=xl, y_lengths=yl)
    ours.sum().backward()
    for k, (n, m) in enumerate(lens):
        a, b = x[k, :n].numpy(), y[k, :m].numpy()
        # tslearn's float64 numpy soft-DTW (its SoftDTWLossPyTorch casts E to float32 in backward via
        # torch.Tensor(...), so gradients from it agree only to ~1e-4) and its gradient (Jacobian product through the squared Euclidean cost).
        dist = tslearn_metrics.SquaredEuclidean(a, b)
        sdtw = tslearn_metrics.SoftDTW(dist, gamma=0.1)
        ref = sdtw.compute()
        ref_grad = torch.from_numpy(dist.jacobian_product(sdtw.grad()))
        assert abs(float(ours[k].detach()) - ref) <= 1e-6 * max(1.0, abs(ref))
        torch.testing.assert_close(xg.grad[k, :n], ref_grad, rtol=1e-6, atol=1e-6)


def test_matches_pysdtw_packed_sequences() -> None:
    pysdtw = pytest.importorskip("pysdtw")
    from torch.nn.utils.rnn import pack_padded_sequence

    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    xl, yl = torch.tensor([7, 4, 2, 5]), torch.tensor([6, 6, 3, 1])
    xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    ours = soft_dtw(pairwise_sqeuclidean(xg, yg), 0.5, x_lengths=xl, y_lengths=yl)
    ours.sum().backward()
    xp, yp = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    peer = pysdtw.SoftDTW(gamma=0.5, use_cuda=False)
    ref = peer(pack_padded_sequence(xp, xl, batch_first=True, enforce_sorted=False),
               pack_padded_sequence(yp, yl, batch_first=True, enforce_sorted=False))  # fmt: skip
    ref.sum().backward()
    # pysdtw builds its R and E tables with torch.Tensor(numpy) (float32) even for float64 input, so the agreement
    # is float32-level; tslearn's numpy path above is the 1e-6 float64 oracle.
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xg.grad, xp.grad, rtol=5e-5, atol=5e-5)
    torch.testing.assert_close(yg.grad, yp.grad, rtol=5e-5, atol=5e-5)


def test_float32_long_sequences_stay_finite() -> None:
    cost = torch.rand(2, 128, 100, generator=torch.Generator().manual_seed(13)) * 10
    c = cost.clone().requires_grad_(True)
    v = soft_dtw(c, 0.01)
    v.sum().backward()
    assert bool(torch.isfinite(v).all() & torch.isfinite(c.grad).all())
    torch.testing.assert_close(v, soft_dtw(cost.double(), 0.01).float(), rtol=1e-4, atol=1e-3)


def test_all_cells_paths_enumeration_sanity() -> None:
    # Delannoy numbers: the count of monotone paths the brute force enumerates.
    assert [len(_paths(k, k)) for k in (1, 2, 3, 4)] == [1, 3, 13, 63]
    assert len(list(itertools.islice(_paths(3, 4), 100))) == 25


def test_numba_parallel_kernels_equal_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prange kernels (used from ``PARALLEL_MIN_CELLS`` DP cells on) give the serial kernels' values and grads."""
    import numba

    from vlp_surgical import _dtw_numba

    if numba.get_num_threads() < 2:
        pytest.skip("one numba thread: the parallel kernels are never selected here")
    g = torch.Generator().manual_seed(5)
    cost = torch.rand(7, 12, 10, generator=g, dtype=torch.float64)
    xl, yl = torch.tensor([12, 3, 8, 12, 1, 5, 12]), torch.tensor([10, 10, 4, 7, 2, 1, 10])
    out = {}
    for name, threshold in (("serial", 1 << 62), ("parallel", 0)):
        monkeypatch.setattr(_dtw_numba, "PARALLEL_MIN_CELLS", threshold)
        assert _dtw_numba._parallel(int(xl @ yl)) == (name == "parallel")
        c = cost.clone().requires_grad_(True)
        v = soft_dtw(c, 0.1, x_lengths=xl, y_lengths=yl, relaxation="prob", backend="numba")
        v.mul(torch.arange(1.0, 8.0, dtype=torch.float64)).sum().backward()
        out[name] = (v.detach(), c.grad)
    torch.testing.assert_close(out["parallel"][0], out["serial"][0], rtol=0, atol=0)
    torch.testing.assert_close(out["parallel"][1], out["serial"][1], rtol=0, atol=0)
