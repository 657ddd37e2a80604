"""adaptlab: measure every way to adapt a pretrained model to your task, then pick one."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One version, pyproject.toml's, as the installed package's metadata carries it.
    __version__ = version("adaptlab")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
