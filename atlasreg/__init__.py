"""atlasreg: multi-scale brain atlas registration in one coordinate frame.

Heavy parts (ANTs, SimpleITK, dask, the atlas) load on first use, so
``import atlasreg`` stays quick.
"""
from importlib import import_module

from .errors import AtlasregError, InputError, NoMatchError, NoPathError, OutputExistsError, SpaceMismatchError
from .graph import SpaceGraph
from .spaces import Space, nifti_to_origin, origin_to_nifti, reorient_points, unit_scale
from .transforms import (Affine, DisplacementField, Sequence, ThinPlateSpline, Transform)
from .volume import Grid, Volume, warp

__version__ = "0.1.0"

# name -> module that defines it (loaded when first touched)
_LAZY = {
    "read_volume": "atlasreg.io.volumes",
    "write_volume": "atlasreg.io.volumes",
    "save_transform": "atlasreg.transforms.files",
    "load_transform": "atlasreg.transforms.files",
    "load_transforms": "atlasreg.transforms.files",
    "BSplineTransform": "atlasreg.transforms.bspline",
    "load_ants_registration": "atlasreg.transforms.files",
    "Atlas": "atlasreg.atlas",
    "Ontology": "atlasreg.atlas",
    "register": "atlasreg.registration",
    "RegistrationResult": "atlasreg.registration",
    "fit_landmarks": "atlasreg.registration.landmarks",
    "match_landmarks": "atlasreg.registration.matching",
    "tracings": "atlasreg.tracings",
    "qc": "atlasreg.qc",
    "distributed": "atlasreg.distributed",
    "data": "atlasreg.data",
    "em": "atlasreg.em",
}

__all__ = ["Space", "Volume", "Grid", "warp", "SpaceGraph", "Transform", "Affine", "DisplacementField",
           "ThinPlateSpline", "Sequence", "unit_scale", "origin_to_nifti", "nifti_to_origin",
           "reorient_points", "AtlasregError", "InputError", "NoMatchError", "NoPathError", "SpaceMismatchError",
           "OutputExistsError", *_LAZY]


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'atlasreg' has no attribute {name!r}")
    m = import_module(mod)
    return m if mod.endswith("." + name) else getattr(m, name)
