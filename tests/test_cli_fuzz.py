"""The command line under bad input: a documented exit code and one readable line, never a traceback.

Exit codes (``atlasreg.cli._app``): 2 bad input (file, argument, value; also click's usage
errors), 3 spaces do not chain, 4 output exists without ``--force``, 1 anything else atlasreg
reports. Every verb is driven with damaged files made here from the real data in
``ATLASREG_DATA`` (truncated, garbage, missing columns, wrong suffix), with bad option
values, and with hypothesis-generated garbage arguments. ``--help`` of every verb must work
and show an example command.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import atlasreg as ar
from atlasreg.cli import app

EXIT = {"ok": 0, "failed": 1, "input": 2, "spaces": 3, "exists": 4}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def _leaves(cmd, path=()):
    if hasattr(cmd, "commands"):  # a group: recurse into its verbs
        for name, sub in sorted(cmd.commands.items()):
            yield from _leaves(sub, path + (name,))
    else:
        yield path, cmd


VERBS = list(_leaves(typer.main.get_command(app)))


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    from conftest import _data_dir, data_available

    # the real data when it is here (tests that need it take the data_dir fixture); never a download otherwise
    monkeypatch.setenv("ATLASREG_DATA", str(_data_dir() if data_available() else tmp_path / "no_data"))
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path / "cache"))  # never the user's cache, never the network
    monkeypatch.setenv("ATLASREG_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)  # relative outputs land in the test's folder


def run(args: list[str]):
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    exc = res.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise AssertionError(f"atlasreg {' '.join(map(str, args))}: uncaught {type(exc).__name__}: {exc}\n{tb}")
    return res


def assert_clean_error(res, code: int, *needles: str) -> str:
    """Exit ``code``; stderr ends with exactly one ``error: ...`` line holding every needle; no traceback."""
    out, err = res.stdout, res.stderr
    assert "Traceback" not in out + err
    assert res.exit_code == code, f"exit {res.exit_code} (want {code}); stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one final 'error: ...' line, got: {err!r}"
    for n in needles:
        assert n in errors[0], f"{n!r} not named in {errors[0]!r}"
    return errors[0]


def assert_usage_error(res, *needles: str) -> None:
    """click's own errors (unknown option, missing argument, bad type): exit 2 and an 'Error' naming it."""
    err = res.stderr
    assert "Traceback" not in res.stdout + err
    assert res.exit_code == 2, f"exit {res.exit_code}; stderr: {err}"
    assert "Error" in err
    flat = " ".join(err.replace("│", " ").split())
    for n in needles:
        assert n in flat, f"{n!r} not in {flat!r}"


# -- help --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [p for p, _ in VERBS], ids=["-".join(p) for p, _ in VERBS])
def test_help_of_every_verb_shows_an_example(path):
    res = run([*path, "--help"])
    assert res.exit_code == 0 and "Traceback" not in res.stdout
    text = " ".join(res.stdout.replace("│", " ").split())
    assert "Example" in text, f"no example in `atlasreg {' '.join(path)} --help`"
    assert f"atlasreg {' '.join(path)}" in text  # the example is a command line of this very verb


@pytest.mark.parametrize("path", [p for p, _ in VERBS if p != ("version",)],
                         ids=["-".join(p) for p, _ in VERBS if p != ("version",)])
def test_every_verb_takes_quiet_and_verbose(path):
    text = run([*path, "--help"]).stdout
    for flag in ("--quiet", "--verbose"):
        assert flag in text, f"`atlasreg {' '.join(path)}` has no {flag}"


def test_quiet_after_the_verb_silences_progress(tmp_path):
    import logging

    res = run(["demo", "--data-dir", str(tmp_path), "-o", str(tmp_path / "o"), "--quiet"])
    assert_clean_error(res, EXIT["input"], "atlas/")
    assert logging.getLogger().level == logging.WARNING
    run(["demo", "--data-dir", str(tmp_path), "-o", str(tmp_path / "o"), "-v"])
    assert logging.getLogger().level == logging.DEBUG
    run(["--quiet", "qc", "--help"])  # before the verb: the root's option, as ever
    from _demo_run import _drop_closed_log_handlers

    logging.getLogger().setLevel(logging.INFO)
    _drop_closed_log_handlers()


def test_root_help_lists_every_verb():
    text = run(["--help"]).stdout
    for path, _ in VERBS:
        assert path[0] in text


# -- a corpus of damaged inputs made from the real data ------------------------------------------------
@pytest.fixture(scope="module")
def files(data_dir, tmp_path_factory) -> dict[str, Path]:
    from atlasreg.io.landmarks import read_landmarks
    from atlasreg.transforms.fitting import fit_linear

    d = tmp_path_factory.mktemp("cli_inputs")
    f: dict[str, Path] = {}

    def put(name: str, data: bytes) -> Path:
        p = d / name
        p.write_bytes(data)
        f[name] = p
        return p

    syn = pd.read_csv(data_dir / "neurons/hemibrain_em/synapses/722817260.csv").head(50)
    # Points in the CCF (µm): synapse coordinates moved into the 200 µm atlas' extent.
    pts = syn[["x", "y", "z"]].astype(float).copy()
    pts[:] = (pts.to_numpy() - pts.to_numpy().min(0)) / np.ptp(pts.to_numpy(), 0) * 4000 + 3000
    put("points.csv", pts.to_csv(index=False).encode())
    put("points_noz.csv", pts.drop(columns="z").to_csv(index=False).encode())
    put("points_text.csv", pts.astype(object).assign(y="north").to_csv(index=False).encode())
    put("existing.csv", b"x,y,z\n1,2,3\n")
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    for suf in (".csv", ".tif", ".nii.gz", ".json", ".tfm", ".parquet", ".swc", ".npz", ".zarr"):
        put(f"garbage{suf}", garbage)
    put("empty.csv", b"")
    swc = (data_dir / "neurons/hemibrain_em/722817260.swc").read_bytes()
    put("truncated.swc", swc[: len(swc) // 2 + 7])
    lm = (data_dir / "em_lm/zheng-ca3-em-to-uct.csv").read_bytes()
    put("landmarks.csv", lm)
    put("landmarks_truncated.csv", lm[: lm.index(b"\n", len(lm) // 2) + 4])
    put("microns.csv", (data_dir / "em_lm/microns_em_2p_landmarks.csv").read_bytes()[:20000].rsplit(b"\n", 1)[0])
    pairs = read_landmarks(data_dir / "em_lm/zheng-ca3-em-to-uct.csv")
    A = ar.Affine(fit_linear(pairs.src_points, pairs.dst_points, "affine"), src=pairs.src, dst=pairs.dst)
    good = ar.save_transform(A, d / "em_to_uct.json")
    f["transform.json"] = good
    text = good.read_text()
    put("transform_truncated.json", text[: len(text) // 2].encode())
    put("transform_nan.json", text.replace('"affine": [', '"affine": [[NaN, 0, 0, 0], ', 1).encode())
    npz = (data_dir / "atlas/allen_mouse_200um.npz").read_bytes()
    put("atlas_truncated.npz", npz[: len(npz) // 3])
    f["structures.csv"] = data_dir / "atlas/allen_structure_tree.csv"
    (d / "incomplete_result").mkdir()
    (d / "incomplete_result" / "result.json").write_text("{}")
    f["incomplete_result"] = d / "incomplete_result"
    (d / "a_file").write_text("not a folder")
    f["a_file"] = d / "a_file"
    return f


def _cases(f):
    """(args, exit code, words the error line must contain) — one row per user mistake."""
    atlas = ["--atlas", "allen_mouse_200um"]
    return [
        # query
        (["query", f["garbage.csv"], *atlas, "-o", "o.csv"], 2, ["garbage.csv"]),
        (["query", f["empty.csv"], *atlas, "-o", "o.csv"], 2, ["empty.csv"]),
        (["query", "no_such.csv", *atlas, "-o", "o.csv"], 2, ["no_such.csv"]),
        (["query", f["points_noz.csv"], *atlas, "-o", "o.csv"], 2, ["'z'"]),
        (["query", f["points_text.csv"], *atlas, "-o", "o.csv"], 2, ["points_text.csv"]),
        (["query", f["points.csv"], "--atlas", "allen_mouse_2000um", "-o", "o.csv"], 2, ["allen_mouse_2000um"]),
        (["query", f["points.csv"], *atlas, "-o", f["existing.csv"]], 4, ["existing.csv", "--force"]),
        (["query", f["points.csv"], "--atlas", f["atlas_truncated.npz"], "--ontology", f["structures.csv"],
          "--voxel-size", "200", "-o", "o.csv"], 2, ["atlas_truncated.npz"]),
        (["query", f["points.csv"], *atlas, "--transform", f["transform_truncated.json"], "--space", "em",
          "-o", "o.csv"], 2, ["transform_truncated.json"]),
        (["query", f["points.csv"], *atlas, "--unit", "parsec", "-o", "o.csv"], 2, ["parsec"]),
        (["query", f["points.csv"], *atlas, "--columns", "x,y", "-o", "o.csv"], 2, ["--columns"]),
        (["query", f["points.csv"], *atlas, "--orientation", "qqq", "-o", "o.csv"], 2, ["qqq"]),
        # atlas / data
        (["atlas", "info", f["atlas_truncated.npz"], "--ontology", f["structures.csv"], "--voxel-size", "200"], 2,
         ["atlas_truncated.npz"]),
        (["atlas", "info", "nowhere_atlas"], 2, ["nowhere_atlas"]),
        (["data", "fetch", "no_such_dataset"], 2, ["no_such_dataset"]),
        (["data", "fetch", "allen_mouse_200um", "--file", "nofile"], 2, ["nofile"]),
        # combine
        (["combine", "--em", f["truncated.swc"], "--em-space", "hemibrain", "--em-unit", "nm", "--optical",
          f["truncated.swc"], "--block", "1,2,3,4,5,6", "-o", "comb"], 2, ["truncated.swc"]),
        (["combine", "--em", f["garbage.swc"], "--em-space", "hemibrain", "--em-unit", "nm", "--optical",
          f["garbage.swc"], "--block", "1,2,3,4,5,6", "-o", "comb"], 2, ["garbage.swc"]),
        (["combine", "--em", "missing_dir", "--em-space", "hemibrain", "--em-unit", "nm", "--optical",
          "missing_dir", "--block", "1,2,3,4,5,6", "-o", "comb"], 2, ["missing_dir"]),
        # landmarks
        (["landmarks", "fit", f["landmarks_truncated.csv"], "-o", "t.json"], 2, ["landmarks_truncated.csv"]),
        (["landmarks", "fit", f["microns.csv"], "-o", "t.json"], 2, ["unit"]),
        (["landmarks", "fit", f["garbage.csv"], "-o", "t.json"], 2, ["garbage.csv"]),
        (["landmarks", "fit", f["landmarks.csv"], "--model", "banana", "-o", "t.json"], 2, ["banana"]),
        (["landmarks", "fit", f["landmarks.csv"], "-o", f["existing.csv"]], 4, ["existing.csv"]),
        (["landmarks", "apply", f["transform_truncated.json"], f["points.csv"], "-o", "o.csv"], 2,
         ["transform_truncated.json"]),
        (["landmarks", "apply", f["transform_nan.json"], f["points.csv"], "-o", "o.csv"], 2, ["transform_nan.json"]),
        (["landmarks", "apply", f["garbage.tfm"], f["points.csv"], "-o", "o.csv"], 2, ["garbage.tfm"]),
        (["landmarks", "apply", f["transform.json"], f["garbage.csv"], "-o", "o.csv"], 2, ["garbage.csv"]),
        (["landmarks", "report", f["garbage.json"]], 2, ["garbage.json"]),
        # register / warp / points
        (["register", f["garbage.tif"], "--voxel-size", "50", "40", "40", "--orientation", "psl", *atlas,
          "-o", "reg"], 2, ["garbage.tif"]),
        (["register", f["garbage.tif"], "--orientation", "psl", "-o", "reg"], 2, ["--atlas"]),
        (["warp", f["incomplete_result"], f["garbage.tif"], "-o", "w.nii.gz"], 2, ["incomplete_result"]),
        (["points", f["incomplete_result"], f["points.csv"], "-o", "p.csv"], 2, ["incomplete_result"]),
        (["points", "no_result_here", f["points.csv"], "-o", "p.csv"], 2, ["no_result_here"]),
        # large-data verbs
        (["warp-big", f["garbage.tif"], f["garbage.tif"], "-o", "w.ome.zarr", "-t", f["transform.json"]], 2,
         ["garbage.tif"]),
        (["warp-big", f["garbage.tif"], f["garbage.tif"], "-o", "w.ome.zarr", "-t", f["garbage.tfm"]], 2,
         ["garbage"]),
        (["points-big", f["garbage.parquet"], "-o", "o.parquet", "-t", f["transform.json"], "--src", "em",
          "--dst", "uct"], 2, ["garbage.parquet"]),
        (["points-big", f["points.csv"], "-o", "o.parquet", "-t", f["transform_truncated.json"], "--src", "em",
          "--dst", "uct"], 2, ["transform_truncated.json"]),
        (["field", "invert", f["garbage.nii.gz"], "-o", "inv.zarr"], 2, ["garbage.nii.gz"]),
        (["field", "compose", "-t", f["garbage.tfm"], "--like", f["garbage.nii.gz"], "-o", "c.zarr"], 2,
         ["garbage"]),
        # qc / demo
        (["qc", "no_result_dir"], 2, ["no_result_dir"]),
        (["qc", f["incomplete_result"]], 2, ["incomplete_result"]),
        (["demo", "--data-dir", "no_data_dir", "-o", "demo_out"], 2, ["no_data_dir"]),
        # an output that cannot be created (its parent is a file)
        (["landmarks", "fit", f["landmarks.csv"], "-o", f["a_file"] / "t.json"], None, ["a_file"]),
    ]


def test_every_user_mistake_gives_its_exit_code_and_one_line(files):
    failures = []
    for args, code, needles in _cases(files):
        try:
            res = run(args)
            if code is None:  # a file-system error: reported, not a traceback; any documented nonzero code
                assert res.exit_code in (1, 2), res.exit_code
                code = res.exit_code
            assert_clean_error(res, code, *needles)
        except AssertionError as exc:
            failures.append(f"atlasreg {' '.join(str(a) for a in args)}\n    {exc}")
    assert not failures, "\n".join(failures)


def test_usage_errors_are_reported_by_click(files):
    assert_usage_error(run(["query", files["points.csv"], "-o", "o.csv"]), "--atlas")
    assert_usage_error(run(["register", files["garbage.tif"], "--voxel-size", "a", "b", "c", "--orientation",
                            "psl", "-o", "r"]), "--voxel-size")
    assert_usage_error(run(["landmarks", "fit", files["landmarks.csv"], "-o", "t.json", "--outlier-k", "many"]),
                       "--outlier-k")
    assert_usage_error(run(["atlas", "info", "allen_mouse_200um", "--voxel-size", "abc"]), "--voxel-size", "abc")
    assert_usage_error(run(["no-such-verb"]), "no-such-verb")
    assert_usage_error(run(["query", "--bogus-option"]), "--bogus-option")


# -- hypothesis: random arguments to every verb that reads input --------------------------------------
def _params(cmd):
    return [p for p in cmd.params if p.name not in ("help",)]


READERS = [(p, c) for p, c in VERBS if any(q.param_type_name == "argument" for q in _params(c))
           or any(q.required for q in _params(c))]
_word = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                          max_size=8),
                  st.sampled_from(["nan", "inf", "-1", "0", "1e999", "x,y", "1,2,3", "asr", "zzz", "nm", ""]))


@FUZZ
@given(data=st.data(), verb=st.sampled_from(READERS))
def test_random_arguments(files, data, verb):
    path, cmd = verb
    damaged = [str(p) for k, p in files.items() if k.startswith(("garbage", "empty", "truncated",
                                                                    "transform_truncated", "atlas_truncated"))]
    value = st.one_of(_word, st.sampled_from(damaged))
    args: list[str] = [*path]
    for p in _params(cmd):
        if p.param_type_name == "argument":
            n = p.nargs if p.nargs > 0 else data.draw(st.integers(1, 2))
            args += [data.draw(st.sampled_from(damaged)) for _ in range(n)]  # inputs: always damaged
        elif p.required or data.draw(st.booleans()):
            if getattr(p, "is_flag", False):
                args.append(p.opts[0])
            else:
                args.append(p.opts[0])
                args += [data.draw(value) for _ in range(max(p.nargs, 1))]
    res = run(args)
    assert "Traceback" not in res.stdout + res.stderr
    assert not re.search(r"\bpass [a-z_]+=", res.stderr), res.stderr  # the CLI speaks options (issue 16, item 9)
    assert res.exit_code in (1, 2, 3, 4), f"atlasreg {' '.join(args)} -> exit {res.exit_code}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if any(ln.startswith("error: ") for ln in lines):
        assert lines[-1].startswith("error: ") and sum(ln.startswith("error: ") for ln in lines) == 1
    else:  # click rejected the arguments before atlasreg ran
        assert res.exit_code == 2 and "Error" in res.stderr, res.stderr


def test_broken_manifest_is_one_line_naming_file_and_line(tmp_path, monkeypatch, data_dir):
    """A YAML parser error spans several lines; the user still gets one line with the file and position."""
    d = tmp_path / "manifests"
    d.mkdir()
    good = (Path(__file__).resolve().parents[1] / "data_manifests" / "allen_mouse_200um.yaml").read_text()
    (d / "allen_mouse_200um.yaml").write_text(good.replace("space: {name: ccf,", "space: {name: [ccf,", 1))
    monkeypatch.setenv("ATLASREG_MANIFESTS", str(d))
    from atlasreg import data

    data._load_all.cache_clear()
    try:
        line = assert_clean_error(run(["data", "list"]), 2, "allen_mouse_200um.yaml", "line")
        assert line.count("\n") == 0
    finally:
        data._load_all.cache_clear()


def test_file_system_errors_are_one_line(monkeypatch):
    """An OSError inside a verb (here: the disk is full while listing) is reported, not a traceback."""
    import errno

    from atlasreg import data

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/cache")

    monkeypatch.setattr(data, "list_datasets", full)
    assert_clean_error(run(["data", "list"]), 1, "No space left on device", "/data/cache")


# -- one option type, one spelling, every verb (issue 16, items 9-12) ---------------------------------------
from atlasreg.cli._app import VOXEL_SIZE_FLAGS, cli_message, normalize_args  # noqa: E402

PYTHON_WORDING = re.compile(r"\bpass [a-z_]+=")


def test_no_error_line_speaks_python(files):
    """A CLI error names the option, never the Python argument (``pass voxel_size=`` etc.)."""
    bad = []
    for args, _, _ in _cases(files):
        res = run(args)
        for ln in res.stderr.splitlines():
            if PYTHON_WORDING.search(ln):
                bad.append(f"atlasreg {' '.join(map(str, args))}: {ln}")
    tif = files["garbage.tif"].with_name("no_voxel.tif")
    import tifffile

    tifffile.imwrite(tif, np.zeros((8, 8, 8), np.uint16))
    res = run(["register", tif, "--orientation", "psl", "--atlas", "allen_mouse_200um", "-o", "r"])
    line = assert_clean_error(res, EXIT["input"], "no_voxel.tif", "--voxel-size")
    assert not PYTHON_WORDING.search(line), line
    res = run(["landmarks", "fit", files["landmarks.csv"], "-o", files["existing.csv"]])
    line = assert_clean_error(res, EXIT["exists"], "--force")
    assert line.count("--force") == 1 and not PYTHON_WORDING.search(line), line
    assert not bad, "\n".join(bad)


def test_cli_message_names_options_and_no_invented_ones():
    opts = {"voxel_size": "--voxel-size", "force": "--force", "orientation_check": "--orientation-check"}
    assert cli_message("a TIFF stack records no voxel size; pass voxel_size=(axis0, axis1, axis2) in µm", opts) \
        == "a TIFF stack records no voxel size; use --voxel-size AXIS0 AXIS1 AXIS2 in µm"
    assert cli_message("or pass orientation_search='warn'/'off' to register anyway", opts) \
        == "or use --orientation-check warn/off to register anyway"
    assert cli_message("exists; pass force=True / --force", opts) == "exists; use --force"
    # an argument this verb has no option for is not dressed up as one
    msg = cli_message("lacks coordinate column(s) ['z']; pass src_columns=(...)", {"force": "--force"})
    assert "--src-columns" not in msg and "--columns" not in msg and not PYTHON_WORDING.search(msg)


def _voxel_options():
    return [(path, o) for path, cmd in VERBS for p in cmd.params for o in p.opts if o in VOXEL_SIZE_FLAGS]


def test_every_voxel_size_option_takes_both_spellings():
    opts = _voxel_options()
    # every verb with a voxel size: register, warp, landmarks x3, em x3, warp-big, query, atlas info, combine
    assert len({p for p, _ in opts}) >= 10, opts
    for path, flag in opts:
        for spelled in (["50", "40", "40"], ["50,40,40"], ["50x40x40"]):
            args = normalize_args(typer.main.get_command(app), [*path, flag, *spelled, "--force"])
            assert args[len(path):] == [flag, spelled[0] if len(spelled) == 1 else "50,40,40", "--force"], args
        cmd = dict(VERBS)[path]
        param = next(p for p in cmd.params if flag in p.opts)
        assert param.metavar == "N | Z Y X"


@pytest.mark.parametrize("bad", [["50", "40"], ["a", "b", "c"], ["0"], ["-5"]])
def test_bad_voxel_size_names_the_option(files, bad):
    res = run(["landmarks", "fit", files["landmarks.csv"], "--src-voxel-size", *bad, "--dst-unit", "um", "-o", "t.json"])
    assert_usage_error(res, "--src-voxel-size")
    assert "valid number" not in res.stderr and "No such option" not in res.stderr


def test_voxel_size_spellings_give_the_same_fit(files, tmp_path):
    outs = []
    for k, spelled in enumerate((["4", "4", "40"], ["4,4,40"])):
        o = tmp_path / f"t{k}.json"
        res = run(["landmarks", "fit", files["microns.csv"], "--src-unit", "nm", "--src-voxel-size", *spelled,
                   "--dst-unit", "mm", "--model", "affine", "-o", o])
        assert res.exit_code == 0, res.stderr
        outs.append(ar.load_transform(o).map_points(np.array([[1000.0, 2000.0, 300.0]])))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_output_is_dash_o_or_output_everywhere_and_out_still_works(files, tmp_path):
    with_o = [(path, p) for path, cmd in VERBS for p in cmd.params if "-o" in p.opts]
    assert len(with_o) >= 15
    for path, p in with_o:
        assert "--output" in p.opts and "--out" not in p.opts, (path, p.opts)
    res = run(["landmarks", "apply", files["transform.json"], files["points.csv"], "--out", tmp_path / "o.csv"])
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "o.csv").is_file()


def test_help_shows_no_bool_placeholder():
    for path, _ in [((), None), *VERBS]:
        text = run([*path, "--help"]).stdout
        assert "<bool>" not in text, f"`atlasreg {' '.join(path)} --help` shows <bool>"


def test_quiet_before_or_after_the_verb_silences_status_lines(files, tmp_path):
    base = ["landmarks", "apply", files["transform.json"], files["points.csv"], "--force", "-o", tmp_path / "o.csv"]
    loud = run(base)
    assert loud.exit_code == 0 and "mapped" in loud.stdout
    try:
        for args in (["-q", *base], [*base, "-q"]):
            res = run(args)
            assert res.exit_code == 0 and res.stdout.strip() == "", res.stdout
    finally:
        from atlasreg.cli._app import set_verbosity

        set_verbosity()
        from _demo_run import _drop_closed_log_handlers

        _drop_closed_log_handlers()


def _tiny_result(folder: Path) -> Path:
    """A saved registration result (identity affine, 200 µm grids in the ccf space's orientation)."""
    from atlasreg.registration import RegistrationResult

    mg = ar.Grid((20, 16, 22), (200.0, 200.0, 200.0), ar.Space("sample", "um", "asr"))
    fg = ar.Grid((20, 16, 22), (200.0, 200.0, 200.0), ar.Space("ccf", "um", "asr"))
    T = ar.Affine(np.eye(4), src=mg.space, dst=fg.space)
    RegistrationResult(T, mg, fg, {}, {"preset": "none"}, "test").save(folder, figures=False)
    return folder


def test_missing_input_file_is_exit_2_naming_it(tmp_path):
    reg = _tiny_result(tmp_path / "reg")
    assert_clean_error(run(["points", reg, "missing.csv", "-o", "o.csv"]), EXIT["input"], "missing.csv")
    assert_clean_error(run(["warp", reg, "missing.nii.gz", "-o", "o.nii.gz"]), EXIT["input"], "missing.nii.gz")


def test_warp_big_interpolates_like_warp(tmp_path):
    """Default ``auto``: a uint32 label volume stays labels (nearest), as with ``atlasreg warp``."""
    import SimpleITK as sitk

    default = {p.name: p.default for p in dict(VERBS)[("warp-big",)].params}["interpolation"]
    assert default == {p.name: p.default for p in dict(VERBS)[("warp",)].params}["interpolation"] == "auto"
    lab = np.random.default_rng(0).choice(np.array([0, 7, 100000], np.uint32), (16, 16, 16))
    img = sitk.GetImageFromArray(lab)  # written by SimpleITK, not atlasreg
    img.SetSpacing((10.0, 10.0, 10.0))
    sitk.WriteImage(img, str(tmp_path / "labels.nii.gz"))
    ar.save_transform(ar.Affine.from_translation([3.3, 1.7, 4.1], src="a", dst="b"), tmp_path / "a_to_b.json")
    res = run(["warp-big", tmp_path / "labels.nii.gz", tmp_path / "labels.nii.gz", "-t", tmp_path / "a_to_b.json",
               "--moving-space", "a", "--reference-space", "b", "--chunks", "8", "-o", tmp_path / "w.ome.zarr"])
    assert res.exit_code == 0, res.stderr
    out = ar.read_volume(tmp_path / "w.ome.zarr").numpy()
    assert out.dtype == np.uint32 and set(np.unique(out)) <= {0, 7, 100000}


def test_warp_can_write_the_anatomical_direction(tmp_path):
    """Issue 16, item 19 from the command line: `warp --anatomical-direction` writes a NIfTI whose axes nibabel
    names by anatomy (asr -> P, I, L); without it the plain frame (L, P, S for the identity)."""
    import nibabel as nib
    import SimpleITK as sitk

    reg = _tiny_result(tmp_path / "reg")
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((22, 16, 20)).astype(np.float32))
    img.SetSpacing((0.2, 0.2, 0.2))  # mm, as NIfTI/NRRD geometry is: 200 µm, the sample's grid
    sitk.WriteImage(img, str(tmp_path / "ch2.nrrd"))  # written by SimpleITK, not atlasreg
    for flag, codes in (([], ("L", "P", "S")), (["--anatomical-direction"], ("P", "I", "L"))):
        out = tmp_path / f"w{len(flag)}.nii.gz"
        res = run(["warp", reg, tmp_path / "ch2.nrrd", *flag, "-o", out])
        assert res.exit_code == 0, res.stderr
        assert nib.aff2axcodes(nib.load(str(out)).affine) == codes
