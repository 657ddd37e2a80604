"""Every strategy registers itself when its module is imported; this list imports them all."""

from adaptlab.strategies import frozen, knn, zero_shot  # noqa: F401
