"""FANoise: singular-value-adaptive Gaussian noise on a batch of features (training only)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.training import distributed
from pipeline.core.params import FANoiseParams, merged

SCALINGS = ("sublinear", "linear", "uniform")


class FANoise(nn.Module):
    """Noise shaped by the singular spectrum of the batch feature matrix X (n x d):

        X = U Sigma V^T  (thin SVD, r = min(n, d), on detached X)
        X_noisy = X + (alpha / sqrt(r)) * Z diag(s) V^T,    Z ~ N(0, 1) of shape (n x r)
        s = sqrt(sigma) / mean(sqrt(sigma))   (sublinear)
          = sigma / mean(sigma)               (linear)
          = 1                                 (uniform)

    Each noise row has covariance (alpha^2 / r) V diag(s^2) V^T, so it lies in the row space of
    X. Identity when `alpha == 0` or in eval mode.

    Li, Fang, et al., "FANoise: Singular Value-Adaptive Noise Modulation for Robust Multimodal
    Representation Learning", arXiv 2511.20997 (AAAI 2026).

    Choices the paper leaves open (docs/methods.md#fanoise):
    - The normaliser is the rank r = min(n, d), not the batch size n. Then the expected squared
      norm of a noise row is alpha^2 * mean(s^2): exactly alpha^2 for uniform scaling, and
      independent of both batch size and dimension for the others, so the same alpha means the
      same perturbation whether it is drawn over a micro-batch of 8 or a cached batch of 256.
      With n <= d (the usual case) r = n and the two readings coincide.
    - The SVD is taken on detached features: the noise is a perturbation, not a learned path,
      so the gradient of X_noisy with respect to X is the identity.
    - Callers apply it to L2-normalised embeddings and do not re-normalise (VLM2Vec recipe).
    - Randomness comes from `generator` when given, else from torch's global RNG, so seeding
      (or GradCache's RNG bookkeeping) covers it.
    - With several processes the methods noise the gathered (global) batch and process 0's draw
      is broadcast, so every process adds the same noise a single process would.
    """

    def __init__(self, alpha: float = 0.1, scaling: str = "sublinear", generator: torch.Generator | None = None):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"fanoise.scaling: expected one of {SCALINGS}, got {scaling!r}")
        if alpha < 0:
            raise ValueError(f"fanoise.alpha: expected >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.scaling = scaling
        self.generator = generator

    @classmethod
    def from_config(cls, cfg: dict | None) -> "FANoise | None":
        """Build from a recipe's `fanoise` entry ({alpha, scaling} or None)."""
        if not cfg:
            return None
        cfg = merged(FANoiseParams, cfg)
        return cls(alpha=float(cfg["alpha"]), scaling=cfg["scaling"])

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scaling={self.scaling!r}"

    def scale(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.scaling == "uniform":
            return torch.ones_like(sigma)
        base = sigma.sqrt() if self.scaling == "sublinear" else sigma
        # An all-zero batch has no spectrum to follow; clamping keeps it noise-free, not NaN.
        return base / base.mean().clamp_min(torch.finfo(base.dtype).tiny)

    @torch.no_grad()
    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """The noise that `forward` would add to `x` (n x d), without adding it."""
        feats = x.detach().float()
        _, sigma, vh = torch.linalg.svd(feats, full_matrices=False)
        r = sigma.shape[0]
        z = torch.randn(feats.shape[0], r, generator=self.generator, device=feats.device, dtype=feats.dtype)
        noise = (self.alpha / math.sqrt(r)) * (z * self.scale(sigma)) @ vh
        return noise.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.alpha == 0 or x.shape[0] == 0:
            return x
        return x + distributed.broadcast(self.sample(x))


__all__ = ["FANoise", "SCALINGS"]
