"""Transforms between spaces: affine, displacement field, thin-plate spline, sequences, file formats."""
from .base import Affine, Sequence, Transform, as_points
from .bspline import BSplineTransform
from .field import DisplacementField, InverseDisplacementField
from .tps import InverseThinPlateSpline, ThinPlateSpline

__all__ = ["Transform", "Affine", "Sequence", "DisplacementField", "InverseDisplacementField",
           "ThinPlateSpline", "InverseThinPlateSpline", "BSplineTransform", "as_points", "save_transform",
           "load_transform", "load_transforms"]


def __getattr__(name):
    if name in ("save_transform", "load_transform", "load_transforms"):
        from . import files

        return getattr(files, name)
    raise AttributeError(name)
