"""A small, deterministic multi-scale phantom with known ground truth at every scale.

What :func:`make_phantom` builds (all from one seed, in a few seconds):

- an **atlas** (space ``phantom_atlas``, µm, orientation ``asr`` like the CCF): a brain-like template
  image, an annotation with a dozen regions named and numbered as in the Allen ontology, a
  hemisphere mask and the tiny structure tree;
- a **sample** (space ``phantom_sample``, µm, orientation ``psl`` like the real light-sheet brain):
  the same anatomy seen through another contrast, with a bias field and noise, at another voxel
  size, moved by a known affine plus a smooth displacement;
- an **EM block** (space ``phantom_em``, nm) inside the sample's left CA3, related to the sample by
  a known similarity with section compression and a gentle bend; landmarks (cell somata) whose
  light-microscopy positions carry a realistic localisation error; synapses to carry across;
- a few **neurons** traced in the sample, and a table of detected **cells**, each with its true
  atlas position.

The anatomy is analytic (ellipsoids in atlas micrometres), so the sample is rendered at its own
resolution from the true anatomy rather than resampled from the atlas image: registering it is a
real problem with a known answer.

Example
-------
>>> from atlasreg.demo.phantom import make_phantom
>>> ph = make_phantom()
>>> ph.sample.space.name, ph.atlas_reference.space.name
('phantom_sample', 'phantom_atlas')
>>> err = ph.atlas_to_sample.map_points(ph.cells_atlas) - ph.cells_sample
>>> float(abs(err).max()) < 1e-6
True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from ..spaces import Space
from ..transforms.base import Affine, Sequence, Transform
from ..transforms.field import DisplacementField
from ..volume import Grid, Volume

ATLAS = Space("phantom_atlas", "um", "asr")
SAMPLE = Space("phantom_sample", "um", "psl")
EM = Space("phantom_em", "nm")
_ATLAS_BENT = Space("phantom_atlas_bent", "um")
_EM_UM = Space("phantom_em_um", "um")
_EM_BENT = Space("phantom_em_bent", "um")

#: Extent of the atlas box (AP, DV, LR) in µm.
EXTENT = np.array([8000.0, 5600.0, 7200.0])
_MID_LR = EXTENT[2] / 2  # the midline; atlas axis 2 runs right -> left (asr)

# id, acronym, name, parent, colour (ids, names and colours as in the Allen ontology)
_STRUCTURES = [
    (997, "root", "root", None, "FFFFFF"),
    (8, "grey", "Basic cell groups and regions", 997, "BFDAE3"),
    (567, "CH", "Cerebrum", 8, "B0F0FF"),
    (688, "CTX", "Cerebral cortex", 567, "B0FFB8"),
    (695, "CTXpl", "Cortical plate", 688, "70FF70"),
    (315, "Isocortex", "Isocortex", 695, "70FF71"),
    (698, "OLF", "Olfactory areas", 695, "9AD2BD"),
    (507, "MOB", "Main olfactory bulb", 698, "9AD2BD"),
    (1089, "HPF", "Hippocampal formation", 695, "7ED04B"),
    (1080, "HIP", "Hippocampal region", 1089, "7ED04B"),
    (375, "CA", "Ammon's horn", 1080, "7ED04B"),
    (382, "CA1", "Field CA1", 375, "7ED04B"),
    (463, "CA3", "Field CA3", 375, "7ED04B"),
    (726, "DG", "Dentate gyrus", 1080, "7ED04B"),
    (623, "CNU", "Cerebral nuclei", 567, "98D6F9"),
    (477, "STR", "Striatum", 623, "98D6F9"),
    (343, "BS", "Brain stem", 8, "FF7080"),
    (1129, "IB", "Interbrain", 343, "FF7080"),
    (549, "TH", "Thalamus", 1129, "FF7080"),
    (1097, "HY", "Hypothalamus", 1129, "E64438"),
    (313, "MB", "Midbrain", 343, "FF64FF"),
    (512, "CB", "Cerebellum", 8, "F0F080"),
    (1009, "fiber tracts", "fiber tracts", 997, "CCCCCC"),
    (983, "lfbs", "lateral forebrain bundle system", 1009, "CCCCCC"),
    (776, "cc", "corpus callosum", 983, "CCCCCC"),
    (73, "VS", "ventricular systems", 997, "AAAAAA"),
    (81, "VL", "lateral ventricle", 73, "AAAAAA"),
]

# Template (atlas) intensity and sample (autofluorescence) intensity of each labelled region.
_TEMPLATE = {315: 520, 776: 860, 477: 430, 81: 90, 549: 610, 1097: 470, 382: 700, 463: 650, 726: 770,
             512: 660, 507: 560, 313: 560, 8: 490}
_SAMPLE = {315: 900, 776: 1500, 477: 760, 81: 300, 549: 1120, 1097: 820, 382: 1250, 463: 1180, 726: 1400,
           512: 1150, 507: 980, 313: 1000, 8: 860}
# Detected-cell density per region (relative).
_CELL_DENSITY = {315: 3.0, 776: 0.1, 477: 2.0, 81: 0.0, 549: 1.5, 1097: 1.0, 382: 4.0, 463: 4.0, 726: 6.0,
                 512: 5.0, 507: 3.0, 313: 1.0, 8: 0.8}


def structures_table() -> pd.DataFrame:
    """The phantom's structure tree (columns ``id, acronym, name, parent, structure_id_path, colour``).

    Example
    -------
    >>> t = structures_table(); t.set_index("acronym").loc["CA3", "id"]
    463
    """
    t = pd.DataFrame(_STRUCTURES, columns=["id", "acronym", "name", "parent", "colour"])
    parent = dict(zip(t["id"], t["parent"]))

    def path(i):
        p = [i]
        while parent[p[-1]] is not None and not pd.isna(parent[p[-1]]):
            p.append(int(parent[p[-1]]))
        return "/" + "/".join(str(x) for x in reversed(p)) + "/"

    t["structure_id_path"] = [path(i) for i in t["id"]]
    return t


# -- anatomy --------------------------------------------------------------------------------------
def _inside(y: np.ndarray, centre, semi) -> np.ndarray:
    """Normalised ellipsoid radius (< 1 inside)."""
    d = (y - np.asarray(centre, float)) / np.asarray(semi, float)
    return np.sqrt((d * d).sum(axis=1))


_CEREBRUM = ((3700.0, 2500.0, _MID_LR), (2900.0, 2000.0, 3000.0))
_CEREBELLUM = ((6600.0, 2800.0, _MID_LR), (900.0, 1500.0, 2300.0))
_OLFACTORY = ((800.0, 2700.0, _MID_LR), (650.0, 800.0, 1100.0))
_BRAINSTEM = ((5100.0, 3700.0, _MID_LR), (1800.0, 1000.0, 1200.0))


def labels_at(y: np.ndarray) -> np.ndarray:
    """Structure id of the analytic anatomy at atlas points ``y`` (µm, (N, 3)); 0 outside the brain."""
    y = np.asarray(y, float)
    lab = np.zeros(len(y), np.int32)
    lr_off = np.abs(y[:, 2] - _MID_LR)
    r_cer = _inside(y, *_CEREBRUM)
    lab[_inside(y, *_BRAINSTEM) < 1] = 313
    lab[r_cer < 1] = 8
    lab[_inside(y, *_OLFACTORY) < 1] = 507
    lab[_inside(y, *_CEREBELLUM) < 1] = 512
    lab[(r_cer < 1) & (r_cer > 0.8)] = 315
    dorsal = y[:, 1] < _CEREBRUM[0][1] + 300
    lab[(r_cer <= 0.8) & (r_cer > 0.73) & dorsal] = 776
    for side in (-1.0, 1.0):
        lr = _MID_LR + side * 1500.0
        lab[_inside(y, (2600, 2800, _MID_LR + side * 1400.0), (900, 850, 750)) < 1] = 477
        lab[_inside(y, (2700, 2050, _MID_LR + side * 850.0), (950, 180, 170)) < 1] = 81
        hpf = _inside(y, (4700, 2150, lr), (900, 600, 1000))
        in_hpf = hpf < 1
        lateral = lr_off > 1900.0
        lab[in_hpf & ~lateral] = 382
        lab[in_hpf & lateral] = 463
        lab[_inside(y, (4750, 2300, lr), (450, 250, 500)) < 1] = 726
    lab[_inside(y, (4300, 3000, _MID_LR), (800, 650, 950)) < 1] = 549
    lab[_inside(y, (4000, 3950, _MID_LR), (900, 450, 650)) < 1] = 1097
    return lab


def _smooth_noise(rng: np.random.Generator, spacing: float, amplitude: float) -> callable:
    """A smooth random scalar function of atlas µm (cubic B-spline through random nodes)."""
    n = np.ceil(EXTENT / spacing).astype(int) + 3
    nodes = ndimage.gaussian_filter(rng.standard_normal(n), 1.0)
    nodes *= amplitude / max(1e-12, np.abs(nodes).max())
    coef = ndimage.spline_filter(nodes, order=3)

    def f(y):
        idx = (np.asarray(y, float) / spacing + 1.0).T
        return ndimage.map_coordinates(coef, idx, order=3, mode="nearest", prefilter=False)

    return f


def _features(rng: np.random.Generator) -> callable:
    """Anatomical detail both images show: small nuclei scattered without symmetry, cortical layers and
    the dorsal midline fissure. Without it, smooth symmetric blobs leave rotations poorly determined."""
    centres = rng.uniform([600, 500, 500], EXTENT - [600, 500, 500], size=(60, 3))
    keep = labels_at(centres) > 0
    centres = centres[keep][:28]
    radii = rng.uniform(150, 350, len(centres))
    gains = rng.choice([-0.35, -0.25, 0.25, 0.4], len(centres))

    def f(y):
        g = np.ones(len(y))
        for c, r, k in zip(centres, radii, gains):
            d2 = ((y - c) ** 2).sum(axis=1)
            g += k * np.exp(-d2 / (2 * (r / 2) ** 2))
        r_cer = _inside(y, *_CEREBRUM)
        layer = (r_cer > 0.8) & (r_cer < 1)
        g[layer] *= 1.0 + 0.15 * np.sin((r_cer[layer] - 0.8) / 0.2 * 3 * np.pi)
        fissure = (np.abs(y[:, 2] - _MID_LR) < 70) & (y[:, 1] < _CEREBRUM[0][1]) & (r_cer > 0.7)
        g[fissure] *= 0.35
        return g

    return f


def _render(y: np.ndarray, table: dict, texture: callable, features: callable | None = None) -> np.ndarray:
    lab = labels_at(y)
    lut = np.zeros(int(max(table)) + 1, np.float32)
    for k, v in table.items():
        lut[k] = v
    val = lut[lab] * (1.0 + texture(y)).astype(np.float32)
    if features is not None:
        val *= features(y).astype(np.float32)
    return val, lab


# -- the phantom ----------------------------------------------------------------------------------
@dataclass
class Phantom:
    """Every input and every ground truth of the demo (see the module docstring)."""

    atlas_reference: Volume
    atlas_annotation: Volume
    atlas_hemispheres: Volume
    structures: pd.DataFrame
    sample: Volume
    sample_annotation: Volume          # true labels on the sample grid
    atlas_to_sample: Transform         # truth, exact (fixed -> moving)
    em: Volume
    em_to_sample: Transform            # truth, exact
    em_landmarks: pd.DataFrame         # em_x/y/z (nm), lm_x/y/z measured (µm), lm_true_x/y/z
    em_synapses: np.ndarray            # (N, 3) nm
    cells_sample: np.ndarray           # (N, 3) µm, detected cells in the sample
    cells_atlas: np.ndarray            # their true atlas positions
    neurons: list = field(default_factory=list)  # dicts: name, soma_region, swc (sample µm), atlas_xyz (truth)
    seed: int = 0

    @property
    def sample_to_atlas(self) -> Transform:
        """True sample -> atlas map (numerical inverse of :attr:`atlas_to_sample`)."""
        return self.atlas_to_sample.inverse()

    def true_regions(self, atlas_points) -> np.ndarray:
        """Structure ids of the analytic anatomy (not the voxelised annotation) at atlas points."""
        return labels_at(atlas_points)


def _displacement(rng, max_um: float, spacing: float = 400.0) -> DisplacementField:
    """A smooth random warp: Gaussian-filtered noise on a ``spacing`` grid (σ = 2 nodes), peak ``max_um``.

    Why 400 µm nodes: individual brain shape and clearing distortions vary over millimetres. A warp on a
    200 µm grid varies at the scale of the phantom's own anatomy (uniform regions a few hundred µm
    across): no image-driven method can see it, and even a 100 µm registration only matched the best
    affine on it. This warp is invisible to an affine (best affine leaves ~40-55 µm) but visible in
    the images, so the demo measures what a deformable registration adds.
    """
    shape = tuple(int(s) for s in np.ceil(EXTENT / spacing).astype(int) + 3)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(3)], axis=-1)
    u *= max_um / np.abs(u).max()
    origin = -spacing * np.ones(3)
    return DisplacementField(u, spacing=(spacing,) * 3, origin=origin, src=ATLAS, dst=_ATLAS_BENT,
                             outside="zero")


def _rotation(deg) -> np.ndarray:
    return Affine.from_rotation(deg).matrix[:3, :3]


def make_phantom(seed: int = 0, atlas_voxel: float = 100.0, sample_voxel=(100.0, 80.0, 80.0),
                 n_cells: int = 3000, n_landmarks: int = 24, n_synapses: int = 400, bias: float = 0.3,
                 noise: float = 35.0) -> Phantom:
    """Build the phantom (deterministic for a given ``seed``; about two seconds).

    Parameters
    ----------
    seed : random seed of every random choice
    atlas_voxel : atlas voxel size (µm, isotropic)
    sample_voxel : sample voxel size (µm) along its (psl) axes
    n_cells, n_landmarks, n_synapses : sizes of the point sets
    bias : strength of the sample's illumination gradient along its first axis (0: none)
    noise : standard deviation of the sample's noise

    Example
    -------
    >>> ph = make_phantom(seed=1)
    >>> ph.sample.orientation, ph.em.space.unit
    ('psl', 'nm')
    """
    rng = np.random.default_rng(seed)
    # Atlas: render at voxel centres, blurred a little (a template is an average).
    shape = tuple(int(s) for s in np.round(EXTENT / atlas_voxel).astype(int))
    grid = Grid(shape, (atlas_voxel,) * 3, ATLAS)
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    ya = grid.index_to_physical(idx)
    # Texture is anatomy (both images show it); the sample adds its own individual variation.
    anatomy = _smooth_noise(rng, 150.0, 0.2)
    features = _features(rng)
    ref, lab = _render(ya, _TEMPLATE, anatomy, features)
    ref = ndimage.gaussian_filter(ref.reshape(shape), 0.6)
    reference = Volume(np.clip(ref, 0, 65535).astype(np.uint16), atlas_voxel, space=ATLAS)
    annotation = Volume(lab.reshape(shape).astype(np.uint32), atlas_voxel, space=ATLAS)
    hemi = np.where(ya[:, 2] < _MID_LR, 1, 2).reshape(shape).astype(np.uint8)  # asr: low LR index = right
    hemi[lab.reshape(shape) == 0] = 0
    hemispheres = Volume(hemi, atlas_voxel, space=ATLAS)

    # Truth atlas -> sample: smooth displacement, then affine, reorientation asr -> psl.
    field_t = _displacement(rng, 250.0)  # det J of the truth within ~0.86-1.17 inside the brain
    c = EXTENT / 2
    A = _rotation((6.0, -4.0, 3.0)) @ np.diag([1.06, 0.94, 1.03])
    flip = np.diag([-1.0, 1.0, -1.0])  # asr -> psl: AP and LR reversed, DV kept
    lin = flip @ A
    svs = np.asarray(sample_voxel, float)
    # Place the brain in the sample grid with a margin: find the image of the brain's bounding box.
    brain = ya[lab > 0]
    moved = (brain + field_t.map_points(brain) - brain - c) @ lin.T
    lo, hi = moved.min(0), moved.max(0)
    margin = np.array([400.0, 300.0, 300.0])
    offset = margin - lo + np.array([150.0, -100.0, 120.0])  # not centred: translation to find
    sshape = tuple(int(s) for s in np.ceil((hi - lo + 2 * margin + np.array([300, 200, 240])) / svs).astype(int))
    M = np.eye(4)
    M[:3, :3] = lin
    M[:3, 3] = offset - lin @ c
    atlas_to_sample = Sequence([field_t, Affine(M, _ATLAS_BENT, SAMPLE)])

    # Sample: evaluate the anatomy at the true atlas position of every sample voxel centre.
    sgrid = Grid(sshape, tuple(svs), SAMPLE)
    sidx = np.indices(sshape, dtype=np.float64).reshape(3, -1).T
    xs = sgrid.index_to_physical(sidx)
    ys = atlas_to_sample.inverse().map_points(xs)
    ys = np.where(np.isfinite(ys), ys, -1e6)
    individual = _smooth_noise(rng, 800.0, 0.04)
    img, slab = _render(ys, _SAMPLE, lambda y: anatomy(y) + individual(y), features)
    img = img.reshape(sshape)
    img = ndimage.gaussian_filter(img, 0.8)  # optics
    # Bias field across the sample (illumination) and background autofluorescence, then noise.
    ramp = (1.0 - bias / 2 + bias * np.linspace(0, 1, sshape[0]))[:, None, None] * \
           (1.05 - 0.1 * np.linspace(0, 1, sshape[2]))[None, None, :]
    img = img * ramp + 120.0 + rng.normal(0, noise, sshape)
    sample = Volume(np.clip(img, 0, 65535).astype(np.uint16), svs, space=SAMPLE)
    sample_annotation = Volume(slab.reshape(sshape).astype(np.uint32), svs, space=SAMPLE)

    # Cells: drawn by region density inside the brain, at their true atlas positions.
    cells_atlas = _draw_cells(rng, n_cells)
    cells_sample = atlas_to_sample.map_points(cells_atlas)

    em, em_to_sample, landmarks, synapses, em_centre_atlas = _em_block(rng, atlas_to_sample, n_landmarks,
                                                                        n_synapses)
    neurons = _neurons(rng, atlas_to_sample, em_centre_atlas)
    return Phantom(reference, annotation, hemispheres, structures_table(), sample, sample_annotation,
                   atlas_to_sample, em, em_to_sample, landmarks, synapses, cells_sample, cells_atlas,
                   neurons, seed)


def _draw_cells(rng, n: int) -> np.ndarray:
    out = []
    dens = np.zeros(2000)
    for k, v in _CELL_DENSITY.items():
        dens[k] = v
    while sum(len(o) for o in out) < n:
        y = rng.uniform([0, 0, 0], EXTENT, size=(4 * n, 3))
        lab = labels_at(y)
        keep = rng.uniform(0, dens.max(), len(y)) < dens[lab]
        out.append(y[keep & (lab > 0)])
    return np.concatenate(out)[:n]


def _em_block(rng, atlas_to_sample, n_landmarks, n_synapses):
    """An EM block in left CA3: image, truth map to the sample, landmarks, synapses."""
    # Centre of the block: a point well inside left CA3 (atlas), carried into the sample.
    cand = rng.uniform([3900, 1600, _MID_LR + 1800], [5500, 2700, _MID_LR + 2500], size=(20000, 3))
    ca3 = cand[labels_at(cand) == 463]
    centre_atlas = ca3[np.argmin(np.linalg.norm(ca3 - ca3.mean(0), axis=1))]
    centre_sample = atlas_to_sample.map_points(centre_atlas[None])[0]
    em_shape = (120, 120, 24)
    em_vs = np.array([2000.0, 2000.0, 5000.0])  # nm
    size_nm = np.asarray(em_shape) * em_vs
    # em nm -> em µm (same axes) -> bend (section warping) -> rotate, compress sections, place.
    to_um = Affine.from_scale(1e-3, EM, _EM_UM)
    size_um = size_nm * 1e-3
    sp = 20.0
    gshape = tuple(int(s) for s in np.ceil(size_um / sp).astype(int) + 5)
    gi = np.indices(gshape, dtype=float).reshape(3, -1).T * sp - 2 * sp
    u = np.zeros((len(gi), 3))
    # A bend of the sections (up to 15 µm) and a shear growing with depth: an affine cannot absorb it.
    u[:, 2] = 15.0 * np.sin(np.pi * gi[:, 0] / size_um[0]) * np.sin(np.pi * gi[:, 1] / size_um[1])
    u[:, 0] = 8.0 * (gi[:, 2] / size_um[2]) ** 2
    bend = DisplacementField(u.reshape(gshape + (3,)), spacing=(sp,) * 3, origin=(-2 * sp,) * 3,
                             src=_EM_UM, dst=_EM_BENT, outside="zero")
    R = _rotation((25.0, -10.0, 35.0))
    S = np.diag([1.0, 1.0, 0.88])  # sections compressed by cutting
    L = R @ S
    M = np.eye(4)
    M[:3, :3] = L
    M[:3, 3] = centre_sample - L @ (size_um / 2)
    em_to_sample = Sequence([to_um, bend, Affine(M, _EM_BENT, SAMPLE)])

    margin = 0.08 * size_nm
    somata = rng.uniform(margin, size_nm - margin, size=(n_landmarks + 60, 3))
    lm_pts = somata[:n_landmarks]
    lm_true = em_to_sample.map_points(lm_pts)
    lm_meas = lm_true + rng.normal(0, 1.5, lm_true.shape)  # light-microscopy localisation error, µm
    landmarks = pd.DataFrame({
        "name": [f"soma{i:02d}" for i in range(n_landmarks)],
        "em_x": lm_pts[:, 0], "em_y": lm_pts[:, 1], "em_z": lm_pts[:, 2],
        "lm_x": lm_meas[:, 0], "lm_y": lm_meas[:, 1], "lm_z": lm_meas[:, 2],
        "lm_true_x": lm_true[:, 0], "lm_true_y": lm_true[:, 1], "lm_true_z": lm_true[:, 2]})
    synapses = rng.uniform(0.02 * size_nm, 0.98 * size_nm, size=(n_synapses, 3))

    # The EM image: neuropil texture with dark-rimmed somata (what one would click landmarks on).
    idx = np.indices(em_shape, dtype=float).reshape(3, -1).T * em_vs
    img = ndimage.gaussian_filter(rng.normal(0, 1, em_shape), (1.2, 1.2, 0.5)).ravel() * 25 + 150
    from scipy.spatial import cKDTree

    d, _ = cKDTree(somata).query(idx)
    img = np.where(d < 6000, 200.0, img)
    img = np.where((d >= 6000) & (d < 7000), 40.0, img)
    em = Volume(np.clip(img, 0, 255).astype(np.uint8).reshape(em_shape), em_vs, space=EM)
    return em, em_to_sample, landmarks, synapses, centre_atlas


def _walk(rng, start, target, n, step, jitter):
    """A smooth random walk from ``start`` drifting toward ``target`` that stays inside the brain."""
    pts = [np.asarray(start, float)]
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    for _ in range(n - 1):
        to = None if target is None else (target - pts[-1])
        if to is not None and np.linalg.norm(to) < 2 * step:
            break
        want = d if to is None else 0.6 * d + 0.4 * to / np.linalg.norm(to)
        d = want + jitter * rng.normal(size=3)
        d /= np.linalg.norm(d)
        nxt = pts[-1] + step * d
        if labels_at(nxt[None])[0] == 0:  # turn back inside
            d = -d
            nxt = pts[-1] + step * d
        pts.append(nxt)
    return np.array(pts)


def _neurons(rng, atlas_to_sample, em_centre_atlas) -> list:
    """Five neurons: soma region -> axon target (atlas µm); traced in the sample with ~1 µm noise."""
    plan = [("CA3_to_CA1", em_centre_atlas + np.array([-60.0, 40.0, 0.0]), (4700, 2000, _MID_LR + 1200)),
            ("TH_to_Isocortex", (4300, 3000, _MID_LR - 300), (3200, 1200, _MID_LR - 1800)),
            ("Isocortex_to_STR", (2600, 1000, _MID_LR + 1200), (2600, 2800, _MID_LR + 1400)),
            ("DG_local", (4750, 2300, _MID_LR - 1500), None),
            ("CB_to_MB", (6700, 2400, _MID_LR + 600), (5000, 3700, _MID_LR))]
    out = []
    for name, soma, target in plan:
        soma = np.asarray(soma, float)
        rows = [(1, 1, *soma, 8.0, -1)]
        nid = 1
        # dendrites: three short branches from the soma
        for _ in range(3):
            br = _walk(rng, soma, None, 15, 20.0, 0.5)[1:]
            parent = 1
            for p in br:
                nid += 1
                rows.append((nid, 3, *p, 1.0, parent))
                parent = nid
        tgt = None if target is None else np.asarray(target, float)
        ax = _walk(rng, soma, tgt, 160 if tgt is not None else 40, 25.0, 0.25)[1:]
        parent = 1
        for p in ax:
            nid += 1
            rows.append((nid, 2, *p, 0.5, parent))
            parent = nid
        swc = pd.DataFrame(rows, columns=["id", "type", "x", "y", "z", "radius", "parent"])
        atlas_xyz = swc[["x", "y", "z"]].to_numpy(float)
        traced = atlas_to_sample.map_points(atlas_xyz) + rng.normal(0, 1.0, atlas_xyz.shape)
        swc_s = swc.copy()
        swc_s[["x", "y", "z"]] = traced
        out.append({"name": name, "soma_region": int(labels_at(soma[None])[0]), "swc": swc_s,
                    "atlas_xyz": atlas_xyz})
    return out
