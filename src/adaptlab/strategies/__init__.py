"""Every strategy registers itself when its module is imported; this list imports them all."""

from adaptlab.strategies import frozen, full, knn, lora, partial, scratch, zero_shot  # noqa: F401
