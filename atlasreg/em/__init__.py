"""The EM side of the bridge: anti-aliased multiscale pyramids of EM volumes, the light-sheet crop matching an EM
block, and intensity refinement of a landmark fit that never makes held-out landmark error worse.

- :func:`build_pyramid` / :func:`open_pyramid` (:mod:`.pyramid`): OME-Zarr pyramid down to light-sheet resolution.
- :func:`crop_lm` (:mod:`.crop`): the light-sheet sub-volume covering an EM block through a transform.
- :func:`refine_landmark_fit` (:mod:`.refine`): masked affine (or B-spline) refinement checked on held-out landmarks.
- :func:`synthetic_lm_pair` (:mod:`.synthetic`): a light-sheet-like volume made from real EM with a known transform.
"""
from .crop import crop_lm
from .pyramid import Pyramid, PyramidLevel, build_pyramid, open_pyramid, pyramid_factors
from .refine import RefineResult, refine_landmark_fit
from .synthetic import SyntheticPair, synthetic_lm_pair

__all__ = ["build_pyramid", "open_pyramid", "Pyramid", "PyramidLevel", "pyramid_factors", "crop_lm",
           "refine_landmark_fit", "RefineResult", "synthetic_lm_pair", "SyntheticPair"]
