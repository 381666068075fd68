"""Landmark files (BigWarp CSV, named-column CSV, units required) and the ``atlasreg landmarks`` CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from atlasreg import InputError, OutputExistsError, Space, load_transform, save_transform
from atlasreg.cli import app
from atlasreg.io.landmarks import LandmarkPairs, read_landmarks, write_landmarks
from atlasreg.registration.landmarks import fit_landmarks

runner = CliRunner()


def test_real_files_read_with_units(data_dir):
    d = data_dir / "em_lm"
    m = read_landmarks(d / "microns_em_2p_landmarks.csv", src_unit="nm", dst_unit="mm", src_voxel_size=(4, 4, 40))
    assert len(m) == 2000 and m.src == Space("em", "nm") and m.dst == Space("lm", "mm")
    # Pt-1: em (284361, 136378, 14977) voxels -> nm
    assert m.names[0] == "Pt-1"
    np.testing.assert_allclose(m.src_points[0], [284361 * 4, 136378 * 4, 14977 * 40])
    np.testing.assert_allclose(m.dst_points[0], [0.804354, 0.934165, 0.274648])
    z = read_landmarks(d / "zheng-ca3-em-to-uct.csv")  # units in the column names: x_em_nm, x_uct_um
    assert (z.src.name, z.src.unit, z.dst.name, z.dst.unit) == ("em", "nm", "uct", "um") and len(z) == 13
    c = read_landmarks(d / "zheng-ca3-uct-to-ccf.csv", src_unit="um", dst=Space("ccf", "um", "asr"))
    assert c.dst.orientation == "asr" and len(c) == 14 and c.names[:2] == ["0", "1"]


def test_units_not_stated_is_an_error(data_dir):
    with pytest.raises(InputError, match="src_unit") as e:
        read_landmarks(data_dir / "em_lm" / "microns_em_2p_landmarks.csv")
    assert "microns_em_2p_landmarks.csv" in str(e.value)
    with pytest.raises(InputError, match="conflicting units"):
        read_landmarks(data_dir / "em_lm" / "zheng-ca3-em-to-uct.csv", src_unit="um")


def test_bigwarp_round_trip_and_inactive_rows(tmp_path):
    p = tmp_path / "bw.csv"
    p.write_text('"Pt-0","true","1.5","2.0","3.0","10.0","20.0","30.0"\n'
                 '"Pt-1","false","Infinity","2.0","3.0","11.0","21.0","31.0"\n'
                 '"Pt-2","true","4.0","5.0","6.0","40.0","50.0","60.0"\n')
    with pytest.raises(InputError, match="unit"):
        read_landmarks(p)
    pairs = read_landmarks(p, src_unit="um", dst_unit="um")
    assert pairs.src.name == "moving" and pairs.dst.name == "fixed"
    assert pairs.names == ["Pt-0", "Pt-2"]  # the inactive, unplaced landmark is dropped
    out = write_landmarks(pairs, tmp_path / "out.csv", format="bigwarp")
    assert out.read_text().splitlines()[0] == '"Pt-0","true","1.5","2.0","3.0","10.0","20.0","30.0"'
    back = read_landmarks(out, src_unit="um", dst_unit="um")
    np.testing.assert_array_equal(back.src_points, pairs.src_points)
    with pytest.raises(OutputExistsError):
        write_landmarks(pairs, out, format="bigwarp")


def test_csv_round_trip_keeps_spaces_and_units(tmp_path):
    rng = np.random.default_rng(0)
    pairs = LandmarkPairs(rng.uniform(0, 1e6, (5, 3)), rng.uniform(0, 2, (5, 3)), Space("h01_em", "nm"),
                          Space("lm", "mm"), names=list("abcde"))
    out = write_landmarks(pairs, tmp_path / "p.csv")
    back = read_landmarks(out)  # nothing said: the columns carry it
    assert back.src == pairs.src and back.dst == pairs.dst and back.names == list("abcde")
    np.testing.assert_array_equal(back.src_points, pairs.src_points)
    np.testing.assert_array_equal(back.dst_points, pairs.dst_points)


def test_bad_rows_name_the_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("name,em_x,em_y,em_z,lm_x,lm_y,lm_z\na,1,2,3,4,5,6\nb,1,,3,4,5,6\n")
    with pytest.raises(InputError, match=r"row 2 \(b\).*em_y"):
        read_landmarks(p, src_unit="nm", dst_unit="mm")
    p.write_text("name,em_x,em_y,em_z,lm_x,lm_y,lm_z\na,1,2,3,4,5,6\nb,1,nan,3,4,5,6\n")
    with pytest.raises(InputError, match=r"NaN.*row 2 \(b\)"):
        read_landmarks(p, src_unit="nm", dst_unit="mm")
    p.write_text("p,q,r,s,t,u\n1,2,3,4,5,6\n")
    with pytest.raises(InputError, match="src_columns"):
        read_landmarks(p, src_unit="nm", dst_unit="mm")
    pairs = read_landmarks(p, src_unit="nm", dst_unit="mm", src_columns="pqr", dst_columns="stu",
                           src="a", dst="b")
    assert pairs.dst_points.tolist() == [[4.0, 5.0, 6.0]]


def test_fitted_spline_saves_and_loads_exactly(tmp_path, data_dir):
    pairs = read_landmarks(data_dir / "em_lm" / "zheng-ca3-uct-to-ccf.csv", src_unit="um", dst_unit="um",
                           dst="ccf")
    T = fit_landmarks(pairs, model="tps")
    save_transform(T, tmp_path / "t.json")
    L = load_transform(tmp_path / "t.json")
    q = pairs.src_points + 10.0
    np.testing.assert_allclose(L.map_points(q), T.map_points(q), rtol=0, atol=1e-9)
    assert L.src == T.src and L.dst == T.dst


def test_cli_fit_apply_report(tmp_path, data_dir):
    lm = data_dir / "em_lm" / "zheng-ca3-uct-to-ccf.csv"
    out = tmp_path / "uct_to_ccf.json"
    r = runner.invoke(app, ["landmarks", "fit", str(lm), "--src-unit", "um", "--dst-unit", "um", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output and "affine" in r.output
    rep = json.loads((tmp_path / "uct_to_ccf.report.json").read_text())
    assert rep["n_pairs"] == 14 and len(rep["heldout"]) == 14 and rep["src"] == "uct" and rep["dst"] == "ccf"
    T = load_transform(out)
    pts = tmp_path / "pts.csv"
    pts.write_text("x,y,z,cell\n1934.775545117448,1055.5838421416777,536.704043593967,7\n1000,900,300,8\n")
    r = runner.invoke(app, ["landmarks", "apply", str(out), str(pts), "-o", str(tmp_path / "mapped.csv")])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "mapped.csv").read_text().splitlines()
    assert lines[0] == "x,y,z,cell" and lines[1].endswith(",7")
    got = np.array([float(v) for v in lines[2].split(",")[:3]])
    np.testing.assert_allclose(got, T.map_points([[1000, 900, 300]])[0], atol=1e-6)
    r = runner.invoke(app, ["landmarks", "report", str(tmp_path / "uct_to_ccf.report.json"),
                            "--residuals", str(tmp_path / "res.csv")])
    assert r.exit_code == 0 and "candidates" in r.output
    assert len((tmp_path / "res.csv").read_text().splitlines()) == 15
    r = runner.invoke(app, ["landmarks", "report", str(lm), "--transform", str(out)])
    assert r.exit_code == 0 and "14 pairs" in r.output, r.output
    # Units not stated -> exit code 2 with the reason; existing output -> exit code 4.
    r = runner.invoke(app, ["landmarks", "fit", str(lm), "-o", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "unit" in r.output
    r = runner.invoke(app, ["landmarks", "fit", str(lm), "--src-unit", "um", "--dst-unit", "um", "-o", str(out)])
    assert r.exit_code == 4


@pytest.mark.parametrize("verb", ["fit", "apply", "report"])
def test_cli_help_has_an_example(verb):
    r = runner.invoke(app, ["landmarks", verb, "--help"])
    assert r.exit_code == 0 and "atlasreg landmarks " + verb in r.output
