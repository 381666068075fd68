"""The EM side of the bridge: anti-aliased multiscale pyramids of EM volumes, intensity refinement of a
landmark fit against a light-sheet crop, and a synthetic EM + light-sheet pair built from real EM."""
from .pyramid import Pyramid, PyramidLevel, build_pyramid, pyramid_factors

__all__ = ["build_pyramid", "Pyramid", "PyramidLevel", "pyramid_factors"]
