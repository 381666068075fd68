"""QC figures and the self-contained HTML report."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from atlasreg import InputError, OutputExistsError, Volume, qc


@pytest.fixture(scope="module")
def ccf(data_dir):
    z = np.load(data_dir / "atlas" / "allen_mouse_200um.npz")
    ref = Volume(z["reference"], 200.0, space="ccf", orientation="asr")
    ann = Volume(z["annotation"], 200.0, space="ccf", orientation="asr")
    return ref, ann


def _png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return im.size


def test_figures_render_from_real_atlas(ccf):
    ref, ann = ccf
    moved = ref.with_data(np.roll(ref.numpy(), 3, axis=2))
    for fig in (qc.overlay_slices(ref, moved), qc.checkerboard_slices(ref, moved, tiles=5),
                qc.boundary_slices(ref, ann)):
        png = qc.figure_png(fig)
        w, h = _png_size(png)
        assert w > 600 and h > 200
        assert len(fig.axes) >= 3
    # plane titles follow the orientation code (asr: axis 0 AP -> coronal, 1 DV -> horizontal, 2 LR -> sagittal)
    titles = [ax.get_title() for ax in qc.overlay_slices(ref, moved).axes]
    assert [t.split()[0] for t in titles] == ["coronal", "horizontal", "sagittal"]


def _contour_vertices(ax) -> np.ndarray:
    """Midpoints of the boundary line segments drawn on a panel."""
    segs = [np.asarray(s) for coll in ax.collections for s in coll.get_segments()]
    return np.array([s.mean(axis=0) for s in segs]) if segs else np.zeros((0, 2))


def _on_edges(vertices: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Is each segment midpoint (x = column, y = row) between two pixels of different labels?"""
    x, y = vertices[:, 0], vertices[:, 1]
    r0, c0 = np.floor(y).astype(int), np.floor(x).astype(int)
    r1, c1 = np.ceil(y).astype(int), np.ceil(x).astype(int)
    ok = (r0 >= 0) & (c0 >= 0) & (r1 < lab.shape[0]) & (c1 < lab.shape[1])
    out = np.zeros(len(x), bool)
    out[ok] = lab[r0[ok], c0[ok]] != lab[r1[ok], c1[ok]]
    return out


def test_boundary_figure_draws_thin_contours_at_a_hierarchy_level(ccf, data_dir):
    from atlasreg.atlas import Ontology

    ref, ann = ccf
    onto = Ontology.read(data_dir / "atlas" / "allen_structure_tree.csv")
    lab = np.take(ann.numpy(), ann.shape[0] // 2, axis=0)  # the coronal panel (asr: axis 0)
    leaves = qc.boundary_slices(ref, ann, level="leaves")
    major = qc.boundary_slices(ref, ann, ontology=onto)  # default: major divisions
    v_leaf, v_major = _contour_vertices(leaves.axes[0]), _contour_vertices(major.axes[0])
    # every line lies on an edge between two different labels of its level, and every such edge has a line
    edges = (lab[:-1] != lab[1:]).sum() + (lab[:, :-1] != lab[:, 1:]).sum()
    assert _on_edges(v_leaf, lab).all() and len(v_leaf) == edges > 100
    coarse = qc.roll_labels(lab, onto, "major")
    assert _on_edges(v_major, coarse).all()
    # the major-division map has about a dozen regions (not the ~250 leaves of this slice) and fewer lines
    assert len(np.unique(coarse[coarse > 0])) <= 14 < len(np.unique(lab[lab > 0]))
    assert set(np.unique(coarse[coarse > 0])) <= set(onto.major_divisions())
    assert len(v_major) < 0.6 * len(v_leaf)
    # thin lines, large panels
    assert all(c.get_linewidth()[0] <= 1.0 for c in major.axes[0].collections)
    assert major.get_size_inches()[0] >= 15
    # the levels the report offers, first the default
    figs = qc.boundary_levels(ref, ann, onto)
    assert list(figs)[0] == "major divisions" and len(figs) == 3


def test_jacobian_figure_marks_folds():
    det = np.ones((10, 12, 14))
    det[4:6, 5:7, 6:9] = -0.5
    fig = qc.jacobian_slices(det)
    assert "folded" in fig.axes[0].get_title()  # the slice goes through the fold
    assert "0.714%" in fig._suptitle.get_text()  # 12 of 1680 voxels
    shown = fig.axes[0].images[1].get_array()  # the black fold overlay on the first plane
    assert int((~np.ma.getmaskarray(shown)).sum()) == 2 * 3  # axis-0 slice through the fold: 2 x 3 voxels


def test_landmark_and_region_figures_and_bad_input(ccf):
    _, ann = ccf
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1000, (20, 3))
    pred = truth + rng.normal(0, 10, truth.shape)
    pred[3] = np.nan
    fig = qc.landmark_residuals(pred, truth, labels=[f"L{i}" for i in range(20)])
    assert "19 landmarks" in fig.axes[0].get_title() and "1 unmapped" in fig.axes[0].get_title()
    ids, counts = np.unique(ann.numpy()[ann.numpy() > 0], return_counts=True)
    fig = qc.region_counts_bar(dict(zip(ids.tolist(), counts.tolist())), top=7)
    bars = fig.axes[0].patches
    assert len(bars) == 7 and bars[0].get_width() == counts.max()
    with pytest.raises(InputError, match="same grid|share one grid"):
        qc.overlay_slices(ann, ann.numpy()[1:])
    with pytest.raises(InputError):
        qc.landmark_residuals(pred[:5], truth)
    with pytest.raises(InputError, match="no region counts"):
        qc.region_counts_bar({})


def test_report_is_self_contained_and_guards_output(ccf, tmp_path):
    import pandas as pd

    ref, ann = ccf
    figs = {"overlay": qc.overlay_slices(ref, ref), "boundaries <&>": qc.boundary_slices(ref, ann)}
    png_file = tmp_path / "extra.png"
    png_file.write_bytes(qc.figure_png(qc.checkerboard_slices(ref, ref)))
    figs["from file"] = png_file
    rep = {"title": "QC <test>", "summary": "all good",
           "stages": [{"name": "register", "status": "ok", "seconds": 3.25, "detail": "done"},
                      {"name": "landmarks", "status": "skipped", "detail": "not available"}],
           "metrics": [{"section": "registration", "name": "TRE median", "value": 12.345678, "unit": "µm"},
                       {"section": "registration", "name": "folding", "value": float("nan")}],
           "figures": figs, "tables": {"counts": pd.DataFrame({"acronym": ["CA3"], "count": [4]})}}
    out = qc.write_report(rep, tmp_path / "r.html")
    text = out.read_text()
    assert "QC &lt;test&gt;" in text and "boundaries &lt;&amp;&gt;" in text
    assert "12.35" in text and "n/a" in text and "skipped" in text and "CA3" in text
    # nothing is fetched from anywhere: no src/href other than data URIs
    assert not re.search(r'(src|href)="(?!data:)', text)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) == 3
    for u in uris:
        w, h = _png_size(base64.b64decode(u))
        assert w > 100 and h > 100
    with pytest.raises(OutputExistsError):
        qc.write_report(rep, out)
    qc.write_report({"title": "again"}, out, force=True)
    assert "again" in out.read_text()
    with pytest.raises(InputError, match="PNG"):
        qc.write_report({"figures": {"x": b"not a png"}}, tmp_path / "bad.html")
    with pytest.raises(InputError, match=".html"):
        qc.write_report({}, tmp_path / "r.txt")
    assert not (tmp_path / "bad.html").exists()


def test_report_from_result_folder(tmp_path):
    import pandas as pd

    folder = tmp_path / "result"
    (folder / "figures").mkdir(parents=True)
    det = np.ones((5, 6, 7))
    det[2, 2, 2] = -1
    (folder / "figures" / "jac.png").write_bytes(qc.figure_png(qc.jacobian_slices(det)))
    pd.DataFrame({"region": ["CA1", "CA3"], "count": [3, 5]}).to_csv(folder / "counts.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({
        "title": "from folder", "metrics": {"folding fraction": 1 / 210},
        "figures": [{"caption": "Jacobian", "file": "figures/jac.png"}],
        "tables": [{"caption": "cells per region", "file": "counts.csv"}]}))
    text = qc.render_report(folder)
    assert "from folder" in text and text.count("data:image/png;base64,") == 1 and "cells per region" in text
    (folder / "figures" / "jac.png").unlink()
    with pytest.raises(InputError, match="jac.png"):
        qc.render_report(folder)
    with pytest.raises(InputError, match="not found"):
        qc.render_report(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="summary.json"):
        qc.render_report(empty)


def test_report_for_a_saved_registration(tmp_path, data_dir):
    """`atlasreg qc` on a folder `atlasreg register` writes: numbers, the three-plane figures, atlas boundaries
    drawn on the recorded sample file and region volumes; a changed sample file is never drawn on."""
    from typer.testing import CliRunner

    import atlasreg as ar
    from atlasreg.cli import app
    from atlasreg.registration import RegistrationResult

    atlas = ar.Atlas.load(data_dir / "atlas" / "allen_mouse_200um.npz",
                          ontology=data_dir / "atlas" / "allen_structure_tree.csv", voxel_size=200.0,
                          file_orientation="asr", space="ccf")
    # a "sample": the template in its own space, shifted by a known translation, written as NIfTI
    sample = Volume(atlas.reference.numpy(), 200.0, space=ar.Space("sample", "um", "asr"))
    path = tmp_path / "sample.nii.gz"
    ar.write_volume(sample, path)
    T = ar.Affine.from_translation([200.0, 0.0, 0.0], sample.space, atlas.space)
    res = RegistrationResult(T, sample.grid, atlas.reference.grid, {"ncc_initial": 0.5, "ncc_after": 0.9,
                                                                    "seconds": 1.0}, {"preset": "test"}, "ants")
    out = res.save(tmp_path / "reg", moving=sample, fixed=atlas.reference, atlas=atlas,
                   inputs={"sample": path, "atlas_ontology": data_dir / "atlas" / "allen_structure_tree.csv"})
    r = CliRunner().invoke(app, ["qc", str(out)])
    assert r.exit_code == 0, r.output
    text = (out / "report.html").read_text()
    # overlay, checkerboard, boundaries at three hierarchy levels, Jacobian, volumes
    assert text.count("data:image/png;base64,") == 7
    for needle in ("boundaries drawn on the sample", "folding fraction", "correlation after registration",
                   "Region volumes", "CA3", "needs landmarks", ">major divisions</button>",
                   ">every structure</button>", "atlasregShow("):
        assert needle in text, needle
    # one level is shown at a time: the major divisions first
    assert text.count('style="display:none"') == 2
    # the sample file changed since the run: the report says so instead of drawing on the wrong image
    ar.write_volume(sample.with_data(sample.numpy()[::-1].copy()), path, force=True)
    text = qc.render_report(out)  # save() drew the boundaries from the sample it was given: still right
    assert text.count("data:image/png;base64,") == 7 and "changed since" not in text
    for f in (out / "qc").glob("boundaries*"):  # a folder from before save() drew them: never the wrong image
        f.unlink()
    text = qc.render_report(out)
    assert text.count("data:image/png;base64,") == 4 and "changed since the registration" in text
    (out / "COMPLETE").unlink()
    with pytest.raises(InputError, match="incomplete"):
        qc.render_report(out)


# -- issue 16: the report reads right; Python and the CLI save the same result -------------------------------
def test_qc_of_a_relative_result_folder(tmp_path, monkeypatch):
    """`atlasreg qc reg/` with a relative folder (figure paths were joined to the folder twice)."""
    from typer.testing import CliRunner

    import atlasreg as ar
    from atlasreg.cli import app
    from atlasreg.registration import RegistrationResult

    mg = ar.Grid((20, 16, 22), (200.0,) * 3, ar.Space("sample", "um", "asr"))
    fg = ar.Grid((20, 16, 22), (200.0,) * 3, ar.Space("ccf", "um", "asr"))
    RegistrationResult(ar.Affine(np.eye(4), src=mg.space, dst=fg.space), mg, fg, {}, {"preset": "t"},
                       "test").save(tmp_path / "scratch" / "reg200")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["qc", "scratch/reg200"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "scratch" / "reg200" / "report.html").read_text()
    assert text.count("data:image/png;base64,") == 1  # the Jacobian (no sample given: no overlay)


def test_overlay_colours_match_its_caption():
    """Fixed is drawn magenta and moving green, and every caption says so (from one function)."""
    rng = np.random.default_rng(0)
    f = np.zeros((12, 12, 12), np.float32)
    m = np.zeros_like(f)
    f[2:6, 2:10, 2:10] = rng.uniform(1, 2, (4, 8, 8))   # only in fixed
    m[7:11, 2:10, 2:10] = rng.uniform(1, 2, (4, 8, 8))  # only in moving
    fig = qc.overlay_slices(Volume(f, 1.0, space="a", orientation="asr"), Volume(m, 1.0, space="a",
                                                                               orientation="asr"),
                            positions=(4, 6, 6), fixed_label="atlas", moving_label="sample")
    rgb = np.asarray(fig.axes[1].images[0].get_array())  # the plane through axis 1: rows run along axis 0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    only_fixed = (r > 0.2) & np.isclose(r, b) & (g == 0)    # magenta
    only_moving = (g > 0.2) & (r == 0) & (b == 0)             # green
    assert only_fixed.sum() > 10 and only_moving.sum() > 10
    title = fig._suptitle.get_text()
    assert "atlas magenta" in title and "sample green" in title
    assert qc.overlay_key("atlas", "sample") in title


def test_python_save_writes_what_the_cli_writes(tmp_path, data_dir, monkeypatch):
    """`res.save(folder)` after `ar.register(sample, atlas.reference)` writes the overlay, checkerboard, warped
    sample, annotation on the sample, region boundaries and region volumes, like `atlasreg register`; its report
    never says the run was made without an atlas."""
    import atlasreg as ar
    from atlasreg.registration import RegistrationResult

    monkeypatch.setenv("ATLASREG_DATA", str(data_dir))
    atlas = ar.Atlas.load("allen_mouse_200um")
    ref = atlas.reference
    sample = Volume(ref.numpy(), ref.voxel_size, space=ar.Space("sample", "um", "asr"))
    T = ar.Affine.from_translation([200.0, 0.0, 0.0], sample.space, atlas.space)
    # what register() returns: the result remembers the volumes it was given
    res = RegistrationResult(T, sample.grid, ref.grid, {"ncc_after": 0.9}, {"preset": "t"}, "ants",
                             moving_volume=sample, fixed_volume=ref)
    out = res.save(tmp_path / "py")
    cli_files = {"warped_moving.nii.gz", "annotation_in_moving.nii.gz", "region_volumes.csv", "result.json",
                 "metrics.json", "record.json", "COMPLETE", "qc/overlay.png", "qc/checkerboard.png",
                 "qc/jacobian.png", "qc/boundaries.png", "qc/boundaries.json"}
    have = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "transforms" not in p.parts}
    assert cli_files <= have, cli_files - have
    text = qc.render_report(out)
    assert "without an atlas" not in text and "no atlas boundaries" not in text
    # overlay, checkerboard, boundaries at three hierarchy levels (the atlas's ontology), Jacobian, volumes
    assert text.count("data:image/png;base64,") == 7 and ">major divisions</button>" in text
    assert qc.overlay_key("fixed", "registered sample") in text or "fixed magenta" in text


def test_region_volume_table_sorted_exact_acronyms_three_digits(data_dir, monkeypatch):
    """Largest first; acronyms and names exactly as Allen's ontology file has them ("CUL4, 5", CSV-quoted);
    volumes to 3 significant digits."""
    import csv
    import io as _io

    import atlasreg as ar
    from atlasreg.registration.result import region_volumes_csv

    monkeypatch.setenv("ATLASREG_DATA", str(data_dir))
    atlas = ar.Atlas.load("allen_mouse_200um")
    ann = np.asarray(atlas.annotation.data)
    lab = Volume(ann, 37.0, space="sample")
    text = region_volumes_csv(lab, atlas)
    rows = list(csv.DictReader(_io.StringIO(text)))
    assert len(rows) > 100
    vols = [float(r["volume_mm3"]) for r in rows]
    vox = [int(r["voxels"]) for r in rows]
    assert vox == sorted(vox, reverse=True)
    assert all(float(f"{v:.3g}") == v for v in vols)
    assert np.allclose(vols, np.asarray(vox) * 0.037 ** 3, rtol=5e-3)
    # Allen's own JSON, read here without atlasreg: every row's acronym and name as Allen writes them
    allen = {}
    stack = list(json.loads((data_dir / "atlas" / "allen_ontology.json").read_text())["msg"])
    while stack:
        s = stack.pop()
        allen[int(s["id"])] = (s["acronym"], s["name"])
        stack.extend(s.get("children") or [])
    for r in rows:
        assert (r["acronym"], r["name"]) == allen[int(r["id"])], r
        assert atlas.structures[r["acronym"]]["id"] == int(r["id"])
    assert '"CUL4, 5"' in text  # id 1091 is in the 200 µm annotation
