"""Scale past memory and past one machine: blockwise warping, field operations and point mapping on dask.

The same code runs on dask's local threaded scheduler (the default) and on a
dask.distributed cluster (``scheduler="tcp://HOST:PORT"`` or a ``Client``):

- :func:`warp_blockwise` warps a chunked volume (OME-Zarr, HDF5, dask) through
  any transform or SpaceGraph chain into a multiscale OME-Zarr, block by block;
- :func:`map_points_file` / :func:`map_points` map and annotate point tables
  (Parquet, CSV, zarr) in parallel chunks;
- :class:`ChunkedDisplacementField`, :func:`invert_field`,
  :func:`compose_fields` handle displacement fields larger than memory.

Outputs are built under ``<output>.partial/`` and appear under their name only
when complete; an interrupted run resumes where it stopped.
"""
from ..io.ome_zarr import is_complete
from .engine import Engine, open_engine
from .fields import (ChunkedDisplacementField, ChunkedInverseDisplacementField, compose_fields, invert_field,
                     open_field, sample_field)
from .points import PointsResult, map_points, map_points_file
from .warp import WarpResult, warp_blockwise

__all__ = ["warp_blockwise", "WarpResult", "map_points", "map_points_file", "PointsResult",
           "ChunkedDisplacementField", "ChunkedInverseDisplacementField", "open_field", "sample_field",
           "invert_field", "compose_fields", "is_complete", "open_engine", "Engine"]
