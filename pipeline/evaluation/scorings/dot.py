"""The plain inner product."""

from __future__ import annotations

from . import BASELINE, register_scoring
from .base import Scoring


@register_scoring(BASELINE)
class Dot(Scoring):
    """S(q, d) = q . d (cosine for an L2-normalising encoder): what the retriever was trained with."""

    caption = "plain dot product"
    order = 0
