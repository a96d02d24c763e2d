"""FANoise: identity when off, lies in X's row space, has the documented covariance."""

import math

import pytest
import torch

from pipeline.training.fanoise import SCALINGS, FANoise


def spectrum(x, scaling):
    _, sigma, vh = torch.linalg.svd(x.double(), full_matrices=False)
    s = {"sublinear": sigma.sqrt() / sigma.sqrt().mean(), "linear": sigma / sigma.mean(),
         "uniform": torch.ones_like(sigma)}[scaling]
    return sigma, s, vh


def test_alpha_zero_and_eval_mode_are_identity():
    x = torch.nn.functional.normalize(torch.randn(5, 7), dim=-1)
    assert torch.equal(FANoise(alpha=0.0)(x), x)
    noise = FANoise(alpha=0.5)
    assert not torch.equal(noise(x), x)
    noise.eval()
    assert torch.equal(noise(x), x)


def test_gradient_is_identity_and_generator_makes_it_deterministic():
    x = torch.randn(4, 6, requires_grad=True)
    FANoise(0.3, generator=torch.Generator().manual_seed(1))(x).pow(2).sum().backward()
    # d/dx sum((x + n)^2) = 2 (x + n); with the noise detached the Jacobian of the noise is 0.
    again = FANoise(0.3, generator=torch.Generator().manual_seed(1))(x.detach())
    torch.testing.assert_close(x.grad, 2 * again)
    other = FANoise(0.3, generator=torch.Generator().manual_seed(2))(x.detach())
    assert not torch.equal(again, other)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_noise_lies_in_row_space(scaling):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 12, generator=g)  # rank 4 in a 12-dim space
    noise = FANoise(0.5, scaling, generator=g).sample(x)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    outside = noise - noise @ vh.T @ vh
    assert noise.norm() > 0.1
    assert outside.abs().max() < 1e-5


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("shape", [(6, 4), (3, 8)])
def test_empirical_covariance(scaling, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    alpha, draws = 0.4, 20000
    r = min(shape)
    module = FANoise(alpha, scaling, generator=g)
    rows = torch.cat([module.sample(x) for _ in range(draws)]).double()
    empirical = rows.T @ rows / rows.shape[0]  # the noise has mean zero
    _, s, vh = spectrum(x, scaling)
    expected = alpha ** 2 / r * vh.T @ torch.diag(s ** 2) @ vh
    # ~n*draws i.i.d. rows: the entry-wise standard error is a fraction of a percent of the scale.
    assert (empirical - expected).abs().max() < 0.03 * expected.abs().max()
    # Per-row energy alpha^2 * mean(s^2): with uniform scaling exactly alpha^2, whatever n and d.
    energy = rows.pow(2).sum(1).mean()
    assert math.isclose(energy, alpha ** 2 * float(s.pow(2).mean()), rel_tol=0.03)


def test_scalings_have_unit_mean_and_config_builder():
    sigma = torch.tensor([4.0, 1.0, 0.25])
    for scaling in ("sublinear", "linear"):
        assert math.isclose(float(FANoise(0.1, scaling).scale(sigma).mean()), 1.0, rel_tol=1e-6)
    assert FANoise.from_config(None) is None
    built = FANoise.from_config({"alpha": 0.2, "scaling": "linear"})
    assert (built.alpha, built.scaling) == (0.2, "linear")
    with pytest.raises(ValueError):
        FANoise(0.1, "quadratic")
    assert torch.equal(FANoise(0.1)(torch.zeros(3, 4)), torch.zeros(3, 4))
