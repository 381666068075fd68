"""A light-sheet-like volume made from a real EM stack, with a KNOWN EM → light-sheet transform.

No public data set has an EM block and a light-sheet volume of the same
tissue. To measure what intensity refinement recovers, this module builds the
light-sheet side from the EM itself: blur with an anisotropic Gaussian PSF
(axial σ larger, as in light-sheet), resample through a known affine (small
rotation, scale, shift) onto a coarser, anisotropic grid in another unit,
change the contrast (inversion and gamma) and add noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_space, as_voxel_size, unit_scale
from ..transforms.base import Affine
from ..volume import Grid, Volume, warp


@dataclass
class SyntheticPair:
    """The light-sheet-like volume and the exact EM → light-sheet affine that made it."""

    lm: Volume
    truth: Affine
    params: dict


def known_affine(em: Volume, lm_space: Space, rotation_deg=(1.0, 0.5, 3.0), scale: float = 1.03,
                 shift=(30.0, -40.0, 25.0)) -> Affine:
    """EM → LM: rotate (degrees about axes 0, 1, 2) and scale about the block centre, shift (EM unit), convert units."""
    c = em.index_to_physical((np.asarray(em.shape, float)[None] - 1) / 2)[0]
    R = Affine.from_rotation(rotation_deg).matrix[:3, :3]
    M = np.eye(4)
    M[:3, :3] = scale * R
    M[:3, 3] = c - scale * R @ c + np.asarray(shift, float)
    u = unit_scale(em.unit, lm_space.unit)
    return Affine(np.diag([u, u, u, 1.0]) @ M, em.space, lm_space)


def synthetic_lm_pair(em: Volume, lm_voxel_size=(75.0, 24.0, 24.0), psf_sigma=(75.0, 24.0, 24.0), *,
                      lm_space: Space | str = Space("lm", "um"), rotation_deg=(1.0, 0.5, 3.0), scale: float = 1.03,
                      shift=(30.0, -40.0, 25.0), invert: bool = True, gamma: float = 0.7, noise: float = 0.05,
                      seed: int = 0) -> SyntheticPair:
    """Make a light-sheet-like volume from the EM volume ``em`` through a known affine.

    Parameters
    ----------
    em : Volume
        Real EM (e.g. the ISBI 2012 stack, 4×4×50 nm).
    lm_voxel_size, psf_sigma : 3 floats, in the EM unit
        Voxel size of the light-sheet grid and σ of the Gaussian PSF per axis
        (axial larger than lateral).
    lm_space : Space
        Space (and unit) of the light-sheet volume; default ``lm`` in µm.
    rotation_deg, scale, shift
        The known transform (see :func:`known_affine`); shift in the EM unit.
    invert, gamma, noise
        Contrast change: normalise to 0..1, invert, raise to ``gamma``, add
        Gaussian noise of σ ``noise``; stored as uint16 (100 + 1000 · value).

    Returns
    -------
    SyntheticPair
        ``.lm`` (uint16 Volume covering the transformed EM box), ``.truth``
        (Affine EM → LM).

    Examples
    --------
    >>> em = Volume(np.random.default_rng(0).random((12, 64, 64)).astype(np.float32), (50, 4, 4),
    ...             space=Space("em", "nm"))
    >>> pair = synthetic_lm_pair(em, lm_voxel_size=(100, 16, 16), psf_sigma=(100, 16, 16))
    >>> pair.lm.unit, pair.truth.src.name, pair.truth.dst.name
    ('um', 'em', 'lm')
    """
    from scipy.ndimage import gaussian_filter

    lm_space = as_space(lm_space)
    if lm_space.name == em.space.name:
        raise InputError("the light-sheet space needs a name of its own", field="lm_space")
    vs = as_voxel_size(lm_voxel_size, field="lm_voxel_size")
    sig = np.broadcast_to(np.asarray(psf_sigma, float), (3,))
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise InputError(f"psf_sigma must be finite and non-negative, got {psf_sigma!r}", field="psf_sigma")
    truth = known_affine(em, lm_space, rotation_deg, scale, shift)
    a = em.numpy().astype(np.float32)
    blurred = Volume(gaussian_filter(a, sig / em.voxel_size, mode="nearest"), em.voxel_size, em.origin,
                     em.direction, em.space)
    # the light-sheet grid covers the transformed EM box
    g = em.grid
    corners = np.array([[i, j, k] for i in (-0.5, g.shape[0] - 0.5) for j in (-0.5, g.shape[1] - 0.5)
                        for k in (-0.5, g.shape[2] - 0.5)])
    box = truth.map_points(em.index_to_physical(corners))
    u = unit_scale(em.unit, lm_space.unit)
    lvs = vs * u
    lo = box.min(0)
    shape = tuple(int(n) for n in np.floor((box.max(0) - lo) / lvs).astype(int))
    grid = Grid(shape, tuple(lvs), lm_space, tuple(lo + lvs / 2))
    fill = float(np.mean(a))
    img = warp(blurred, truth, grid, fill=fill).numpy()
    lo_p, hi_p = np.percentile(img, [0.5, 99.5])
    x = np.clip((img - lo_p) / max(hi_p - lo_p, 1e-12), 0, 1)
    if invert:
        x = 1.0 - x
    x = x ** float(gamma)
    x = x + np.random.default_rng(seed).normal(0.0, float(noise), x.shape)
    data = np.clip(np.rint(100 + 1000 * x), 0, 65535).astype(np.uint16)
    params = {"lm_voxel_size": vs.tolist(), "psf_sigma": sig.tolist(), "unit": em.unit,
              "rotation_deg": list(np.broadcast_to(np.asarray(rotation_deg, float), (3,))), "scale": float(scale),
              "shift": list(np.asarray(shift, float)), "invert": bool(invert), "gamma": float(gamma),
              "noise": float(noise), "seed": int(seed)}
    return SyntheticPair(Volume(data, lvs, grid.origin, None, lm_space), truth, params)
