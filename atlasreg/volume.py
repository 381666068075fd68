"""Volumes: an array plus the geometry that places its voxels in a named space.

CONVENTIONS: ``p = origin + D @ (spacing * i)`` with ``i`` the index in the
array's axis order; voxel centres sit at integer indices. Exchanges with
SimpleITK and ANTs keep every voxel where it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _kernels as K
from .errors import InputError, SpaceMismatchError
from .labels import LabelArray
from .spaces import Space, apply_affine, as_points, as_space, as_voxel_size, orientation_mapping, validate_orientation
from .transforms.base import Affine, Transform, with_ends
from .transforms.field import grid_affine


@dataclass(frozen=True)
class Grid:
    """The geometry of a voxel grid in a space: shape, spacing, origin, direction."""

    shape: tuple
    spacing: tuple
    space: Space
    origin: tuple = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def affine(self) -> np.ndarray:
        """4x4 index -> physical matrix."""
        return grid_affine(self.spacing, self.origin, self.direction)

    def index_to_physical(self, index) -> np.ndarray:
        idx = np.asarray(index, dtype=np.float64)
        m = self.affine
        return apply_affine(m, idx)

    def physical_to_index(self, points) -> np.ndarray:
        """Continuous (unrounded) indices of physical points."""
        m = np.linalg.inv(self.affine)
        return apply_affine(m, points)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical bounding box (min, max) of the voxel centres."""
        corners = np.array([[i, j, k] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1)
                            for k in (0, self.shape[2] - 1)], float)
        p = self.index_to_physical(corners)
        return p.min(0), p.max(0)


class Volume:
    """A 3-D image in a named space.

    Parameters
    ----------
    data : array_like (numpy or dask), 3-D
    voxel_size : float or 3 floats, in the space's unit
    origin, direction : physical position of voxel (0, 0, 0) and the 3x3 direction matrix
    space : Space or str
    orientation : str, optional
        BrainGlobe origin code of the array axes; stored on the space.

    Attributes
    ----------
    atlas : Atlas or None
        The atlas this volume is an image of (``Atlas.reference``, ``.annotation``), else None; lets
        ``RegistrationResult.save`` find the atlas of a fixed template.

    Examples
    --------
    >>> v = Volume(np.zeros((270, 193, 271), np.uint16), voxel_size=(50, 40, 40), orientation="psl",
    ...            space="sample")
    >>> v.index_to_physical([[10, 0, 5]])
    array([[500.,   0., 200.]])
    """

    def __init__(self, data, voxel_size=1.0, origin=None, direction=None, space: Space | str = "unnamed",
                 orientation: str | None = None, unit: str | None = None):
        if data.ndim != 3:
            raise InputError(f"a Volume is 3-D; got an array of shape {data.shape}", field="data")
        self.data = data
        self.voxel_size = as_voxel_size(voxel_size)
        self.origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64).reshape(3)
        self.direction = np.eye(3) if direction is None else np.asarray(direction, np.float64).reshape(3, 3)
        if not np.allclose(self.direction.T @ self.direction, np.eye(3), atol=1e-5):
            raise InputError("direction matrix is not orthonormal", field="direction")
        sp = as_space(space, "unnamed", unit)
        if orientation is not None:
            orientation = validate_orientation(orientation)
            if sp.orientation is not None and sp.orientation != orientation:
                raise InputError(
                    f"orientation {orientation!r} contradicts space {sp.name!r}'s {sp.orientation!r}",
                    field="orientation")
            sp = Space(sp.name, sp.unit, orientation)
        self.space = sp
        self.atlas = None

    # -- geometry -------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def unit(self) -> str:
        return self.space.unit

    @property
    def orientation(self) -> str | None:
        return self.space.orientation

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, tuple(self.voxel_size), self.space, tuple(self.origin), self.direction)

    @property
    def affine(self) -> np.ndarray:
        """4x4 index -> physical matrix."""
        return grid_affine(self.voxel_size, self.origin, self.direction)

    def index_to_physical(self, index) -> np.ndarray:
        """Physical coordinates (space unit) of voxel indices (``(N, 3)``; may be fractional)."""
        return self.grid.index_to_physical(index)

    def physical_to_index(self, points) -> np.ndarray:
        """Continuous voxel indices of physical points; round to get the nearest voxel."""
        return self.grid.physical_to_index(points)

    def numpy(self) -> np.ndarray:
        """The data as an in-memory numpy array (computes a dask array)."""
        d = self.data
        return np.asarray(d.compute() if hasattr(d, "compute") else d)

    def with_data(self, data, space: Space | None = None) -> "Volume":
        """Same geometry, new array of the same shape."""
        if tuple(data.shape) != self.shape:
            raise InputError(f"new data shape {data.shape} differs from volume shape {self.shape}")
        return Volume(data, self.voxel_size, self.origin, self.direction, space or self.space)

    def in_unit(self, unit: str, space: Space | str | None = None) -> "Volume":
        """The same voxels expressed in another unit (a new space; no resampling)."""
        from .spaces import unit_scale

        f = unit_scale(self.unit, unit)
        sp = as_space(space if space is not None else Space(self.space.name, unit, self.orientation))
        return Volume(self.data, self.voxel_size * f, self.origin * f, self.direction, sp)

    def __repr__(self) -> str:
        return (f"Volume(shape={self.shape}, dtype={self.dtype}, voxel_size={tuple(float(v) for v in self.voxel_size)}, "
                f"space={self.space})")

    # -- reorientation ----------------------------------------------------------
    def reorient(self, code: str, space: Space | str | None = None) -> "Volume":
        """Permute and flip axes to orientation ``code`` exactly (no resampling).

        The result has origin 0 and identity direction in a new space (default
        name ``<space>_<code>``); :meth:`reorient_transform` maps points across.
        """
        if self.orientation is None:
            raise InputError(f"volume in space {self.space.name!r} has no orientation code; "
                             "pass orientation= when reading it", field="orientation")
        perm, flip = orientation_mapping(self.orientation, code)
        data = self.data.transpose(perm)
        sl = tuple(slice(None, None, -1) if f else slice(None) for f in flip)
        data = data[sl]
        target = self._reoriented_space(code, space)
        return Volume(data, self.voxel_size[list(perm)], space=target)

    def _reoriented_space(self, code, space):
        code = validate_orientation(code)
        if space is None:
            return Space(f"{self.space.name}_{code}", self.unit, code)
        sp = as_space(space, unit=self.unit)
        return Space(sp.name, sp.unit, code)

    def with_anatomical_direction(self, space: Space | str | None = None) -> "Volume":
        """The same voxels with the direction matrix its orientation code states (ITK's LPS world), for viewers.

        A volume read from TIFF, HDF5 or an array has the identity direction (CONVENTIONS: the code is metadata),
        so NIfTI viewers (nibabel, ITK-SNAP, napari) would label its axes L/P/S whatever the anatomy. This copy
        keeps voxel (0, 0, 0) where it is and turns the axes to the anatomical directions: a NIfTI of it is
        labelled right. Its physical frame is a different one (default space name ``<space>_anatomical``), so
        transforms of the original space do not apply to it unchanged: write it for viewing, register and map
        points in the original frame.

        Example
        -------
        >>> v = Volume(np.zeros((4, 5, 6), np.uint8), 25.0, space="ccf", orientation="asr")
        >>> v.with_anatomical_direction().direction.astype(int).tolist()
        [[0, 0, 1], [1, 0, 0], [0, -1, 0]]
        """
        from .spaces import lps_direction

        if self.orientation is None:
            raise InputError(f"volume in space {self.space.name!r} has no orientation code: nothing says which "
                             "way its axes run", field="orientation")
        if not np.allclose(self.direction, np.eye(3), atol=1e-9):
            raise InputError("the volume's direction is not the identity: it already says where its axes run",
                             field="direction")
        sp = as_space(space, unit=self.unit) if space is not None else Space(f"{self.space.name}_anatomical",
                                                                            self.unit)
        return Volume(self.data, self.voxel_size, self.origin, lps_direction(self.orientation),
                      Space(sp.name, sp.unit, self.orientation))

    def reorient_transform(self, code: str, space: Space | str | None = None) -> Affine:
        """Affine from this volume's physical frame to that of ``self.reorient(code, space)``."""
        if self.orientation is None:
            raise InputError(f"volume in space {self.space.name!r} has no orientation code",
                             field="orientation")
        perm, flip = orientation_mapping(self.orientation, code)
        P = np.zeros((4, 4))
        P[3, 3] = 1
        n = np.asarray(self.shape, float)
        for j, (i, f) in enumerate(zip(perm, flip)):
            P[j, i] = -1.0 if f else 1.0
            P[j, 3] = (n[i] - 1) if f else 0.0
        S_new = np.diag(list(self.voxel_size[list(perm)]) + [1.0])
        M = S_new @ P @ np.linalg.inv(self.affine)
        return Affine(M, self.space, self._reoriented_space(code, space))

    # -- SimpleITK / ANTs ---------------------------------------------------------
    def to_sitk(self):
        """A SimpleITK image with the same voxel positions (physical numbers in the space's unit)."""
        import SimpleITK as sitk

        arr = self.numpy()
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        img.SetSpacing(tuple(float(v) for v in self.voxel_size))
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, image, space: Space | str = "unnamed", orientation: str | None = None,
                  scale: float = 1.0) -> "Volume":
        """Wrap a SimpleITK image; ``scale`` converts its physical numbers into the space's unit."""
        import SimpleITK as sitk

        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("only 3-D scalar images can become a Volume "
                             f"(got {image.GetDimension()}-D, {image.GetNumberOfComponentsPerPixel()} components)")
        arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        return cls(arr, np.asarray(image.GetSpacing()) * scale, np.asarray(image.GetOrigin()) * scale,
                   np.asarray(image.GetDirection()).reshape(3, 3), space, orientation)

    def to_ants(self):
        """An ANTsImage with the same voxel positions (ANTs uses this array order)."""
        import ants

        arr = self.numpy()
        if arr.dtype not in (np.uint8, np.uint32, np.float32, np.float64):
            arr = arr.astype(np.float32)
        img = ants.from_numpy(np.ascontiguousarray(arr), origin=tuple(float(v) for v in self.origin),
                              spacing=tuple(float(v) for v in self.voxel_size),
                              direction=np.asarray(self.direction, float))
        return img

    @classmethod
    def from_ants(cls, image, space: Space | str = "unnamed", orientation: str | None = None) -> "Volume":
        return cls(image.numpy(), np.asarray(image.spacing), np.asarray(image.origin),
                   np.asarray(image.direction), space, orientation)


def as_grid(reference) -> Grid:
    """The Grid of a Volume, or a Grid as it is (anything else is an InputError).

    Examples
    --------
    >>> as_grid(Volume(np.zeros((2, 3, 4)), 1.0, space="s")).shape
    (2, 3, 4)
    """
    if isinstance(reference, Grid):
        return reference
    if isinstance(reference, Volume):
        return reference.grid
    raise InputError(f"reference must be a Volume or Grid, got {type(reference).__name__}", field="reference")


def pull_transform(transform: Transform | None, moving: Space, target: Space) -> Transform | None:
    """The map ``target -> moving`` a resampling needs, whichever way ``transform`` was given (CONVENTIONS).

    ``None`` (no transform) is allowed between two spaces of the same name: the
    result is None, or the unit conversion where their units differ.

    The contract is the same for every transform: warping an image from its space through ``T``
    puts the content at ``x`` at ``T(x)``, so a transform ``moving -> target`` is inverted and one
    ``target -> moving`` is used as it is. A transform from a space to itself is a move within that
    space and follows the same rule (it is inverted). Units are part of the spaces: where the volume's
    or the grid's unit differs from the transform's end of the same name, the points are converted
    (:func:`atlasreg.transforms.base.with_ends`), never read in the wrong unit.
    """
    if transform is None:
        if moving.name != target.name:
            raise SpaceMismatchError(f"volume is in {moving.name!r}, reference in {target.name!r}: "
                                     "give the transform between them")
        return None if moving.unit == target.unit else Affine.from_units(target, moving)
    if transform.src.name == moving.name and transform.dst.name == target.name:
        return with_ends(transform.inverse(), target, moving)
    if transform.src.name == target.name and transform.dst.name == moving.name:
        return with_ends(transform, target, moving)
    raise SpaceMismatchError(
        f"transform {transform!r} links neither {moving.name!r} -> {target.name!r} nor the reverse; "
        "it cannot warp this volume into that grid")


def fill_fits(fill, dtype) -> bool:
    """True when ``dtype`` holds the number ``fill`` exactly (see :func:`check_fill`)."""
    try:
        check_fill(fill, dtype)
    except InputError:
        return False
    return True


def check_fill(fill, dtype) -> None:
    """Refuse a fill value the output dtype cannot hold exactly (e.g. -1, NaN or 70000 into uint16).

    >>> check_fill(0, np.uint16)
    >>> check_fill(-1, np.uint16)
    Traceback (most recent call last):
    ...
    atlasreg.errors.InputError: field 'fill': fill value -1 cannot be stored in the output dtype uint16 (range 0 to 65535, whole numbers); give a fill in that range or another output dtype
    """
    dt = np.dtype(dtype)
    try:
        f = float(fill)
    except (TypeError, ValueError):
        raise InputError(f"fill value {fill!r} is not a number", field="fill") from None
    if dt.kind in "iub":
        info = (0, 1) if dt.kind == "b" else (np.iinfo(dt).min, np.iinfo(dt).max)
        if not (np.isfinite(f) and f == np.floor(f) and info[0] <= f <= info[1]):
            raise InputError(f"fill value {fill!r} cannot be stored in the output dtype {dt} (range {info[0]} to "
                             f"{info[1]}, whole numbers); give a fill in that range or another output dtype",
                             field="fill")
    elif dt.kind == "f":
        if np.isfinite(f) and not np.isfinite(dt.type(f)):
            raise InputError(f"fill value {fill!r} overflows the output dtype {dt}", field="fill")


def resolve_interpolation(dtype, interpolation: str = "auto") -> str:
    """``"auto"`` -> ``"nearest"`` for label volumes (bool, 32/64-bit integers), ``"linear"`` otherwise.

    Any other value passes through (checked where it is used).

    Examples
    --------
    >>> resolve_interpolation(np.uint32), resolve_interpolation(np.float32), resolve_interpolation(np.uint32, "linear")
    ('nearest', 'linear', 'linear')
    """
    if interpolation != "auto":
        return interpolation
    dt = np.dtype(dtype)
    if dt == np.bool_ or (dt.kind in "iu" and dt.itemsize >= 4):
        return "nearest"
    return "linear"


def resample(volume: Volume, pull: Transform | None, grid: Grid, interpolation: str = "linear",
             fill: float = 0.0, dtype=None, block_voxels: int = 1_000_000, progress=None) -> np.ndarray:
    """Sample ``volume`` at ``pull(p)`` for every voxel centre ``p`` of ``grid``; returns the array.

    ``pull`` maps ``grid.space`` -> ``volume.space`` (``None`` for the same space).
    Works in slabs of about ``block_voxels`` output voxels (whole planes of axis 0), so memory is bounded
    by the input array, the output array and a few ``(block_voxels, 3)`` float64 arrays of points per slab
    (24 MB each at the default). The slab size does not change any value: every voxel gets the same arithmetic.
    """
    if interpolation not in ("linear", "nearest"):
        raise InputError("interpolation must be 'linear' or 'nearest'", field="interpolation")
    labels = volume.data if isinstance(volume.data, LabelArray) else None
    if labels is not None and interpolation == "nearest":
        # ids = table[index]: sample the uint16 index, then look the ids up (the same voxels, without
        # materialising the ids: 2 bytes a voxel instead of 4-8). 65535 is no index (tables are shorter): fill.
        ids = labels.table.astype(labels.dtype)
        out_dtype = np.dtype(dtype) if dtype is not None else ids.dtype
        check_fill(fill, out_dtype)
        at = resample(Volume(labels.index, volume.voxel_size, volume.origin, volume.direction, volume.space), pull,
                      grid, "nearest", fill=65535, block_voxels=block_voxels, progress=progress)
        lut = np.full(65536, fill, dtype=out_dtype)
        lut[:len(ids)] = ids
        return lut[at]
    src = volume.numpy()
    if src.dtype == np.bool_:
        src = src.astype(np.uint8)
    if interpolation == "linear" and src.dtype not in (np.float32, np.float64):
        work = src.astype(np.float32)
    else:
        work = src
    out_dtype = np.dtype(dtype) if dtype is not None else (src.dtype if interpolation == "nearest" else
                                                          (np.float32 if work.dtype == np.float32 else work.dtype))
    check_fill(fill, out_dtype)
    if interpolation == "nearest" and work.dtype != out_dtype and not fill_fits(fill, work.dtype):
        work = work.astype(out_dtype)  # e.g. NaN fill for integer data sampled into a float output
    shape = tuple(grid.shape)
    out = np.empty(shape, dtype=out_dtype)
    to_index = np.linalg.inv(volume.affine)
    gaff = grid.affine
    plane = shape[1] * shape[2]
    per_slab = max(1, block_voxels // max(1, plane))
    jk = np.indices(shape[1:], dtype=np.float64).reshape(2, -1).T
    for start in range(0, shape[0], per_slab):
        stop = min(shape[0], start + per_slab)
        idx = np.empty((stop - start, plane, 3), np.float64)  # (i, j, k) of the slab's voxels, C order
        idx[:, :, 0] = np.arange(start, stop, dtype=np.float64)[:, None]
        idx[:, :, 1:] = jk
        pts = apply_affine(gaff, idx.reshape(-1, 3))
        del idx
        if pull is not None:
            pts = pull.map_points(pts)
        vals = _sample_at(work, to_index, pts, interpolation, fill)
        del pts
        if np.issubdtype(out_dtype, np.integer) and interpolation == "linear":
            info = np.iinfo(out_dtype)
            vals = np.clip(np.rint(vals), info.min, info.max)
        out[start:stop] = vals.reshape((stop - start,) + shape[1:]).astype(out_dtype, copy=False)
        if progress is not None:
            progress(stop - start)
    return out


def _sample_at(work: np.ndarray, to_index: np.ndarray, points: np.ndarray, interpolation: str, fill) -> np.ndarray:
    """``work`` at physical ``points`` (``to_index``: physical -> index): float64 values for linear, ``work``'s
    dtype for nearest; points outside the array, or NaN, get ``fill``."""
    cidx = np.ascontiguousarray(apply_affine(to_index, points))
    cidx[~np.isfinite(cidx)] = -1e9  # NaN from a field's outside -> fill value
    vals = np.empty(len(cidx), dtype=work.dtype if interpolation == "nearest" else np.float64)
    if interpolation == "linear":
        K.sample_linear(work, cidx, float(fill), vals)
    else:
        K.sample_nearest(work, cidx, work.dtype.type(fill), vals)
    return vals


def sample_points(volume: Volume, points, fill: float = 0.0) -> np.ndarray:
    """The values of ``volume`` at physical ``points`` (``(N, 3)``, in its space): trilinear, float64, ``fill``
    outside the array (``fill=np.nan`` marks them); the same arithmetic as :func:`resample` at those points.

    Examples
    --------
    >>> v = Volume(np.arange(8, dtype=np.float32).reshape(2, 2, 2), voxel_size=10.0)
    >>> sample_points(v, [[0, 0, 5.0], [5, 5, 5.0], [100, 0, 0]]).tolist()
    [0.5, 3.5, 0.0]
    """
    src = volume.numpy()
    work = src if src.dtype in (np.float32, np.float64) else src.astype(np.float32)
    pts = as_points(points)
    return _sample_at(work, np.linalg.inv(volume.affine), pts, "linear", fill)


def warp(volume: Volume, transform: Transform | None, reference, interpolation: str = "linear",
         fill: float = 0.0, dtype=None) -> Volume:
    """Resample ``volume`` into the grid of ``reference`` through ``transform`` in one resampling.

    ``transform`` may run either way between the two spaces: atlasreg picks the
    direction a pull-back needs (CONVENTIONS), so no flag says which to invert.

    Examples
    --------
    >>> v = Volume(np.arange(27, dtype=np.float32).reshape(3, 3, 3), space="a")
    >>> T = Affine.from_translation([1, 0, 0], src="a", dst="b")
    >>> w = warp(v, T, Grid((3, 3, 3), (1, 1, 1), Space("b")))
    >>> float(w.data[1, 0, 0]) == float(v.data[0, 0, 0])
    True
    """
    grid = as_grid(reference)
    pull = pull_transform(transform, volume.space, grid.space)
    data = resample(volume, pull, grid, interpolation, fill, dtype)
    return Volume(data, grid.spacing, grid.origin, grid.direction, grid.space)
