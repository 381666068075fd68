"""The demo chain on the phantom: every step scored against exact ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..graph import SpaceGraph
from ..transforms.base import Affine, Sequence
from ..volume import Volume, warp
from .phantom import ATLAS, EM, SAMPLE, make_phantom
from .stages import Unavailable, call_accepting, error_stats, fit_report, landmark_transform, need

REG = "Register the sample to the atlas"
EMFIT = "Fit the EM block's landmarks to the sample"
ATLAS_STAGE = "Build the phantom atlas"
GEN = "Generate the phantom"
NEURONS = "Move traced neurons into the atlas"


#: ``register`` settings of the demo: the fast preset on a 150 µm working grid (the phantom's voxels are
#: 80-100 µm; at 200 µm its finer anatomy is averaged away and the deformable stage cannot beat an affine),
#: with a rigid stage before the affine one. Without the rigid stage the affine stage drifts from the
#: moments initialisation to ~140 µm error even on a purely affine phantom; with it, ~25 µm.
DEMO_REGISTRATION = {"preset": "fast", "working_spacing": 150.0, "rigid_iterations": (100, 50)}


def register_sample(sample: Volume, reference: Volume, progress):
    """``atlasreg.register`` with :data:`DEMO_REGISTRATION`, stage progress reported to ``progress``."""
    register = need("atlasreg.registration", "register")
    return register(moving=sample, fixed=reference, progress=progress, **DEMO_REGISTRATION)


def _region_names(onto, ids) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    out = np.array(["outside"] * len(ids), dtype=object)
    ok = ids > 0
    if ok.any():
        out[ok] = onto.acronyms(ids[ok])
    out[ids == 0] = "none"
    return out


def run_phantom_chain(run, data_dir=None, seed: int = 0) -> None:
    from .. import qc

    out = run.out
    ctx: dict = {}

    # 1 ----------------------------------------------------------------------------------------
    with run.stage(GEN) as st:
        ph = make_phantom(seed=seed)
        ctx["ph"] = ph
        st["detail"] = (f"atlas {'x'.join(map(str, ph.atlas_reference.shape))} @ 100 µm (asr); sample "
                        f"{'x'.join(map(str, ph.sample.shape))} @ {'/'.join(f'{v:g}' for v in ph.sample.voxel_size)}"
                        f" µm (psl); EM {'x'.join(map(str, ph.em.shape))} @ 2x2x5 µm; {len(ph.em_landmarks)} "
                        f"landmarks, {len(ph.em_synapses)} synapses, {len(ph.neurons)} neurons, "
                        f"{len(ph.cells_sample)} cells")
        _write_inputs(run, ph)

    # 2 ----------------------------------------------------------------------------------------
    with run.stage(ATLAS_STAGE, needs=(GEN,)) as st:
        if st is not None:
            Atlas = need("atlasreg.atlas", "Atlas")
            Ontology = need("atlasreg.atlas", "Ontology")
            onto = Ontology(ph.structures)
            atlas = Atlas(ph.atlas_annotation.numpy(), onto, voxel_size=ph.atlas_reference.voxel_size,
                          space=ATLAS, reference=ph.atlas_reference.numpy(),
                          hemispheres=ph.atlas_hemispheres.numpy(), name="phantom")
            ctx["atlas"] = atlas
            n_regions = int(np.count_nonzero(np.unique(ph.atlas_annotation.numpy())))
            st["detail"] = f"{n_regions} annotated regions, {len(onto)} structures in the ontology"

    # 3 ----------------------------------------------------------------------------------------
    with run.stage(REG, needs=(GEN,)) as st:
        if st is not None:
            ref = Volume(ph.atlas_reference.numpy(), ph.atlas_reference.voxel_size, space=ATLAS)
            note = run.progress()
            res = register_sample(ph.sample, ref, note)
            T = res.transform
            ctx["T"] = T
            with _suppress_unavailable(run, "saving the registration"):
                res.save(out / "registration", progress=note)
            note("score against the truth", "start")
            _score_registration(run, ph, T, ref, st)
            note("score against the truth", "done")

    # 4 ----------------------------------------------------------------------------------------
    with run.stage("Move detected cells into the atlas and count them per region",
                   needs=(REG, ATLAS_STAGE)) as st:
        if st is not None:
            atlas, T = ctx["atlas"], ctx["T"]
            mapped = T.map_points(ph.cells_sample)
            est = atlas.region_of(mapped, on_invalid="ignore")
            truth = atlas.region_of(ph.cells_atlas, on_invalid="ignore")
            agree = float(np.mean(est == truth))
            e_med, e95 = error_stats(np.linalg.norm(mapped - ph.cells_atlas, axis=1))
            run.metric("cells", "cells assigned their true region", 100 * agree, "%",
                       f"{len(mapped)} cells")
            run.metric("cells", "cell position error median", e_med, "µm", f"p95 {e95:.1f} µm")
            names_e = _region_names(atlas.ontology, est)
            names_t = _region_names(atlas.ontology, truth)
            ce = pd.Series(names_e).value_counts()
            ct = pd.Series(names_t).value_counts()
            tab = pd.DataFrame({"count": ce, "true count": ct}).fillna(0).astype(int)
            tab["difference"] = tab["count"] - tab["true count"]
            tab = tab.sort_values("true count", ascending=False).rename_axis("region").reset_index()
            run.table("Detected cells per region (registered vs true positions)", tab, "cells_per_region.csv")
            real = tab[~tab["region"].isin(["none", "outside"])]
            run.figure("Detected cells per atlas region, after registration",
                       qc.region_counts_bar(dict(zip(real["region"], real["count"])), top=15,
                                            title="cells per region (registered)", xlabel="cells"),
                       "cells_per_region.png")
            pd.DataFrame({"x": mapped[:, 0], "y": mapped[:, 1], "z": mapped[:, 2], "region_id": est,
                          "region": names_e}).to_csv(_mk(out / "atlas_space") / "cells.csv", index=False)
            st["detail"] = f"{100 * agree:.1f}% of cells in their true region"

    # 5 ----------------------------------------------------------------------------------------
    with run.stage(EMFIT, needs=(GEN,)) as st:
        if st is not None:
            fit_landmarks = need("atlasreg.registration.landmarks", "fit_landmarks")
            lm = ph.em_landmarks
            em_pts = lm[["em_x", "em_y", "em_z"]].to_numpy()
            lm_meas = lm[["lm_x", "lm_y", "lm_z"]].to_numpy()
            lm_true = lm[["lm_true_x", "lm_true_y", "lm_true_z"]].to_numpy()
            fit = call_accepting(fit_landmarks, em_pts, lm_meas, model="auto", src=EM, dst=SAMPLE)
            T_em = landmark_transform(fit)
            ctx["T_em"] = T_em
            rep = fit_report(fit)
            syn_true = ph.em_to_sample.map_points(ph.em_synapses)
            err = np.linalg.norm(T_em.map_points(ph.em_synapses) - syn_true, axis=1)
            med, p95 = error_stats(err)
            aff = landmark_transform(call_accepting(fit_landmarks, em_pts, lm_meas, model="affine", src=EM, dst=SAMPLE))
            a_med, a95 = error_stats(np.linalg.norm(aff.map_points(ph.em_synapses) - syn_true, axis=1))
            fit_res = np.linalg.norm(T_em.map_points(em_pts) - lm_meas, axis=1)
            if "model" in rep:
                run.metric("EM block -> sample", "model chosen", rep["model"], "", "model='auto'")
            if "cv" in rep:
                run.metric("EM block -> sample", "leave-one-out landmark error median", rep["cv"], "µm",
                           "reported by the fit" + (f"; p95 {rep['cv_p95']:.2f} µm" if "cv_p95" in rep else ""))
            if "candidates" in rep:
                run.table("Landmark models tried (leave-one-out errors, µm)", rep["candidates"],
                          "landmark_models.csv")
            run.metric("EM block -> sample", "landmark residual median", float(np.median(fit_res)), "µm",
                       f"{len(em_pts)} landmarks, LM localisation noise 1.5 µm")
            run.metric("EM block -> sample", "held-out synapse error median", med, "µm",
                       f"p95 {p95:.2f} µm; {len(err)} synapses vs truth")
            run.metric("EM block -> sample", "same, plain affine fit", a_med, "µm", f"p95 {a95:.2f} µm")
            fig = qc.landmark_residuals(T_em.map_points(em_pts), lm_true, labels=list(lm["name"]),
                                        title="EM landmarks in the sample (µm): fitted vs true")
            run.figure("EM landmarks mapped into the sample: residuals against their true positions (arrows "
                       f"lengthened {fig.arrow_scale:g} times to be seen)", fig, "em_landmarks.png")
            with _suppress_unavailable(run, "saving the EM transform"):
                save_transform = need("atlasreg.transforms.files", "save_transform")
                call_accepting(save_transform, T_em, _mk(out / "transforms") / "em_to_sample.json")
            st["detail"] = f"{rep.get('model', type(T_em).__name__)}: synapses within {med:.2f} µm (median)"

    # 6 ----------------------------------------------------------------------------------------
    with run.stage("Carry EM synapses into the atlas (EM -> sample -> atlas)",
                   needs=(REG, EMFIT, ATLAS_STAGE)) as st:
        if st is not None:
            g = SpaceGraph()
            g.add(ctx["T_em"])
            g.add(ctx["T"])
            path = g.path(EM.name, ATLAS.name)
            pred = g.map_points(ph.em_synapses, EM.name, ATLAS.name)
            truth = ph.sample_to_atlas.map_points(ph.em_to_sample.map_points(ph.em_synapses))
            ctx["syn_atlas"], ctx["syn_truth"] = pred, truth
            med, p95 = error_stats(np.linalg.norm(pred - truth, axis=1))
            atlas = ctx["atlas"]
            est_r = atlas.region_of(pred, on_invalid="ignore")
            tru_r = atlas.region_of(truth, on_invalid="ignore")
            ca3 = atlas.ontology.id_of("CA3")
            run.metric("EM synapses -> atlas", "synapse position error median", med, "µm",
                       f"p95 {p95:.1f} µm; path {' -> '.join(path)}")
            run.metric("EM synapses -> atlas", "synapses assigned their true region",
                       100 * float(np.mean(est_r == tru_r)), "%")
            run.metric("EM synapses -> atlas", "synapses placed in CA3", 100 * float(np.mean(est_r == ca3)), "%",
                       f"truth: {100 * float(np.mean(tru_r == ca3)):.0f}%")
            pd.DataFrame({"x": pred[:, 0], "y": pred[:, 1], "z": pred[:, 2], "region_id": est_r,
                          "region": _region_names(atlas.ontology, est_r)}).to_csv(
                _mk(out / "atlas_space") / "em_synapses.csv", index=False)
            st["detail"] = f"median error {med:.1f} µm; {100 * float(np.mean(est_r == ca3)):.0f}% in CA3"

    # 7 ----------------------------------------------------------------------------------------
    with run.stage(NEURONS, needs=(REG, ATLAS_STAGE)) as st:
        if st is not None:
            tr = need("atlasreg.tracings")
            atlas, T = ctx["atlas"], ctx["T"]
            rows, moved, node_ids = [], [], []
            for n in ph.neurons:
                neuron = tr.Neuron(n["swc"], space=SAMPLE, name=n["name"])
                m = tr.transform_neuron(neuron, T)
                moved.append(m)
                err = np.linalg.norm(m.points - n["atlas_xyz"], axis=1)
                soma = atlas.region_of(m.soma[None], on_invalid="ignore")[0]
                ids = atlas.region_of(m.points, on_invalid="ignore")
                node_ids.append(ids)
                rows.append({"neuron": n["name"], "nodes": m.n_nodes, "cable length (µm)": round(m.cable_length, 1),
                             "soma region": _region_names(atlas.ontology, [soma])[0],
                             "true soma region": _region_names(atlas.ontology, [n["soma_region"]])[0],
                             "median node error (µm)": round(float(np.median(err)), 1)})
            ctx["neurons_atlas"] = moved
            tab = pd.DataFrame(rows)
            ok = int((tab["soma region"] == tab["true soma region"]).sum())
            all_err = np.concatenate([np.linalg.norm(m.points - n["atlas_xyz"], axis=1)
                                      for m, n in zip(moved, ph.neurons)])
            med, p95 = error_stats(all_err)
            run.metric("neurons -> atlas", "somata in their true region", f"{ok} of {len(tab)}", "")
            run.metric("neurons -> atlas", "node position error median", med, "µm", f"p95 {p95:.1f} µm")
            run.table("Traced neurons in the atlas", tab, "neurons.csv")
            ids = np.concatenate(node_ids)
            names = pd.Series(_region_names(atlas.ontology, ids[ids > 0])).value_counts()
            run.figure("Neuron nodes per atlas region (all five neurons)",
                       qc.region_counts_bar(names.to_dict(), top=15, title="neuron nodes per region",
                                            xlabel="nodes"), "neuron_nodes_per_region.png")
            with _suppress_unavailable(run, "writing neurons"):
                d = _mk(out / "atlas_space" / "neurons")
                for m in moved:
                    tr.write_swc(m, d / f"{m.name}.swc", force=True)
            st["detail"] = f"{ok}/{len(tab)} somata in their true region; node error median {med:.0f} µm"

    # 8 ----------------------------------------------------------------------------------------
    with run.stage("Combine EM and optical data in the atlas",
                   needs=(REG, EMFIT, NEURONS, "Carry EM synapses into the atlas (EM -> sample -> atlas)")) as st:
        if st is not None:
            tr = need("atlasreg.tracings")
            size = np.asarray(ph.em.shape) * ph.em.voxel_size
            block = tr.EMBlock(np.zeros(3), size, Sequence([ctx["T_em"], ctx["T"]]), name="phantom_em_block")
            true_block = tr.EMBlock(np.zeros(3), size, Sequence([ph.em_to_sample, ph.sample_to_atlas]),
                                    name="truth")
            hits = tr.find_passing(ctx["neurons_atlas"], block)
            truth_neurons = [tr.Neuron(n["swc"].assign(x=n["atlas_xyz"][:, 0], y=n["atlas_xyz"][:, 1],
                                                       z=n["atlas_xyz"][:, 2]), space=ATLAS, name=n["name"])
                             for n in ph.neurons]
            true_hits = tr.find_passing(truth_neurons, true_block)
            run.metric("EM + optical", "neurons passing through the EM block",
                       ", ".join(hits["name"]) or "none", "", f"truth: {', '.join(true_hits['name']) or 'none'}")
            near_e = _near(ctx["syn_atlas"], [ctx["neurons_atlas"][i] for i in range(len(ph.neurons))
                                              if ph.neurons[i]["name"] in set(hits["name"])], 15.0)
            near_t = _near(ctx["syn_truth"], [truth_neurons[i] for i in range(len(ph.neurons))
                                              if ph.neurons[i]["name"] in set(true_hits["name"])], 15.0)
            inter = int((near_e & near_t).sum())
            union = int((near_e | near_t).sum())
            run.metric("EM + optical", "EM synapses within 15 µm of an optical axon", int(near_e.sum()), "",
                       f"truth {int(near_t.sum())}; {inter} in common")
            if union:
                run.metric("EM + optical", "agreement with truth (Jaccard)", inter / union, "")
            hits.to_csv(_mk(out / "atlas_space") / "neurons_through_em_block.csv", index=False)
            run.figure("EM block footprint, EM synapses and traced neurons in the atlas (projections)",
                       qc.tracings_projection(Volume(ph.atlas_reference.numpy(), ph.atlas_reference.voxel_size,
                                                     space=ATLAS, orientation="asr"),
                                              neurons=[m.points for m in ctx["neurons_atlas"]],
                                              neuron_names=[m.name for m in ctx["neurons_atlas"]],
                                              points=ctx["syn_atlas"], box=block.footprint()),
                       "combined_projection.png")
            st["detail"] = f"{len(hits)} neuron(s) pass through the block; {int(near_e.sum())} synapses on them"


def _near(points: np.ndarray, neurons, radius: float) -> np.ndarray:
    """Which points lie within ``radius`` of the cable of any of ``neurons`` (segments sampled at 2 µm)."""
    from scipy.spatial import cKDTree

    if not neurons:
        return np.zeros(len(points), bool)
    samples = []
    for n in neurons:
        child, parent = n.segments() if callable(getattr(n, "segments", None)) else n.segments
        a, b = n.points[child], n.points[parent]
        L = np.linalg.norm(b - a, axis=1)
        for k in range(len(a)):
            m = max(2, int(np.ceil(L[k] / 2.0)) + 1)
            t = np.linspace(0, 1, m)[:, None]
            samples.append(a[k] + t * (b[k] - a[k]))
        samples.append(n.points)
    d, _ = cKDTree(np.concatenate(samples)).query(points)
    return d <= radius


def _score_registration(run, ph, T, ref: Volume, st) -> None:
    from .. import qc

    rng = np.random.default_rng(7)
    ann = ph.atlas_annotation.numpy()
    vox = np.argwhere(ann > 0)
    pick = vox[rng.choice(len(vox), 4000, replace=False)] + rng.uniform(-0.5, 0.5, (4000, 3))
    y = ph.atlas_reference.index_to_physical(pick)
    x = ph.atlas_to_sample.map_points(y)
    pred = T.map_points(x)
    med, p95 = error_stats(np.linalg.norm(pred - y, axis=1))
    oracle = Affine.fit(x, y, "affine", SAMPLE, ATLAS)
    o_med, o95 = error_stats(np.linalg.norm(oracle.map_points(x) - y, axis=1))
    run.metric("registration", "TRE median", med, "µm", f"p95 {p95:.1f} µm; 4000 points in the brain")
    run.metric("registration", "best possible affine (oracle), median", o_med, "µm", f"p95 {o95:.1f} µm")
    # Dice: the true sample labels carried into the atlas vs the atlas annotation
    lab = warp(ph.sample_annotation, T, ref, interpolation="nearest").numpy()
    d = qc.dice(lab, ann)
    lab_o = warp(ph.sample_annotation, oracle, ref, interpolation="nearest").numpy()
    d_o = qc.dice(lab_o, ann)
    run.metric("registration", "Dice, mean over regions", float(np.nanmean(list(d.values()))), "",
               f"oracle affine {np.nanmean(list(d_o.values())):.3f}; {len(d)} regions")
    # Jacobian of the atlas -> sample map on the atlas grid (the pull-back the warp uses)
    brain = ann > 0
    det = qc.jacobian_determinant(T.inverse(), ref.grid)
    fold = qc.folding_fraction(det, mask=brain)
    run.metric("registration", "folding fraction (det J <= 0)", fold, "", "inside the brain")
    run.metric("registration", "det J range (1st-99th percentile)",
               f"{np.nanpercentile(det[brain], 1):.2f} - {np.nanpercentile(det[brain], 99):.2f}", "")
    warped = warp(ph.sample, T, ref)
    perfect = warp(ph.sample, ph.atlas_to_sample, ref)
    ncc = qc.ncc(ref, warped, mask=brain)
    run.metric("registration", "NCC atlas vs registered sample", ncc, "",
               f"with the true transform {qc.ncc(ref, perfect, mask=brain):.3f}")
    run.metric("registration", "mutual information", qc.mutual_information(ref, warped, mask=brain), "nats",
               f"with the true transform {qc.mutual_information(ref, perfect, mask=brain):.3f}")
    tab = pd.DataFrame({"region id": list(d), "Dice": list(d.values()),
                        "Dice, oracle affine": [d_o.get(k, np.nan) for k in d]})
    onto_names = dict(zip(ph.structures["id"], ph.structures["acronym"]))
    tab.insert(1, "region", [onto_names.get(k, str(k)) for k in d])
    run.table("Dice per region (true sample labels carried into the atlas)", tab, "dice_per_region.csv")
    fixed = Volume(ref.numpy(), ref.voxel_size, space=ATLAS, orientation="asr")
    moved = Volume(warped.numpy(), ref.voxel_size, space=ATLAS, orientation="asr")
    run.figure(f"Overlay: {qc.overlay_key('atlas', 'registered sample')}",
               qc.overlay_slices(fixed, moved, fixed_label="atlas", moving_label="registered sample"), "overlay.png")
    run.figure("Checkerboard of atlas and registered sample", qc.checkerboard_slices(fixed, moved),
               "checkerboard.png")
    back = warp(Volume(ann, ref.voxel_size, space=ATLAS), T, ph.sample.grid, interpolation="nearest")
    run.figure("Atlas region boundaries drawn on the sample (native sample grid)",
               qc.boundary_slices(ph.sample, back.numpy(), title="atlas boundaries on the sample", level="leaves"),
               "boundaries_on_sample.png")
    run.figure("Jacobian determinant of the atlas -> sample map (folding in black)",
               qc.jacobian_slices(Volume(det, ref.voxel_size, space=ATLAS, orientation="asr"),
                                  mask=ann > 0), "jacobian.png")
    st["detail"] = f"TRE median {med:.1f} µm (p95 {p95:.1f}); best affine {o_med:.1f} µm"


class _suppress_unavailable:
    """Run an optional side step (saving a file); if its library part is missing, note it and go on."""

    def __init__(self, run, what: str):
        self.run, self.what = run, what

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None and issubclass(et, Unavailable):
            self.run.notes.append(f"{self.what} skipped: {ev}")
            return True
        return False


def _mk(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_inputs(run, ph) -> None:
    """The phantom's inputs as a user would have them, plus the truth beside them."""
    d = _mk(run.out / "inputs")
    ph.structures.to_csv(d / "structures.csv", index=False)
    ph.em_landmarks[["name", "em_x", "em_y", "em_z", "lm_x", "lm_y", "lm_z"]].to_csv(d / "em_landmarks.csv",
                                                                                     index=False)
    pd.DataFrame(ph.em_synapses, columns=["x", "y", "z"]).to_csv(d / "em_synapses_nm.csv", index=False)
    pd.DataFrame(ph.cells_sample, columns=["x", "y", "z"]).to_csv(d / "cells_sample_um.csv", index=False)
    t = _mk(d / "truth")
    pd.DataFrame(ph.cells_atlas, columns=["x", "y", "z"]).to_csv(t / "cells_atlas_um.csv", index=False)
    ph.em_landmarks.to_csv(t / "em_landmarks_with_truth.csv", index=False)
    with _suppress_unavailable(run, "writing the phantom volumes"):
        write_volume = need("atlasreg.io.volumes", "write_volume")
        for name, vol in (("atlas_reference", ph.atlas_reference), ("atlas_annotation", ph.atlas_annotation),
                          ("atlas_hemispheres", ph.atlas_hemispheres), ("sample", ph.sample),
                          ("em", ph.em)):
            write_volume(vol, d / f"{name}.nii.gz", force=True)
        write_volume(ph.sample_annotation, t / "sample_annotation.nii.gz", force=True)
    with _suppress_unavailable(run, "writing the traced neurons"):
        tr = need("atlasreg.tracings")
        nd = _mk(d / "neurons_sample")
        for n in ph.neurons:
            tr.write_swc(tr.Neuron(n["swc"], space=SAMPLE, name=n["name"]), nd / f"{n['name']}.swc", force=True)
