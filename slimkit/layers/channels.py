"""Channel-count rules shared by blocks and models."""

from __future__ import annotations

__all__ = ["make_divisible"]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% (the MobileNet reference rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new
