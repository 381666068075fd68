"""Named coordinate spaces: units and anatomical orientation codes.

Orientation codes follow BrainGlobe's *origin* convention: one letter per array
axis naming the side where index 0 lies (``psl``: axis 0 starts posterior,
axis 1 superior, axis 2 left). NIfTI-style codes name the direction each axis
*points toward* (``psl`` is ``AIR``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Size of one unit in micrometres. Exact powers of ten.
_UNIT_IN_UM = {"nm": 1e-3, "um": 1.0, "mm": 1e3}
#: Names of a space's three axes in coordinate order, which is array-axis order (axis 0 first: ``z`` names
#: array axis 0, NGFF's usual names), as atlasreg writes them to OME-NGFF: volumes (OME-Zarr ``axes``) and
#: transforms (``coordinateSystems``) alike, so a volume and a transform in one space name each axis the same way.
AXIS_NAMES = ("z", "y", "x")
_UNIT_ALIASES = {
    "nm": "nm", "nanometer": "nm", "nanometers": "nm", "nanometre": "nm", "nanometres": "nm",
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometer": "um",
    "micrometers": "um", "micrometre": "um", "micrometres": "um",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
}

_OPPOSITE = {"a": "p", "p": "a", "s": "i", "i": "s", "l": "r", "r": "l"}
_AXIS_OF = {"a": 0, "p": 0, "s": 1, "i": 1, "l": 2, "r": 2}
#: The anatomical side each orientation letter names: the one home of these words (NGFF's RFC-4 orientations,
#: MouseLight's axis descriptions, BrainGlobe 3's axes and atlasreg's own messages all use them).
SIDE_NAMES = {"a": "anterior", "p": "posterior", "s": "superior", "i": "inferior", "l": "left", "r": "right"}
_SIDE_LETTER = {**{w: k for k, w in SIDE_NAMES.items()}, "dorsal": "s", "ventral": "i"}


def side_letter(word: str) -> str | None:
    """The orientation letter of an anatomical side's name (``dorsal``/``ventral`` are ``s``/``i``), else None.

    >>> side_letter("Anterior"), side_letter("ventral"), side_letter("caudal")
    ('a', 'i', None)
    """
    return _SIDE_LETTER.get(str(word).strip().lower())


def side_name(letter: str, dorsal_ventral: bool = False) -> str:
    """The name of the side an orientation letter names; ``dorsal_ventral`` says dorsal/ventral for s/i.

    >>> side_name("p"), side_name("s", dorsal_ventral=True)
    ('posterior', 'dorsal')
    """
    if dorsal_ventral and letter in ("s", "i"):
        return "dorsal" if letter == "s" else "ventral"
    return SIDE_NAMES[letter]


def opposite_side(letter: str) -> str:
    """The letter of the opposite side (``a`` -> ``p``)."""
    return _OPPOSITE[letter]


def anatomical_axis(letter: str) -> int:
    """Which anatomical axis a side lies on: 0 anterior-posterior, 1 superior-inferior, 2 left-right (the order
    of the Allen CCF's axes, ``asr``).

    >>> anatomical_axis("i")
    1
    """
    return _AXIS_OF[letter]


def rfc4_orientation(letter: str) -> str:
    """The NGFF (RFC-4) anatomical orientation of an axis whose index 0 lies on the side ``letter`` names.

    >>> rfc4_orientation("a")
    'anterior-to-posterior'
    """
    return f"{SIDE_NAMES[letter]}-to-{SIDE_NAMES[_OPPOSITE[letter]]}"


def letter_of_rfc4(value: str) -> str | None:
    """The orientation letter of an RFC-4 value (``"anterior-to-posterior"`` -> ``a``; ``"dorsal-to-ventral"``
    -> ``s``), or None when it does not name two opposite sides.

    >>> letter_of_rfc4("left-to-right"), letter_of_rfc4("left-to-anterior")
    ('l', None)
    """
    first, sep, second = str(value).partition("-to-")
    a, b = side_letter(first), side_letter(second)
    return a if sep and a is not None and b == _OPPOSITE[a] else None


def as_points(points, name: str = "points") -> np.ndarray:
    """Validate and return an ``(N, 3)`` float64 array (a single ``(3,)`` point is accepted)."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric (N, 3) coordinates: {exc}", field=name) from None
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{name} must have shape (N, 3), got {arr.shape}", field=name)
    return arr


def as_voxel_size(value, *, path=None, field: str = "voxel_size", ndim: int = 3) -> np.ndarray:
    """Validate a voxel size (or any per-axis length, e.g. a resolution) and return it as ``ndim`` floats.

    The one check every reader and function taking a voxel size uses.

    Parameters
    ----------
    value : number or sequence of numbers
        One length (isotropic: broadcast to every axis) or ``ndim`` lengths, one per array axis.
    path : str or Path, optional
        The file the value came from, named in the error.
    field : str
        The argument or file field the value came from, named in the error.
    ndim : int
        How many axes.

    Returns
    -------
    numpy.ndarray
        A new float64 array of shape ``(ndim,)``, every value finite and > 0.

    Raises
    ------
    InputError
        When ``value`` is not one number or ``ndim`` numbers (text and booleans are not numbers), or any of
        them is NaN, infinite, zero or negative; the error names ``path`` and ``field`` and shows the value.

    Examples
    --------
    >>> as_voxel_size(25)
    array([25., 25., 25.])
    >>> as_voxel_size((50, 40, 40)).tolist()
    [50.0, 40.0, 40.0]
    >>> as_voxel_size((50, 0, 40), path="brain.tif")
    Traceback (most recent call last):
    ...
    atlasreg.errors.InputError: brain.tif: field 'voxel_size': voxel size must be finite and positive, got (50, 0, 40)
    """
    def bad(what: str) -> InputError:
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        return InputError(f"voxel size must be {what}, got {shown!r}", path=path, field=field)

    shape_rule = f"one positive number or {ndim} (one per array axis)"
    raw = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
    items = raw.reshape(-1) if raw.ndim <= 1 else None
    if items is None or items.size not in (1, ndim):
        raise bad(shape_rule)
    if raw.dtype.kind in "bUSO" and any(isinstance(v, (bool, np.bool_, str, bytes)) for v in items.tolist()):
        raise bad(shape_rule + "; text and true/false are not numbers")
    try:
        vs = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise bad(shape_rule) from None
    with np.errstate(invalid="ignore"):
        if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
            raise bad("finite and positive")
    return np.broadcast_to(vs, (ndim,)).copy()


def apply_affine(matrix, points) -> np.ndarray:
    """``points @ matrix[:3, :3].T + matrix[:3, 3]`` for points of shape ``(..., 3)``, without BLAS.

    An ``(N, 3) @ (3, 3)`` product goes to the BLAS, whose threads spin for a product this thin: on a loaded
    machine 1M points took 0.4-1 s that way and 0.12 s here (same sums, same order per point).

    >>> apply_affine(np.diag([2.0, 3.0, 4.0, 1.0]), [[1.0, 1.0, 1.0]])
    array([[2., 3., 4.]])
    """
    m = np.asarray(matrix, dtype=np.float64)
    return np.einsum("...j,kj->...k", np.asarray(points, dtype=np.float64), m[:3, :3]) + m[:3, 3]


def normalize_unit(unit: str) -> str:
    """Return the canonical unit name (``"nm"``, ``"um"`` or ``"mm"``).

    >>> normalize_unit("microns")
    'um'
    """
    if not isinstance(unit, str) or unit.strip().lower() not in _UNIT_ALIASES:
        raise InputError(
            f"unknown unit {unit!r}; use one of 'nm', 'um' (µm, microns) or 'mm'", field="unit"
        )
    return _UNIT_ALIASES[unit.strip().lower()]


def unit_scale(src_unit: str, dst_unit: str) -> float:
    """Factor that converts a length in ``src_unit`` into ``dst_unit``.

    >>> unit_scale("nm", "um")
    0.001
    """
    s, d = normalize_unit(src_unit), normalize_unit(dst_unit)
    if s == d:
        return 1.0
    # Ratios of exact powers of ten, computed as such to avoid 1e-3/1e3 rounding.
    exponents = {"nm": -3, "um": 0, "mm": 3}
    return 10.0 ** (exponents[s] - exponents[d])


def validate_orientation(code: str) -> str:
    """Check a BrainGlobe origin code such as ``"psl"``; return it lower-case."""
    if not isinstance(code, str) or len(code) != 3:
        raise InputError(
            f"orientation code {code!r} must be three letters from a/p, s/i, l/r, one per axis "
            "(BrainGlobe origin convention, e.g. 'psl')",
            field="orientation",
        )
    c = code.lower()
    if any(ch not in _AXIS_OF for ch in c) or sorted(_AXIS_OF[ch] for ch in c) != [0, 1, 2]:
        raise InputError(
            f"orientation code {code!r} is not valid: it needs exactly one of a/p, one of s/i and one "
            "of l/r (e.g. 'psl', 'asr')",
            field="orientation",
        )
    return c


def origin_to_nifti(code: str) -> str:
    """Convert a BrainGlobe origin code to the NIfTI-style "points toward" code.

    >>> origin_to_nifti("psl")
    'AIR'
    """
    c = validate_orientation(code)
    return "".join(_OPPOSITE[ch] for ch in c).upper()


def nifti_to_origin(code: str) -> str:
    """Convert a NIfTI-style "points toward" code (``RAS``, ``AIR``) to a BrainGlobe origin code.

    >>> nifti_to_origin("AIR")
    'psl'
    """
    if not isinstance(code, str) or len(code) != 3:
        raise InputError(f"NIfTI orientation code {code!r} must be three letters", field="orientation")
    return validate_orientation("".join(_OPPOSITE.get(ch, "?") for ch in code.lower()))


def lps_direction(code: str) -> np.ndarray:
    """The 3x3 direction matrix (ITK's LPS world, one column per array axis) that an orientation code states.

    Column ``j`` is the unit vector axis ``j`` runs along: from the side its letter names toward the opposite
    side (``a`` runs toward posterior, +y in LPS). nibabel's ``aff2axcodes`` of the NIfTI this direction goes into
    reads ``origin_to_nifti(code)``.

    >>> lps_direction("asr").astype(int).tolist()
    [[0, 0, 1], [1, 0, 0], [0, -1, 0]]
    """
    toward = {"l": (0, 1.0), "r": (0, -1.0), "p": (1, 1.0), "a": (1, -1.0), "s": (2, 1.0), "i": (2, -1.0)}
    D = np.zeros((3, 3))
    for j, ch in enumerate(validate_orientation(code)):
        row, sign = toward[_OPPOSITE[ch]]
        D[row, j] = sign
    return D


def orientation_mapping(src_code: str, dst_code: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """How the axes of ``dst_code`` come from those of ``src_code``.

    Returns ``(perm, flip)``: destination axis ``j`` is source axis ``perm[j]``,
    reversed where ``flip[j]``.
    """
    s, d = validate_orientation(src_code), validate_orientation(dst_code)
    perm, flip = [], []
    for ch in d:
        i = next(k for k, sc in enumerate(s) if _AXIS_OF[sc] == _AXIS_OF[ch])
        perm.append(i)
        flip.append(s[i] != ch)
    return tuple(perm), tuple(flip)


def reorient_points(points: np.ndarray, src_code: str, dst_code: str, shape, voxel_size) -> np.ndarray:
    """Move physical points (origin 0, identity direction) from one orientation code to another.

    ``shape`` and ``voxel_size`` describe the volume in the *source* orientation.
    A flipped axis of ``n`` voxels with spacing ``s`` maps ``x`` to ``(n - 1) * s - x``
    (voxel centres stay voxel centres; CONVENTIONS).

    >>> reorient_points(np.array([[500., 0., 200.]]), "psl", "asl", (270, 193, 271), (50, 40, 40))
    array([[12950.,     0.,   200.]])
    """
    pts = np.asarray(points, dtype=float)
    perm, flip = orientation_mapping(src_code, dst_code)
    shape = np.asarray(shape, dtype=float)
    vs = np.asarray(voxel_size, dtype=float)
    out = pts[:, list(perm)].copy()
    for j, (i, f) in enumerate(zip(perm, flip)):
        if f:
            out[:, j] = (shape[i] - 1) * vs[i] - out[:, j]
    return out


@dataclass(frozen=True)
class Space:
    """A named coordinate space with a length unit and, where known, an orientation code.

    Parameters
    ----------
    name : str
        Identifier used by transforms and the SpaceGraph (``"ccf"``, ``"sample"``).
    unit : str
        ``"nm"``, ``"um"`` or ``"mm"`` (aliases such as ``"microns"`` accepted).
    orientation : str, optional
        BrainGlobe origin code of the space's axes (``"asr"`` for the Allen CCF).

    Examples
    --------
    >>> Space("ccf", "microns", "ASR")
    Space(name='ccf', unit='um', orientation='asr')
    """

    name: str
    unit: str = "um"
    orientation: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"space name must be a non-empty string, got {self.name!r}", field="space")
        object.__setattr__(self, "unit", normalize_unit(self.unit))
        if self.orientation is not None:
            object.__setattr__(self, "orientation", validate_orientation(self.orientation))

    def __str__(self) -> str:
        return f"{self.name} [{self.unit}{', ' + self.orientation if self.orientation else ''}]"


def as_space(space: "Space | str | None", default_name: str = "unnamed", unit: str | None = None) -> Space:
    """Coerce a name or Space into a Space (a bare name means micrometres unless ``unit`` says otherwise)."""
    if isinstance(space, Space):
        if unit is not None and normalize_unit(unit) != space.unit:
            raise InputError(
                f"space {space.name!r} is in {space.unit}, but unit={unit!r} was given", field="unit"
            )
        return space
    if space is None:
        space = default_name
    return Space(str(space), unit if unit is not None else "um")


def resolve_space(given: "Space | str | None", recorded: "Space | None", default_name: str = "unnamed",
                  what: str = "space") -> Space:
    """The space ``given`` names, with the unit a file, a graph or a volume records for it.

    The one rule at every boundary (warp, :class:`~atlasreg.graph.SpaceGraph`,
    transform loading): a bare name takes the ``recorded`` unit and orientation
    (it never silently means µm where a unit is recorded); a :class:`Space` is
    taken as given, and where its unit differs from the recorded one the caller
    converts (:func:`unit_scale`). Orientations that contradict each other are an
    error: no unit change can reconcile them.

    Examples
    --------
    >>> resolve_space("em", Space("em", "nm"))
    Space(name='em', unit='nm', orientation=None)
    >>> resolve_space(Space("em", "um"), Space("em", "nm")).unit
    'um'
    """
    if given is None:
        return recorded if recorded is not None else Space(default_name)
    if isinstance(given, Space):
        if (recorded is not None and given.name == recorded.name and given.orientation and recorded.orientation
                and given.orientation != recorded.orientation):
            from .errors import SpaceMismatchError

            raise SpaceMismatchError(
                f"{what} {given.name!r} has orientation {given.orientation!r} here but {recorded.orientation!r} "
                "where it is recorded; reorient one of them first")
        return given
    name = str(given)
    if not name:
        raise InputError(f"{what} name must be a non-empty string", field="space")
    if recorded is None:
        return known_space(name) or Space(name)
    return Space(name, recorded.unit, recorded.orientation if recorded.name == name else None)


#: Spaces whose unit and orientation the field agrees on, so naming them is enough
#: (``read_swc(path, space="ccf", voxel_size=25.0)`` needs no unit). Unknown names
#: never get a guessed unit.
KNOWN_SPACES: dict[str, Space] = {
    "ccf": Space("ccf", "um", "asr"),  # Allen CCFv3: axes AP, DV, LR in micrometres
}


def known_space(name: str) -> Space | None:
    """The registered :data:`KNOWN_SPACES` entry for ``name``, or None."""
    return KNOWN_SPACES.get(name)
