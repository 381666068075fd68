"""The demo: a multi-scale phantom with known ground truth, and the pipeline that runs the whole chain.

>>> from atlasreg.demo import make_phantom, run_demo      # doctest: +SKIP
>>> summary = run_demo("atlasreg-demo")                   # doctest: +SKIP
"""
from __future__ import annotations

from .phantom import Phantom, make_phantom

__all__ = ["Phantom", "make_phantom", "run_demo"]


def __getattr__(name):
    if name == "run_demo":
        from .pipeline import run_demo

        return run_demo
    raise AttributeError(name)
