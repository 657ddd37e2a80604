"""adaptlab: measure every way to adapt a pretrained model to your task, then pick one."""

__version__ = "0.1.0"
