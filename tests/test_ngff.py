"""OME-NGFF 0.6 transforms: the public RFC-5 conformance suite, the specification's schemas and examples,
scenes with image paths, every unit, fields in the specification's layout, and crafted (hostile) files.

Oracles are things atlasreg did not write: the suite's cases and expected points, the spec's JSON schemas,
worked examples from the spec's text, and SimpleITK's DisplacementFieldTransform on the same field.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import atlasreg as ar
from atlasreg.errors import AtlasregError, InputError, NoPathError, SpaceMismatchError
from atlasreg.transforms.files import load_transform, save_transform
from atlasreg.transforms.ngff import apply_points, read_ngff, read_scene, scene_graph
from atlasreg.transforms.ngff import store
from atlasreg.transforms.ngff.units import SPACE_UNITS_NM, to_atlasreg_unit

REPO = Path(__file__).resolve().parents[1]
DINGUS = [sys.executable, "-c", "from atlasreg.cli import main; main()", "ngff", "apply"]


@pytest.fixture(scope="module")
def suite(data_dir) -> Path:
    return data_dir / "interop" / "ngff_conformance"


@pytest.fixture(scope="module")
def schemas(data_dir):
    """Validators for the NGFF 0.6rc0 schemas (offline: every $ref resolves to the local copies)."""
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    d = data_dir / "interop" / "ngff_schemas"
    docs = {p.stem: json.loads(p.read_text()) for p in d.glob("*.schema")}
    reg = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in docs.values()])
    return {k: jsonschema.Draft202012Validator(s, registry=reg) for k, s in docs.items()}


def _errors(validator, doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _close(got, want, atol, rtol) -> bool:
    """The suite's own acceptance rule (transformation_conformance.check_results)."""
    got, want = np.asarray(got, float), np.asarray(want, float)
    if got.shape != want.shape:
        return False
    diff = np.abs(got - want)
    return bool(np.all(diff <= atol) and np.all(diff <= rtol * np.maximum(np.abs(got), np.abs(want))))


def _scene(tmp_path: Path, ome_scene: dict, name="s.ome.zarr") -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"ome": {"version": "0.6rc0", "scene": ome_scene}}}))
    return root


def _cs(name, n=2, unit=None, names="zyx"):
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in names[-n:]]
    return {"name": name, "axes": axes}


# ---------------------------------------------------------------------------------------------
# The conformance suite
# ---------------------------------------------------------------------------------------------
def test_every_conformance_case_in_process(suite):
    """Every case of the public suite: expected points within its tolerances, or an error where it says so."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cases = sorted(p for p in (suite / "cases").iterdir() if p.is_dir())
    assert len(cases) >= 24
    for case in cases:
        conf = tomllib.loads((case / "conformance.toml").read_text())
        src, dst = conf["source"], conf["target"]
        if conf["should_error"]:
            with pytest.raises(AtlasregError):
                apply_points(case, src["name"], dst["name"], src["coordinates"])
            continue
        got, _ = apply_points(case, src["name"], dst["name"], src["coordinates"])
        assert _close(got, dst["coordinates"], conf["absolute_tolerance"], conf["relative_tolerance"]), \
            (case.name, got, dst["coordinates"])


def _run_suite(suite: Path, *patterns: str) -> tuple[int, dict[str, str], str]:
    args = [sys.executable, "transformation_conformance.py", "-B", "cases"]
    for p in patterns:
        args += ["-p", p]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(args + ["--", *DINGUS], cwd=suite, capture_output=True, text=True, env=env, timeout=900)
    rows = dict(line.split("\t")[:2] for line in r.stdout.splitlines() if "\t" in line)
    return r.returncode, rows, r.stderr


def test_conformance_runner_on_a_subset(suite):
    """The suite's own runner calling the CLI (a closed-form inverse, byDimension, a path, an unknown system)."""
    code, rows, err = _run_suite(suite, "^rotation_inverse$", "^byDimension$", "^simple_path_inverse$",
                                 "^unknown_target$")
    assert rows == {"byDimension": "pass", "rotation_inverse": "pass", "simple_path_inverse": "pass",
                    "unknown_target": "pass"}, err
    assert code == 0


@pytest.mark.slow
def test_conformance_runner_every_case(suite):
    """``python3 transformation_conformance.py -B cases -- atlasreg ngff apply``: every row passes (~25 s CPU)."""
    code, rows, err = _run_suite(suite)
    n = len([p for p in (suite / "cases").iterdir() if p.is_dir()])
    assert len(rows) == n and set(rows.values()) == {"pass"}, (rows, err)
    assert code == 0


def test_cli_reply_and_errors(suite, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run(DINGUS + [str(suite / "cases/scale.ome.zarr"), "output", "input", "[[10, 40], [0, 0]]"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"coordinates": [[1.0, 2.0], [0.0, 0.0]]}
    bad = subprocess.run(DINGUS + [str(suite / "cases/scale.ome.zarr"), "input", "potato", "[[1, 2]]"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "potato" in json.loads(bad.stdout)["message"]
    worse = subprocess.run(DINGUS + [str(suite / "cases/scale.ome.zarr"), "input", "output", "[[1, 2"],
                           capture_output=True, text=True, env=env)
    assert worse.returncode != 0 and "COORDINATES" in worse.stderr


# ---------------------------------------------------------------------------------------------
# The specification's transformation types and examples (worked numbers from its text)
# ---------------------------------------------------------------------------------------------
def test_spec_examples_by_dimension_project_axis_and_affine(tmp_path):
    # byDimension example 2 of the spec: 4-D (l, j, k, i) -> 3-D (z, y, x).
    by = {"type": "byDimension", "input": {"name": "in"}, "output": {"name": "out"}, "transformations": [
        {"transformation": {"type": "translation", "translation": [0.5, 1.5]}, "inputAxes": [3, 2],
         "outputAxes": [1, 2]},
        {"transformation": {"type": "scale", "scale": [2]}, "inputAxes": [1], "outputAxes": [0]}]}
    # projectAxis example 1: (y, x) -> (c, z, y, x) with zeros created at 0 and 1.
    proj = {"type": "projectAxis", "createdOutputs": [0, 1], "input": {"name": "in2"}, "output": {"name": "out4"}}
    # affine example 2: 2-D (i, j) -> 3-D (z, y, x).
    aff = {"type": "affine", "affine": [[0, 0, 1], [3, 4, 2], [6, 7, 5]], "input": {"name": "ij"},
           "output": {"name": "zyx"}}
    root = _scene(tmp_path, {"coordinateSystems": [
        {"name": "in", "axes": [{"name": a, "type": "space"} for a in "ljki"]}, _cs("out", 3),
        _cs("in2", 2), {"name": "out4", "axes": [{"name": "c", "type": "channel"}] + _cs("o", 3)["axes"]},
        {"name": "ij", "axes": [{"name": "i", "type": "space"}, {"name": "j", "type": "space"}]}, _cs("zyx", 3)],
        "coordinateTransformations": [by, proj, aff]})
    s = read_scene(root)
    np.testing.assert_allclose(s.map_points([[1.0, 2.0, 3.0, 4.0]], "in", "out"), [[4.0, 4.5, 4.5]])
    np.testing.assert_allclose(s.map_points([[7.0, 8.0]], "in2", "out4"), [[0, 0, 7, 8]])
    np.testing.assert_allclose(s.map_points([[0.0, 0.0, 7.0, 8.0]], "out4", "in2"), [[7, 8]])
    np.testing.assert_allclose(s.map_points([[1.0, 1.0]], "ij", "zyx"), [[1, 9, 18]])
    # A non-square affine, and byDimension reading an input axis twice, have no inverse: an error, not a guess.
    with pytest.raises(NoPathError):
        s.map_points([[1.0, 9.0, 18.0]], "zyx", "ij")
    with pytest.raises(NoPathError):
        s.map_points([[4.0, 4.5, 4.5]], "out", "in")


def test_spec_displacement_field_example(tmp_path):
    """The spec's 2-D displacement example: scale 2 placement, vectors (1, 2) and (0.5, 1.2), (0.75, 1.6) between.

    The field group is written with zarr directly in the spec's layout (multiscales, axes c, y, x; c first)."""
    import zarr

    root = _scene(tmp_path, {"coordinateSystems": [_cs("physical", 2, "micrometer"), _cs("output", 2, "micrometer")],
                             "coordinateTransformations": [{
                                 "type": "displacements", "input": {"name": "physical"}, "output": {"name": "output"},
                                 "path": "coordinateTransformations/displacementField", "interpolation": "linear"}]})
    g = zarr.open_group(str(root / "coordinateTransformations/displacementField"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.6rc0", "multiscales": [{
        "coordinateSystems": [{"name": "physical", "axes": [
            {"name": "c", "type": "displacement", "discrete": True},
            {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]}],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 2.0, 2.0], "input": {"path": "s0"}, "output": {"name": "physical"}}]}]}]}
    u = np.zeros((2, 2, 2))
    u[:, 0, 0] = (1.0, 2.0)
    u[:, 1, 0] = (0.5, 1.2)
    u[:, 0, 1] = (1.0, 2.0)
    u[:, 1, 1] = (0.5, 1.2)
    g.create_array("s0", shape=u.shape, dtype="f8")[...] = u
    pts = [[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]]
    want = np.array(pts) + [[1.0, 2.0], [0.5, 1.2], [0.75, 1.6]]
    got, note = apply_points(root, "physical", "output", pts)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert note is None
    # Off the grid: no value (NaN), never a silent zero; the inverse is solved numerically.
    assert np.isnan(read_scene(root).map_points([[9.0, 0.0]], "physical", "output")).all()
    np.testing.assert_allclose(read_scene(root).map_points(want, "output", "physical"), pts, atol=1e-6)


def test_3d_spec_layout_field_agrees_with_simpleitk(tmp_path):
    """A (3, Z, Y, X) multiscales field written with zarr; SimpleITK's DisplacementFieldTransform is the oracle."""
    import SimpleITK as sitk
    import zarr

    rng = np.random.default_rng(5)
    shape = (5, 6, 7)  # (z, y, x)
    sp, org = np.array([4.0, 3.0, 2.0]), np.array([-3.0, 1.0, 5.0])  # per (z, y, x)
    u = rng.normal(0, 1.5, (3,) + shape)  # components (dz, dy, dx)
    root = _scene(tmp_path, {"coordinateSystems": [_cs("a", 3, "micrometer"), _cs("b", 3, "micrometer")],
                             "coordinateTransformations": [{"type": "displacements", "input": {"name": "a"},
                                                            "output": {"name": "b"}, "path": "ct/f"}]})
    g = zarr.open_group(str(root / "ct/f"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.6rc0", "multiscales": [{
        "coordinateSystems": [{"name": "a", "axes": [{"name": "c", "type": "displacement", "discrete": True}] +
                               _cs("a", 3, "micrometer")["axes"]}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{
            "type": "sequence", "input": {"path": "s0"}, "output": {"name": "a"}, "transformations": [
                {"type": "scale", "scale": [1.0, *sp]}, {"type": "translation", "translation": [0.0, *org]}]}]}]}]}
    g.create_array("s0", shape=u.shape, dtype="f8")[...] = u
    # SimpleITK: image axes x, y, z; vector (dx, dy, dz).
    img = sitk.GetImageFromArray(np.moveaxis(u[::-1], 0, -1).copy(), isVector=True)
    img.SetSpacing(sp[::-1].tolist())
    img.SetOrigin(org[::-1].tolist())
    T = sitk.DisplacementFieldTransform(img)
    lo, hi = org, org + sp * (np.array(shape) - 1)
    pts = rng.uniform(lo + 0.01, hi - 0.01, (200, 3))  # (z, y, x), strictly inside
    want = np.array([T.TransformPoint(tuple(p[::-1]))[::-1] for p in pts])
    got, _ = apply_points(root, "a", "b", pts.tolist())
    np.testing.assert_allclose(got, want, atol=1e-9)
    # The same file through the 3-D reader (a DisplacementField): the same numbers.
    np.testing.assert_allclose(read_ngff(root, "a", "b").map_points(pts), want, atol=1e-9)


def test_coordinates_by_dimension_xarray_like(tmp_path):
    """The spec's xarray-like example: per-axis 1-D coordinate arrays under byDimension, paths from the root ('/')."""
    import zarr

    root = _scene(tmp_path, {"coordinateSystems": [
        {"name": "in", "axes": [{"name": "i", "type": "space"}, {"name": "j", "type": "space"}]},
        {"name": "out", "axes": [{"name": "x", "type": "space", "unit": "micrometer"},
                                 {"name": "y", "type": "space", "unit": "micrometer"}]}],
        "coordinateTransformations": [{"type": "byDimension", "input": {"name": "in"}, "output": {"name": "out"},
                                       "transformations": [
            {"transformation": {"type": "coordinates", "path": "/xCoordinates"}, "inputAxes": [0], "outputAxes": [0]},
            {"transformation": {"type": "coordinates", "path": "/yCoordinates"}, "inputAxes": [1],
             "outputAxes": [1]}]}]})
    for name, vals in (("xCoordinates", [0.0, 1.0, 4.0, 9.0]), ("yCoordinates", [10.0, 20.0, 40.0])):
        g = zarr.open_group(str(root / name), mode="w", zarr_format=3)
        g.attrs["ome"] = {"version": "0.6rc0", "multiscales": [{
            "coordinateSystems": [{"name": "in", "axes": [{"name": "c", "type": "coordinate", "discrete": True},
                                                          {"name": "i", "type": "space"}]}],
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "identity", "input": {"path": "s0"}, "output": {"name": "in"}}]}]}]}
        g.create_array("s0", shape=(1, len(vals)), dtype="f8")[...] = np.array([vals])
    got, _ = apply_points(root, "in", "out", [[2.0, 1.0], [2.5, 0.5], [3.0, 2.0]])
    np.testing.assert_allclose(got, [[4.0, 20.0], [6.5, 15.0], [9.0, 40.0]])
    with pytest.raises(NoPathError):  # coordinates have no inverse atlasreg computes
        apply_points(root, "out", "in", [[4.0, 20.0]])


# ---------------------------------------------------------------------------------------------
# Scenes: coordinate systems named by image path stay distinct
# ---------------------------------------------------------------------------------------------
def _stitching(tmp_path, dims=2, with_images=True):
    """The spec's stitching example: four tiles, each tile_i/physical -> world, tiles defined in their groups."""
    offsets = [[0, 0], [0, 348], [276, 0], [276, 348]] if dims == 2 else \
        [[0, 0, 0], [0, 0, 348], [0, 276, 0], [0, 276, 348]]
    root = _scene(tmp_path, {"coordinateSystems": [_cs("world", dims, "micrometer")],
                             "coordinateTransformations": [
        {"type": "translation", "translation": o, "input": {"path": f"tile_{i}", "name": "physical"},
         "output": {"name": "world"}, "name": f"tile_{i}_mm to world"} for i, o in enumerate(offsets)]})
    if with_images:
        for i in range(4):
            (root / f"tile_{i}").mkdir()
            ms = {"coordinateSystems": [_cs("physical", dims, "micrometer")], "datasets": [
                {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [0.5] * dims,
                                                              "input": {"path": "s0"}, "output": {"name": "physical"}}]}]}
            (root / f"tile_{i}/zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                                  "attributes": {"ome": {"version": "0.6rc0",
                                                                                         "multiscales": [ms]}}}))
    return root


def test_scene_tiles_keep_their_paths(tmp_path, schemas):
    root = _stitching(tmp_path)
    attrs = json.loads((root / "zarr.json").read_text())["attributes"]
    assert _errors(schemas["scene"], attrs) == []  # the file is the spec's, valid
    s = read_scene(root)
    assert {"tile_0/physical", "tile_1/physical", "tile_2/physical", "tile_3/physical", "world"} <= set(s.nodes())
    np.testing.assert_allclose(s.map_points([[1.0, 2.0]], "tile_3/physical", "world"), [[277, 350]])
    np.testing.assert_allclose(s.map_points([[1.0, 2.0]], "tile_1/physical", "tile_2/physical"), [[-275, 350]])
    with pytest.raises(InputError, match="4 groups"):  # a bare 'physical' is ambiguous: said, not guessed
        s.map_points([[1.0, 2.0]], "physical", "world")


def test_scene_graph_3d_nodes_carry_the_path(tmp_path):
    g = scene_graph(_stitching(tmp_path, dims=3))
    assert {"tile_0/physical", "tile_1/physical", "world"} <= set(g.spaces)
    assert g.spaces["tile_1/physical"] == ar.Space("tile_1/physical", "um")
    np.testing.assert_allclose(g.map_points([[1.0, 2.0, 3.0]], "tile_1/physical", "tile_2/physical"),
                               [[1, -274, 351]])
    (tmp_path / "b").mkdir()
    T = load_transform(_stitching(tmp_path / "b", dims=3), src="tile_3/physical", dst="world")
    np.testing.assert_allclose(T.map_points([[0.0, 0, 0]]), [[0, 276, 348]])


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
def test_every_spec_unit_reaches_an_atlasreg_space(tmp_path):
    for unit, nm in SPACE_UNITS_NM.items():
        target, factor = to_atlasreg_unit(unit)
        per = {"nm": 1, "um": 10**3, "mm": 10**6}[target]
        assert factor == pytest.approx(float(per / nm), rel=1e-15), unit
    # A file in angstrom and metres: points given in the atlasreg units (nm, mm) map exactly.
    doc = {"ome": {"version": "0.6rc0", "scene": {"coordinateSystems": [
        _cs("em", 3, "angstrom"), _cs("lab", 3, "meter")], "coordinateTransformations": [
        {"type": "scale", "scale": [1e-10] * 3, "input": {"name": "em"}, "output": {"name": "lab"}}]}}}
    p = tmp_path / "u.json"
    p.write_text(json.dumps(doc))
    T = read_ngff(p)
    assert (T.src, T.dst) == (ar.Space("em", "nm"), ar.Space("lab", "mm"))
    np.testing.assert_allclose(T.map_points([[1e6, 0, 0]]), [[1.0, 0, 0]], rtol=1e-12)  # 1 mm of EM is 1 mm
    doc["ome"]["scene"]["coordinateSystems"][1]["axes"][0]["unit"] = "second"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="one unit"):
        read_ngff(p)


# ---------------------------------------------------------------------------------------------
# What atlasreg writes: valid against the schemas, read back the same by atlasreg and the CLI
# ---------------------------------------------------------------------------------------------
def _written_cases():
    em, lm = ar.Space("em", "nm"), ar.Space("lm", "um", "psl")
    mid, ccf = ar.Space("lm_warped", "um"), ar.Space("ccf", "um", "asr")
    rng = np.random.default_rng(3)
    F = ar.DisplacementField(rng.normal(0, 2.0, (6, 7, 8, 3)), spacing=(10, 12, 14), origin=(-5, 3, 2),
                             direction=ar.Affine.from_rotation([0, 0, 30]).matrix[:3, :3], src=lm, dst=mid)
    G = ar.DisplacementField(rng.normal(0, 2.0, (5, 5, 5, 3)), spacing=(20, 20, 20), origin=(-10, -10, -10),
                             src=lm, dst=mid)
    s = rng.uniform(0, 80, (12, 3))
    tps = ar.ThinPlateSpline(s, s * 1.02 + np.sin(s / 20), src=mid, dst=ccf)
    chain = ar.Sequence([ar.Affine.from_scale(1e-3, src=em, dst=lm), F, tps])
    ants_like = G.with_inverse(ar.DisplacementField(-G.displacement, spacing=(20, 20, 20), origin=(-10, -10, -10),
                                                    src=mid, dst=lm))
    return {"affine": ar.Affine.from_rotation([10, 20, 30], src="a", dst="b", center=(5, 5, 5)),
            "mirror": ar.Affine.from_scale([-1, 2, 3], src="a", dst="b"),
            "field": F, "field_inverse": F.inverse(), "tps": tps, "tps_inverse": tps.inverse(),
            "chain": chain, "chain_inverse": chain.inverse(), "bijection": ants_like}


def test_written_files_validate_and_read_back_through_the_cli_reader(tmp_path, schemas):
    import zarr

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 80, (60, 3))
    for name, T in _written_cases().items():
        p = save_transform(T, tmp_path / f"{name}.json")
        doc = json.loads(p.read_text())
        assert _errors(schemas["scene"], doc) == [], name
        assert _errors(schemas["strict_coordinate_systems"], doc["ome"]["scene"]["coordinateSystems"]) == [], name
        for ct in doc["ome"]["scene"]["coordinateTransformations"]:
            for key in ("input", "output"):
                assert set(ct[key]) == {"name"}, name
        fields = tmp_path / f"{name}_fields.zarr" / "coordinateTransformations"
        for g in sorted(q for q in fields.iterdir() if q.is_dir()) if fields.exists() else []:
            attrs = dict(zarr.open_group(str(g), mode="r").attrs)
            assert _errors(schemas["image"], attrs) == [], (name, g.name)
            ms = attrs["ome"]["multiscales"][0]
            assert ms["coordinateSystems"][0]["axes"][0]["type"] in ("displacement", "coordinate")
            assert zarr.open_array(str(g / "s0"), mode="r").shape[0] == 3
        x = pts * (1e3 if T.src.unit == "nm" else 1.0)
        want = T.map_points(x)
        back = load_transform(p)
        assert (back.src, back.dst) == (T.src, T.dst), name
        got_lib = back.map_points(x)
        got_cli, _ = apply_points(p, T.src.name, T.dst.name, x)
        for got in (got_lib, got_cli):
            assert np.array_equal(np.isnan(got), np.isnan(want)), name
            ok = ~np.isnan(want)
            assert np.allclose(got[ok], want[ok], rtol=0, atol=1e-9 * max(1.0, np.abs(want[ok]).max())), name


def test_a_spline_is_also_a_sampled_field_other_readers_can_use(tmp_path):
    """Without atlasreg's extension key the file is a plain displacements field near the spline."""
    T = _written_cases()["tps"]
    p = save_transform(T, tmp_path / "tps.json")
    doc = json.loads(p.read_text())
    ct = doc["ome"]["scene"]["coordinateTransformations"][0]
    assert ct["type"] == "displacements" and "thinplatespline" in ct["atlasreg"]
    del ct["atlasreg"]
    p.write_text(json.dumps(doc))
    x = np.random.default_rng(1).uniform(T.src_points.min(0), T.src_points.max(0), (100, 3))
    got, _ = apply_points(p, "lm_warped", "ccf", x)
    err = np.abs(got - T.map_points(x)).max()
    assert 0 < err < 0.05, err


def test_a_chain_through_one_space_twice_is_one_edge_or_refused(tmp_path):
    a, b = ar.Space("a", "um"), ar.Space("b", "um")
    A = ar.Affine.from_translation([1, 0, 0], src=a, dst=b)
    loop = ar.Sequence([A, ar.Affine.from_translation([0, 2, 0], src=b, dst=a), A])
    p = save_transform(loop, tmp_path / "loop.json")
    np.testing.assert_allclose(load_transform(p).map_points([[0.0, 0, 0]]), [[2, 2, 0]])
    F = ar.DisplacementField(np.ones((3, 3, 3, 3)), spacing=(50, 50, 50), src=b, dst=a)
    with pytest.raises(InputError, match="twice"):
        save_transform(ar.Sequence([A, ar.Affine.from_translation([0, 2, 0], src=b, dst=a), F.inverse()]),
                       tmp_path / "bad.json")


def test_old_atlasreg_files_still_read(tmp_path):
    """Files atlasreg wrote before 0.6rc0 (string input/output, inverseOf, vector axis last) keep loading."""
    import zarr

    rng = np.random.default_rng(2)
    u = rng.normal(0, 1, (4, 5, 6, 3))
    g = zarr.open_group(str(tmp_path / "old_fields.zarr"), mode="w")
    a = g.create_array("coordinateTransformations/field_0", shape=u.shape, dtype="f8")
    a[...] = u
    a.attrs["ome"] = {"version": "0.6", "coordinateSystems": [{"name": "field_0", "axes": [
        *[{"name": n, "type": "space", "unit": "micrometer"} for n in "xyz"],
        {"name": "d", "type": "displacement", "discrete": True}]}], "coordinateTransformations": [
        {"type": "sequence", "input": "field_0_array", "output": "field_0", "transformations": [
            {"type": "scale", "scale": [10.0, 10.0, 10.0, 1.0]},
            {"type": "translation", "translation": [1.0, 2.0, 3.0, 0.0]}]}]}
    doc = {"ome": {"version": "0.6", "coordinateSystems": [
        {"name": n, "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "xyz"]} for n in "ab"],
        "coordinateTransformations": [{"type": "inverseOf", "input": "b", "output": "a", "transformation": {
            "type": "displacements", "path": "old_fields.zarr/coordinateTransformations/field_0",
            "input": "a", "output": "b"}}]}}
    (tmp_path / "old.json").write_text(json.dumps(doc))
    F = ar.DisplacementField(u, spacing=(10, 10, 10), origin=(1, 2, 3), src="a", dst="b")
    T = load_transform(tmp_path / "old.json")
    assert (T.src.name, T.dst.name) == ("b", "a")
    y = F.map_points(rng.uniform(12, 40, (20, 3)))
    np.testing.assert_allclose(T.map_points(y), F.inverse().map_points(y), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Crafted files (issue 13 item 13): paths stay inside, dtype / shape / size checked before reading
# ---------------------------------------------------------------------------------------------
def _affine_from_array(tmp_path, rel: str, make=None):
    import zarr

    root = tmp_path / "inner"
    root.mkdir(exist_ok=True)
    target = make or (tmp_path / "secret")
    if make is None:
        zarr.open_array(str(target), mode="w", shape=(2, 3), dtype="f8")[...] = [[1, 0, 5], [0, 1, 6]]
    doc = {"ome": {"version": "0.6rc0", "scene": {"coordinateSystems": [_cs("in"), _cs("out")],
                                                   "coordinateTransformations": [
        {"type": "affine", "path": rel, "input": {"name": "in"}, "output": {"name": "out"}}]}}}
    (root / "t.json").write_text(json.dumps(doc))
    return root / "t.json"


@pytest.mark.parametrize("rel", ["../secret", "a/../../secret", "/../secret", "//../secret"])
def test_paths_that_climb_out_are_refused(tmp_path, rel):
    p = _affine_from_array(tmp_path, rel)
    with pytest.raises(InputError, match="outside"):
        apply_points(p, "in", "out", [[0.0, 0.0]])


def test_absolute_path_means_the_hierarchy_root_not_the_disk(tmp_path):
    p = _affine_from_array(tmp_path, str(tmp_path / "secret"))  # "/tmp/.../secret": inside 'inner', not found
    with pytest.raises(InputError, match="no zarr array"):
        apply_points(p, "in", "out", [[0.0, 0.0]])
    import zarr

    zarr.open_array(str(tmp_path / "inner/params"), mode="w", shape=(2, 3), dtype="f8")[...] = [[1, 0, 5], [0, 1, 6]]
    p = _affine_from_array(tmp_path, "/params", make=tmp_path / "inner/params")
    np.testing.assert_allclose(apply_points(p, "in", "out", [[0.0, 0.0]])[0], [[5, 6]])


def test_symlinks_out_of_the_hierarchy_are_refused(tmp_path):
    p = _affine_from_array(tmp_path, "link")
    os.symlink(tmp_path / "secret", tmp_path / "inner/link")
    with pytest.raises(InputError, match="outside"):
        apply_points(p, "in", "out", [[0.0, 0.0]])
    # A chunk inside the array that links out of the hierarchy.
    import zarr

    zarr.open_array(str(tmp_path / "inner/arr"), mode="w", shape=(2, 3), dtype="f8")[...] = 1
    chunk = next(q for q in (tmp_path / "inner/arr").rglob("*") if q.is_file() and q.name != "zarr.json")
    chunk.unlink()
    os.symlink(tmp_path / "secret/zarr.json", chunk)
    p = _affine_from_array(tmp_path, "arr", make=tmp_path / "inner/arr")
    with pytest.raises(InputError, match="symbolic link"):
        apply_points(p, "in", "out", [[0.0, 0.0]])


def test_scene_references_cannot_climb_out(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    root = _scene(tmp_path, {"coordinateTransformations": [
        {"type": "identity", "input": {"path": "../elsewhere", "name": "physical"}, "output": {"name": "world"}}]})
    with pytest.raises(InputError, match="outside"):
        read_scene(root)


def test_dtype_shape_and_size_checked_before_reading(tmp_path, monkeypatch):
    import zarr

    root = tmp_path / "inner"
    for name, kw in (("text", {"shape": (2, 3), "dtype": str}), ("flag", {"shape": (2, 3), "dtype": bool}),
                     ("flat", {"shape": (6,), "dtype": "f8"})):
        zarr.open_array(str(root / name), mode="w", **kw)
    for name, match in (("text", "dtype"), ("flag", "dtype"), ("flat", "expected 2 dimensions")):
        p = _affine_from_array(tmp_path, name, make=root / name)
        with pytest.raises(InputError, match=match):
            apply_points(p, "in", "out", [[0.0, 0.0]])
    # Size: judged from the metadata (a 10^12-element array is refused without touching a chunk).
    zarr.open_array(str(root / "huge"), mode="w", shape=(10**6, 10**6), dtype="f8", chunks=(1000, 1000))
    p = _affine_from_array(tmp_path, "huge", make=root / "huge")
    with pytest.raises(InputError, match="limit"):
        apply_points(p, "in", "out", [[0.0, 0.0]])
    # A displacement field over the (configurable) size bound.
    monkeypatch.setattr(store, "MAX_ARRAY_BYTES", 5_000)
    T = _written_cases()["field"]
    q = save_transform(T, tmp_path / "f.json")
    with pytest.raises(InputError, match="limit"):
        load_transform(q)
    # An oversized metadata document is not parsed.
    monkeypatch.setattr(store, "MAX_JSON_BYTES", 100)
    with pytest.raises(InputError, match="bytes"):
        read_scene(q)


def test_bspline_written_as_a_sampled_field_with_its_exact_grid(tmp_path, schemas):
    """A SimpleITK B-spline (.tfm) saved as NGFF: valid, reloads exactly (SimpleITK is the oracle), and its
    sampled field alone (what other readers use) is close inside the grid."""
    import SimpleITK as sitk

    img = sitk.Image([20, 16, 12], sitk.sitkFloat32)
    img.SetSpacing((25.0, 25.0, 40.0))
    img.SetOrigin((100.0, -50.0, 30.0))
    bs = sitk.BSplineTransformInitializer(img, [4, 3, 3], 3)
    rng = np.random.default_rng(4)
    bs.SetParameters(rng.normal(0, 8.0, len(bs.GetParameters())).tolist())
    sitk.WriteTransform(bs, str(tmp_path / "bs.tfm"))
    T = load_transform(tmp_path / "bs.tfm", src="fixed", dst="moving")
    p = save_transform(T, tmp_path / "bs.json")
    doc = json.loads(p.read_text())
    assert _errors(schemas["scene"], doc) == []
    lo = np.array(img.GetOrigin())
    hi = lo + np.array(img.GetSpacing()) * (np.array(img.GetSize()) - 1)
    pts = rng.uniform(lo, hi, (300, 3))
    want = np.array([bs.TransformPoint(tuple(q)) for q in pts])
    np.testing.assert_allclose(load_transform(p).map_points(pts), want, atol=1e-9)
    np.testing.assert_allclose(apply_points(p, "fixed", "moving", pts)[0], want, atol=1e-9)
    ct = doc["ome"]["scene"]["coordinateTransformations"][0]
    del ct["atlasreg"]
    p.write_text(json.dumps(doc))
    err = np.abs(apply_points(p, "fixed", "moving", pts)[0] - want).max()
    assert 0 < err < 0.1 * np.abs(want - pts).max(), err  # linear between samples of a rough random spline


def test_multiscales_levels_and_bare_snippets(tmp_path):
    """A multiscales image: each level's array index space maps to the intrinsic system (scale + translation, as
    the spec defines datasets); metadata snippets without the 'ome' wrapper, as the spec's examples are, read too."""
    ms = {"coordinateSystems": [_cs("physical", 2, "micrometer")], "datasets": [
        {"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.5, 0.25], "input": {"path": "s0"}, "output": {"name": "physical"}}]},
        {"path": "s1", "coordinateTransformations": [
            {"type": "sequence", "input": {"path": "s1"}, "output": {"name": "physical"}, "transformations": [
                {"type": "scale", "scale": [1.0, 0.5]}, {"type": "translation", "translation": [0.25, 0.125]}]}]}]}
    root = tmp_path / "img.ome.zarr"
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "ome": {"version": "0.6rc0", "multiscales": [ms]}}}))
    s = read_scene(root)
    np.testing.assert_allclose(s.map_points([[2.0, 4.0]], "s0", "physical"), [[1.0, 1.0]])
    np.testing.assert_allclose(s.map_points([[1.0, 1.0]], "s0", "s1"), [[0.25, 0.25]])  # level 0 -> level 1 index
    snippet = tmp_path / "affine2d2d.json"  # the spec's affine example 1: y = j + 2i + 3, x = 4j + 5i + 6
    snippet.write_text(json.dumps({"coordinateSystems": [
        {"name": "ji", "axes": [{"name": "j", "type": "space"}, {"name": "i", "type": "space"}]},
        {"name": "yx", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]}],
        "coordinateTransformations": [{"type": "affine", "affine": [[1, 2, 3], [4, 5, 6]], "input": {"name": "ji"},
                                       "output": {"name": "yx"}}]}))
    np.testing.assert_allclose(apply_points(snippet, "ji", "yx", [[1.0, 1.0]])[0], [[6.0, 15.0]])
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"type": "translation", "translation": [9, -1.42], "input": {"name": "i"},
                               "output": {"name": "o"}}))
    np.testing.assert_allclose(apply_points(one, "o", "i", [[9.0, -1.42]])[0], [[0.0, 0.0]])


def test_files_opened_by_a_relative_path_read_the_same(tmp_path, monkeypatch):
    """``atlasreg points reg/ cells.csv`` opens the result by a relative path: its field arrays (found by
    absolute paths inside the hierarchy) must still be inside it (this raised ValueError from pathlib)."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 80, (40, 3))
    for name in ("field", "chain", "bijection"):
        T = _written_cases()[name]
        save_transform(T, tmp_path / "reg" / f"{name}.json")
        x = pts * (1e3 if T.src.unit == "nm" else 1.0)
        monkeypatch.chdir(tmp_path)
        got = load_transform(Path("reg") / f"{name}.json").map_points(x)
        monkeypatch.chdir(tmp_path / "reg")
        again = load_transform(f"{name}.json").map_points(x)
        want = T.map_points(x)
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        ok = ~np.isnan(want)
        assert np.allclose(got[ok], want[ok], atol=1e-9) and np.allclose(again[ok], want[ok], atol=1e-9), name


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_field_array_with_nan_or_inf_is_refused_naming_it(tmp_path, bad, dtype):
    """A stored field read as it is (float32 files stay float32) is still checked value by value: a NaN or inf
    written into the array by zarr itself is an error naming that array, not a silently wrong point."""
    import zarr

    rng = np.random.default_rng(4)
    u = rng.normal(0, 3, (6, 7, 8, 3)).astype(dtype)
    F = ar.DisplacementField(u, spacing=(10, 10, 10), src="a", dst="b")
    p = save_transform(F, tmp_path / "f.json")
    arrays = sorted((tmp_path / "f_fields.zarr").rglob("s0"))
    assert arrays
    back = load_transform(p)
    pts = rng.uniform(5, 45, (50, 3))
    assert np.array_equal(back.map_points(pts), F.map_points(pts))  # the same values, the same arithmetic
    a = zarr.open_array(str(arrays[0]), mode="r+")
    assert np.dtype(a.dtype) == np.dtype(dtype)
    a[1, 2, 3, 4] = bad
    with pytest.raises(InputError, match="NaN or inf") as exc:
        load_transform(p)
    assert "f_fields.zarr" in str(exc.value)
