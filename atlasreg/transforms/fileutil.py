"""What every transform-file reader shares: suffixes, the existence check, ITK's error text, unit wrapping.

ITK and ANTs files carry no unit: :func:`wrap_units` builds a file's chain in
the file's unit and converts to the declared spaces' units at both ends.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..spaces import Space
from .base import Affine, Sequence, Transform

#: Suffixes SimpleITK reads and writes as transform files.
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat")
#: Suffixes read and written as displacement-field images (vectors in physical units).
FIELD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def suffix_of(path) -> str:
    name = Path(path).name.lower()
    for s in FIELD_SUFFIXES + TRANSFORM_SUFFIXES + (".json",):
        if name.endswith(s):
            return s
    return Path(name).suffix


def existing_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError("transform file does not exist", path=p)
    if p.is_dir():
        raise InputError("expected a transform file, found a folder", path=p)
    return p


def chain_space(src: Space, dst: Space, i: int, unit: str) -> Space:
    # Interior spaces of a chain read from one file: named after its ends, never user-visible ends.
    return Space(f"{src.name}->{dst.name}#{i}", unit)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
def wrap_units(build, src: Space, dst: Space, in_unit: str, out_unit: str, path) -> Transform:
    """Build the file's chain in its own units and convert to ``src``/``dst`` units at the ends.

    ``build(s, d)`` returns the file's transform between spaces ``s`` (unit
    ``in_unit``) and ``d`` (unit ``out_unit``) named like ``src``/``dst``.
    """
    s_file = src if src.unit == in_unit else Space(f"{src.name}@{in_unit}", in_unit)
    d_file = dst if dst.unit == out_unit else Space(f"{dst.name}@{out_unit}", out_unit)
    core = build(s_file, d_file)
    steps: list[Transform] = []
    if s_file is not src:
        steps.append(Affine.from_units(src, s_file))
    steps.append(core)
    if d_file is not dst:
        steps.append(Affine.from_units(d_file, dst))
    if len(steps) == 1:
        return core
    seq = Sequence(steps)
    folded = seq.simplified()
    if len(folded) == 1 and isinstance(folded[0], Affine):
        return Affine(folded[0].matrix, src, dst)
    return seq


def itk_error_text(exc: Exception) -> str:
    """The informative sentence of an ITK exception (its ``ITK ERROR: Class(0x..): message`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "ITK ERROR:" in ln:
            msg = ln.split("ITK ERROR:", 1)[1]
            return msg.split("): ", 1)[1].strip() if "): " in msg else msg.strip()
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
