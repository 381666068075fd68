"""File formats: every way atlasreg saves or loads a node (volume, points) or an edge (transform).

Volumes: :func:`read_volume` / :func:`write_volume` (:mod:`atlasreg.io.volumes`),
with one module per format family (``tiff``, ``hdf5``, ``ome_zarr``).
Every writer goes through :func:`atomic_path` (:mod:`atlasreg.io.atomic`).
Names load on first use so ``import atlasreg.io`` stays quick.
"""
from importlib import import_module

_LAZY = {
    "read_volume": "atlasreg.io.volumes",
    "write_volume": "atlasreg.io.volumes",
    "volume_format": "atlasreg.io.volumes",
    "atomic_path": "atlasreg.io.atomic",
    "check_writable": "atlasreg.io.atomic",
    "write_atomic": "atlasreg.io.atomic",
}

__all__ = list(_LAZY)


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'atlasreg.io' has no attribute {name!r}")
    return getattr(import_module(mod), name)
