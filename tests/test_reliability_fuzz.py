"""Damaged non-volume inputs never pass silently and never escape as a library's exception.

Every reader of tracings (SWC, MouseLight JSON), point tables (CSV, Parquet),
landmark pairs (named CSV, BigWarp), ontologies (Allen CSV / JSON), transform
files (ITK .tfm/.h5/.mat, displacement .nii.gz, NGFF .json), dataset manifests
(YAML) and atlas bundles (.npz) gets a corpus of damaged files made here, by the
test, from the real files in ``ATLASREG_DATA`` (nothing is committed): zero
length, truncation, flipped bytes, the wrong suffix, NaN / inf / text injected
into numeric fields, a missing column or key. Hypothesis adds garbage bytes and
random structured content. Each must end in an :class:`atlasreg.errors.AtlasregError`
(normally :class:`InputError`) whose message names the file — or, for structured
random content that happens to be valid, in a result that passes the reader's own
promises (finite coordinates, declared space). Volume formats have their own
fuzz tests in ``test_io_fuzz.py``.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atlasreg as ar
from atlasreg.errors import AtlasregError, InputError

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
ONTOLOGY_CSV = "atlas/allen_structure_tree.csv"


class Bytes(bytes):
    """bytes with a short repr, so hypothesis reports stay readable."""

    def __repr__(self):
        return f"<{len(self)} bytes>"


@dataclass(repr=False)
class Kind:
    """One input kind: a valid real file (as bytes), its suffix and how atlasreg reads it."""

    name: str
    suffix: str
    data: bytes
    read: Callable[[Path], object]
    text: bool = True
    # Where a numeric value sits in the text: (start, end) offsets of one coordinate in a data row.
    number_at: Callable[[str], tuple[int, int]] | None = None

    def __repr__(self):
        return f"<{self.name}: {len(self.data)} bytes>"


class Corpus(dict):
    def __repr__(self):  # hypothesis prints its arguments: keep reports short
        return f"<corpus: {', '.join(self)}>"


# -- building the corpus from real files -------------------------------------------------------------------
def _csv_cell(text: str, row: int, col: int, sep: str = ",") -> tuple[int, int]:
    """Offsets of field ``col`` of line ``row`` (0 = header)."""
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:row])
    line = lines[row]
    pos = 0
    for _ in range(col):
        pos = line.index(sep, pos) + 1
    end = line.find(sep, pos)
    end = len(line.rstrip("\r\n")) if end < 0 else end
    return start + pos, start + end


def _swc_x(text: str) -> tuple[int, int]:
    offset, seen = 0, 0
    for line in text.splitlines(keepends=True):
        if line.strip() and not line.lstrip().startswith("#"):
            seen += 1
            if seen == 5:  # the fifth node: x is its third token
                m = list(re.finditer(r"\S+", line))[2]
                return offset + m.start(), offset + m.end()
        offset += len(line)
    raise AssertionError("no fifth node")


def _regex_number(pattern: str) -> Callable[[str], tuple[int, int]]:
    def find(text: str) -> tuple[int, int]:
        m = re.search(pattern, text)
        assert m, pattern
        return m.span(1)

    return find


def _swc_reader(space, unit, vs, orientation=None):
    def read(p):
        return ar.tracings.read_swc(p, space=space, unit=unit, voxel_size=vs, orientation=orientation)

    return read


def _read_manifest(p: Path):
    from atlasreg import data

    # The uncached loader, on a folder holding only this YAML.
    return data._load_all.__wrapped__(str(p.parent))


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory) -> dict[str, Kind]:
    from atlasreg.io.landmarks import read_landmarks, write_landmarks
    from atlasreg.transforms.fitting import fit_linear

    d = tmp_path_factory.mktemp("valid")
    kinds: dict[str, Kind] = Corpus()

    def add(k: Kind):
        kinds[k.name] = k

    # Tracings: an fMOST neuron (CCF 25 µm voxels) and a hemibrain EM skeleton (8 nm voxels).
    fmost = data_dir / "neurons/fmost_ccf25/18457_00116_SI.swc"
    add(Kind("swc_fmost", ".swc", fmost.read_bytes(), _swc_reader("ccf", "um", 25.0, "asr"), number_at=_swc_x))
    em_swc = data_dir / "neurons/hemibrain_em/722817260.swc"
    add(Kind("swc_em", ".swc", em_swc.read_bytes(), _swc_reader("hemibrain", "nm", 8.0), number_at=_swc_x))
    # MouseLight JSON of the real fMOST neuron, written by atlasreg (space recorded in the file).
    neuron = ar.tracings.read_swc(fmost, space="ccf", unit="um", voxel_size=25.0, orientation="asr")
    ml = ar.tracings.write_mouselight(neuron, d / "n.json")
    add(Kind("mouselight", ".json", ml.read_bytes(), ar.tracings.read_mouselight,
             number_at=_regex_number(r'"sampleNumber": 5, "structureIdentifier": \d+, "x": (-?[0-9.e+-]+)')))
    # Synapse table: the real hemibrain CSV (8 nm voxels) and a Parquet written from it.
    syn = data_dir / "neurons/hemibrain_em/synapses/722817260.csv"

    def read_syn(p):
        return ar.tracings.read_table(p, space="hemibrain", unit="nm", voxel_size=8)

    add(Kind("synapses_csv", ".csv", syn.read_bytes(), read_syn,
             number_at=lambda t: _csv_cell(t, 3, 3)))
    pq = ar.tracings.write_table(read_syn(syn), d / "syn.parquet")
    add(Kind("synapses_parquet", ".parquet", pq.read_bytes(), ar.tracings.read_table, text=False))
    # Landmarks: units from the column names (Zheng), from the caller (MICrONS), BigWarp.
    zheng = data_dir / "em_lm/zheng-ca3-em-to-uct.csv"
    add(Kind("landmarks_named", ".csv", zheng.read_bytes(), read_landmarks,
             number_at=lambda t: _csv_cell(t, 4, 1)))
    microns_text = "".join((data_dir / "em_lm/microns_em_2p_landmarks.csv").read_text().splitlines(True)[:300])

    def read_microns(p):
        return read_landmarks(p, src_unit="nm", dst_unit="mm", src_voxel_size=(4, 4, 40))

    add(Kind("landmarks_microns", ".csv", microns_text.encode(), read_microns,
             number_at=lambda t: _csv_cell(t, 7, 4)))
    bw = write_landmarks(read_landmarks(zheng), d / "bigwarp.csv", format="bigwarp")

    def read_bw(p):
        return read_landmarks(p, format="bigwarp", src_unit="nm", dst_unit="um")

    add(Kind("landmarks_bigwarp", ".csv", bw.read_bytes(), read_bw,
             number_at=_regex_number(r'(?m)^(?:[^,\n]*,){2}"?(-?[0-9.e+-]+)')))
    # Ontologies.
    add(Kind("ontology_csv", ".csv", (data_dir / ONTOLOGY_CSV).read_bytes(), ar.Ontology.read,
             number_at=lambda t: _csv_cell(t, 6, 0)))
    add(Kind("ontology_json", ".json", (data_dir / "atlas/allen_ontology.json").read_bytes(), ar.Ontology.read,
             number_at=_regex_number(r'"id": (\d+),\s*"atlas_id": \d+,\s*"ontology_id": 1,\s*"acronym": "grey"')))
    # Transforms written by atlasreg: the affine fitted to the real Zheng micro-CT -> CCF landmarks,
    # and a displacement field sampling the residual of a spline through the same landmarks.
    uct = pd.read_csv(data_dir / "em_lm/zheng-ca3-uct-to-ccf.csv")
    src_pts = uct[["x_uct", "y_uct", "z_uct"]].to_numpy(float)
    dst_pts = uct[["x_ccf", "y_ccf", "z_ccf"]].to_numpy(float)
    A = ar.Affine(fit_linear(src_pts, dst_pts, "affine"), src=ar.Space("uct", "um"), dst=ar.Space("ccf", "um"))
    for suf, text in ((".tfm", True), (".h5", False), (".mat", False)):
        p = ar.save_transform(A, d / f"affine{suf}")
        add(Kind(f"transform{suf}", suf, p.read_bytes(), ar.load_transform, text=text,
                 number_at=_regex_number(r"Parameters: (-?[0-9.e+-]+)") if text else None))
    p = ar.save_transform(A, d / "affine.json")
    add(Kind("transform.json", ".json", p.read_bytes(), ar.load_transform,
             number_at=_regex_number(r'"affine":\s*\[\s*\[\s*(-?[0-9.e+-]+)')))
    tps = ar.ThinPlateSpline(src_pts, dst_pts, src=ar.Space("uct", "um"), dst=ar.Space("ccf", "um"))
    lo, hi = src_pts.min(0), src_pts.max(0)
    spacing = (hi - lo) / 5
    idx = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = lo + idx * spacing
    u = (tps.map_points(grid) - A.map_points(grid)).reshape(6, 6, 6, 3)
    F = ar.DisplacementField(u, spacing=spacing, origin=lo, src=ar.Space("uct_affine", "um"),
                             dst=ar.Space("uct_warped", "um"))
    p = ar.save_transform(F, d / "field.nii.gz")
    add(Kind("transform.nii.gz", ".nii.gz", p.read_bytes(), ar.load_transform, text=False))
    # A dataset manifest.
    man = REPO / "data_manifests" / "allen_mouse_200um.yaml"
    add(Kind("manifest", ".yaml", man.read_bytes(), _read_manifest,
             number_at=_regex_number(r"voxel_size: \[(-?[0-9.e+-]+)")))
    # An atlas bundle (.npz of annotation + reference), with the real structure CSV.
    onto = data_dir / ONTOLOGY_CSV

    def read_npz(p):
        atlas = ar.Atlas.load(p, ontology=onto, voxel_size=200.0, file_orientation="asr")
        atlas.annotation  # volumes load on first use: touch them as any query would
        atlas.reference
        return atlas

    add(Kind("atlas_npz", ".npz", (data_dir / "atlas/allen_mouse_200um.npz").read_bytes(), read_npz, text=False))
    return kinds


REPO = Path(__file__).resolve().parents[1]
KINDS = ["swc_fmost", "swc_em", "mouselight", "synapses_csv", "synapses_parquet", "landmarks_named",
         "landmarks_microns", "landmarks_bigwarp", "ontology_csv", "ontology_json", "transform.tfm",
         "transform.h5", "transform.mat", "transform.json", "transform.nii.gz", "manifest", "atlas_npz"]
TEXT_KINDS = [k for k in KINDS if k not in ("synapses_parquet", "transform.h5", "transform.mat",
                                            "transform.nii.gz", "atlas_npz")]
BINARY_KINDS = [k for k in KINDS if k not in TEXT_KINDS]


# -- helpers ---------------------------------------------------------------------------------------
_COUNTER = iter(range(10 ** 9))


def _write(folder: Path, kind: Kind, data: bytes, suffix: str | None = None) -> Path:
    """Each damaged file in a folder of its own (manifests are read per folder; no sidecars around)."""
    sub = folder / f"f{next(_COUNTER)}"
    sub.mkdir(parents=True)
    p = sub / f"damaged_{kind.name.replace('.', '_')}{suffix or kind.suffix}"
    p.write_bytes(data)
    return p


def _names_file(exc: BaseException, p: Path) -> bool:
    msg = str(exc)
    return p.name in msg or p.stem.split(".")[0] in msg or str(getattr(exc, "path", "") or "").startswith(
        str(p.with_suffix("")))


def must_reject(kind: Kind, p: Path, what: str = "") -> AtlasregError:
    """The reader raises an atlasreg error naming ``p``; anything else fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = kind.read(p)
    except AtlasregError as exc:
        assert _names_file(exc, p), f"{kind.name} ({what}): the error does not name the file: {exc}"
        assert "\n" not in str(exc).strip(), f"{kind.name} ({what}): a multi-line message: {exc}"
        return exc
    except Exception as exc:  # a library's exception leaked through
        raise AssertionError(f"{kind.name} ({what}): {type(exc).__name__} leaked from the reader: {exc}") from exc
    raise AssertionError(f"{kind.name} ({what}): damaged file accepted silently -> {out!r}"[:600])


def reject_or_valid(kind: Kind, p: Path, check: Callable[[object], None], what: str = ""):
    """For random content that may be valid: an atlasreg error naming the file, or a result passing ``check``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = kind.read(p)
    except AtlasregError as exc:
        assert _names_file(exc, p), f"{kind.name} ({what}): the error does not name the file: {exc}"
        return None
    except Exception as exc:
        raise AssertionError(f"{kind.name} ({what}): {type(exc).__name__} leaked from the reader: {exc}") from exc
    check(out)
    return out


def _replace(data: bytes, span: tuple[int, int], new: str) -> bytes:
    t = data.decode("utf-8")
    return (t[: span[0]] + new + t[span[1]:]).encode("utf-8")


# -- the valid files are accepted (so every rejection below is about the damage) ---------------------------
@pytest.mark.parametrize("name", KINDS)
def test_valid_real_file_is_read(corpus, tmp_path, name):
    k = corpus[name]
    out = k.read(_write(tmp_path, k, k.data))
    assert out is not None


# -- zero length, truncation, flipped bytes --------------------------------------------------------------
@pytest.mark.parametrize("name", KINDS)
def test_zero_length(corpus, tmp_path, name):
    must_reject(corpus[name], _write(tmp_path, corpus[name], b""), "zero length")


@pytest.mark.parametrize("name", BINARY_KINDS)
@pytest.mark.parametrize("frac", [0.02, 0.3, 0.7, 0.999])
def test_truncated_binary(corpus, tmp_path, name, frac):
    k = corpus[name]
    cut = min(int(len(k.data) * frac), len(k.data) - 1)
    must_reject(k, _write(tmp_path, k, k.data[:cut]), f"truncated at {cut}/{len(k.data)}")


@pytest.mark.parametrize("name", [k for k in TEXT_KINDS if k.endswith("json") or k in ("mouselight",)])
@pytest.mark.parametrize("frac", [0.01, 0.5, 0.99])
def test_truncated_json(corpus, tmp_path, name, frac):
    k = corpus[name]
    cut = int(len(k.data.rstrip()) * frac)
    must_reject(k, _write(tmp_path, k, k.data[:cut]), f"truncated at {cut}")


@pytest.mark.parametrize("name", TEXT_KINDS)
def test_truncated_mid_row(corpus, tmp_path, name):
    """The file ends inside a data row (a copy or download cut short): fields are missing."""
    k = corpus[name]
    start, _ = k.number_at(k.data.decode())
    must_reject(k, _write(tmp_path, k, k.data[: start + 1]), "cut inside a row")


@pytest.mark.parametrize("name", ["transform.nii.gz", "atlas_npz", "synapses_parquet"])
def test_flipped_bytes_in_checksummed_formats(corpus, tmp_path, name):
    """gzip, zip and Parquet carry checksums or strict structure: any flipped byte is caught."""
    k = corpus[name]
    rng = np.random.default_rng(0)
    for pos in sorted(rng.integers(0, len(k.data), 4).tolist()) + [len(k.data) // 2]:
        b = bytearray(k.data)
        b[pos] ^= 0xFF
        must_reject(k, _write(tmp_path, k, bytes(b)), f"byte {pos} flipped")


@pytest.mark.parametrize("name", ["transform.h5", "transform.mat"])
def test_flipped_header_bytes(corpus, tmp_path, name):
    """Unchecksummed binary formats: damage to the structure is caught; never a leaked exception."""
    k = corpus[name]
    for pos in (0, 1, 2, 3, 8, 16):
        b = bytearray(k.data)
        b[pos] ^= 0xFF
        must_reject(k, _write(tmp_path, k, bytes(b)), f"header byte {pos} flipped")


@pytest.mark.parametrize("name", TEXT_KINDS)
def test_invalid_utf8_byte(corpus, tmp_path, name):
    k = corpus[name]
    start, _ = k.number_at(k.data.decode())
    b = bytearray(k.data)
    b[start] = 0xFF  # not UTF-8: a flipped byte in a text file
    must_reject(k, _write(tmp_path, k, bytes(b)), "0xff byte in a number")


# -- wrong suffix: the content of one kind under another kind's name -------------------------------------
def _wrong_pairs():
    out = []
    for i, reader in enumerate(KINDS):
        for j in (1, 4, 9):  # three other kinds each, rotating through the list
            content = KINDS[(i + j) % len(KINDS)]
            out.append((reader, content))
    return out


@pytest.mark.parametrize("reader,content", _wrong_pairs())
def test_wrong_content_for_suffix(corpus, tmp_path, reader, content):
    k, other = corpus[reader], corpus[content]
    if other.suffix == k.suffix and other.name.split("_")[0] == k.name.split("_")[0]:
        pytest.skip("same kind")  # e.g. two landmark CSVs: not a wrong file
    p = _write(tmp_path, k, other.data)
    if k.name.startswith("transform") and other.name.startswith("transform"):
        # ITK chooses its reader by content: another transform format, read right, is no damage.
        ref = other.read(_write(tmp_path, other, other.data))
        pts = np.array([[1000.0, 700.0, 400.0], [0.0, 0.0, 0.0], [2000.0, 1500.0, 500.0]])

        def same_map(T):
            np.testing.assert_allclose(T.map_points(pts), ref.map_points(pts), rtol=1e-9, atol=1e-6)

        reject_or_valid(k, p, same_map, f"{content} content")
        return
    must_reject(k, p, f"{content} content")


# -- NaN / inf / text in numeric fields --------------------------------------------------------------
BAD_NUMBERS = {"text": ["nan", "inf", "-inf", "1e999", "abc", "1.2.3", ""],
               "json": ["NaN", "Infinity", "-Infinity", "1e999", '"abc"', "null"],
               "yaml": [".nan", ".inf", "-.inf", "abc", "''"]}


def _bad_numbers(name: str) -> list[str]:
    if name == "manifest":
        return BAD_NUMBERS["yaml"]
    if name in ("mouselight", "ontology_json", "transform.json"):
        return BAD_NUMBERS["json"]
    return BAD_NUMBERS["text"]


@pytest.mark.parametrize("name,bad", [(k, v) for k in TEXT_KINDS for v in _bad_numbers(k)])
def test_bad_number_injected(corpus, tmp_path, name, bad):
    k = corpus[name]
    span = k.number_at(k.data.decode())
    must_reject(k, _write(tmp_path, k, _replace(k.data, span, bad)), f"number -> {bad!r}")


# -- missing columns / keys ---------------------------------------------------------------------------
def _drop_csv_column(data: bytes, col: str, **kw) -> bytes:
    df = pd.read_csv(io.BytesIO(data), **kw)
    return df.drop(columns=col).to_csv(index=False).encode()


def _missing_column_cases():
    return [
        ("swc_fmost", "parent column", lambda b: "\n".join(
            line if line.lstrip().startswith("#") or not line.strip() else " ".join(line.split()[:6])
            for line in b.decode().splitlines()).encode()),
        ("synapses_csv", "z", lambda b: _drop_csv_column(b, "z")),
        ("synapses_csv", "x", lambda b: _drop_csv_column(b, "x")),
        ("landmarks_named", "z_uct_um", lambda b: _drop_csv_column(b, "z_uct_um")),
        ("landmarks_microns", "em_y", lambda b: _drop_csv_column(b, "em_y")),
        ("landmarks_bigwarp", "last field", lambda b: "\n".join(
            ",".join(line.split(",")[:-1]) for line in b.decode().splitlines()).encode()),
        ("ontology_csv", "id", lambda b: _drop_csv_column(b, "id")),
        ("ontology_csv", "acronym", lambda b: _drop_csv_column(b, "acronym")),
        ("ontology_csv", "parent and path", lambda b: _drop_csv_column(
            _drop_csv_column(b, "parent_structure_id"), "structure_id_path")),
        ("mouselight", "parentNumber", lambda b: re.sub(rb', "parentNumber": -?\d+', b"", b)),
        ("mouselight", "x", lambda b: re.sub(rb'"x": [-0-9.e+]+, ', b"", b)),
        ("ontology_json", "id", lambda b: re.sub(rb'"id": \d+,', b"", b)),
        ("transform.json", "affine", lambda b: re.sub(rb'"affine"', b'"affinx"', b)),
        ("transform.json", "output", lambda b: re.sub(rb'"output"', b'"outptu"', b)),
        ("transform.tfm", "Parameters", lambda b: re.sub(rb"(?m)^Parameters:.*\n?", b"", b)),
        ("manifest", "licence", lambda b: re.sub(rb"(?m)^licence:.*\n", b"", b)),
        ("manifest", "sha256 of a mirrored file", lambda b: re.sub(rb"(?m)^    sha256: [0-9a-f]{64}\n", b"", b,
                                                                  count=1)),
    ]


@pytest.mark.parametrize("name,what,damage", _missing_column_cases(),
                         ids=[f"{c[0]}-{c[1]}" for c in _missing_column_cases()])
def test_missing_column_or_key(corpus, tmp_path, name, what, damage):
    k = corpus[name]
    damaged = damage(k.data)
    assert damaged != k.data, "the damage did not apply"
    must_reject(k, _write(tmp_path, k, damaged), f"missing {what}")


def test_npz_without_annotation(corpus, tmp_path):
    k = corpus["atlas_npz"]
    with np.load(io.BytesIO(k.data)) as z:
        arrays = {n: z[n] for n in z.files if n != "annotation"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    must_reject(k, _write(tmp_path, k, buf.getvalue()), "no annotation array")


def test_npz_annotation_with_nan(corpus, tmp_path):
    k = corpus["atlas_npz"]
    with np.load(io.BytesIO(k.data)) as z:
        arrays = {n: z[n] for n in z.files}
    ann = arrays["annotation"].astype(np.float64)
    ann[10, 10, 10] = np.nan
    arrays["annotation"] = ann
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    must_reject(k, _write(tmp_path, k, buf.getvalue()), "NaN label")


def test_parquet_missing_coordinate_column(corpus, tmp_path):
    import pyarrow.parquet as pq

    k = corpus["synapses_parquet"]
    tbl = pq.read_table(io.BytesIO(k.data))
    tbl = tbl.drop(["y"]).replace_schema_metadata(tbl.schema.metadata)
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    exc = must_reject(k, _write(tmp_path, k, buf.getvalue()), "no y column")
    assert "'y'" in str(exc) or "y" == exc.field


def test_field_with_nan_displacement(corpus, tmp_path):
    import SimpleITK as sitk

    k = corpus["transform.nii.gz"]
    src = _write(tmp_path, k, k.data)
    img = sitk.ReadImage(str(src))
    arr = sitk.GetArrayFromImage(img)
    arr[2, 3, 1, 0] = np.nan
    bad = sitk.GetImageFromArray(arr, isVector=True)
    bad.CopyInformation(img)
    p = src.with_name("nan_field.nii.gz")
    sitk.WriteImage(bad, str(p))
    must_reject(k, p, "NaN displacement")


# -- hypothesis: garbage bytes for every reader ---------------------------------------------------------
@FUZZ
@given(data=st.binary(min_size=1, max_size=2048), name=st.sampled_from(KINDS))
def test_garbage_bytes(corpus, tmp_path, data, name):
    must_reject(corpus[name], _write(tmp_path, corpus[name], Bytes(data)), "random bytes")


@FUZZ
@given(frac=st.floats(0.0, 1.0, exclude_max=True), name=st.sampled_from(BINARY_KINDS))
def test_any_prefix_of_binary_file(corpus, tmp_path, frac, name):
    k = corpus[name]
    cut = int(len(k.data) * frac)
    must_reject(k, _write(tmp_path, k, k.data[:cut]), f"prefix {cut}/{len(k.data)}")


# -- hypothesis: structured random content (may be valid; then the result keeps the reader's promises) --
_num = st.one_of(st.integers(-5, 50).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.sampled_from(["nan", "inf", "-1", "0", "1", "2", "abc", "1e999", "", "1.5"]))


@FUZZ
@given(rows=st.lists(st.lists(_num, min_size=0, max_size=9), min_size=0, max_size=12))
def test_random_swc_rows(corpus, tmp_path, rows):
    k = corpus["swc_em"]
    text = "# random\n" + "\n".join(" ".join(r) for r in rows) + "\n"

    def check(n):
        nodes = n.nodes
        assert np.isfinite(nodes[["x", "y", "z", "radius"]].to_numpy()).all()
        ids = nodes["id"].to_numpy()
        assert len(set(ids)) == len(ids)
        par = nodes["parent"].to_numpy()
        assert np.isin(par[par >= 0], ids).all()
        assert n.space.unit == "nm"

    reject_or_valid(k, _write(tmp_path, k, text.encode()), check, "random rows")


@FUZZ
@given(cells=st.lists(st.tuples(_num, _num, _num, st.sampled_from(["pre", "post", "", "x"])), min_size=0,
                      max_size=10))
def test_random_point_table(corpus, tmp_path, cells):
    """Oracle: the table is accepted exactly when every x, y, z parses to a finite number whose physical value
    (times the voxel size, 8) is finite too."""
    k = corpus["synapses_csv"]
    text = "x,y,z,type\n" + "".join(",".join(c) + "\n" for c in cells)
    p = _write(tmp_path, k, text.encode())

    def finite(v):
        try:
            with np.errstate(over="ignore"):
                return np.isfinite(float(v)) and np.isfinite(np.float64(v) * 8)
        except ValueError:
            return False

    expect_ok = all(finite(v) for c in cells for v in c[:3])  # a header-only table is a valid empty one
    out = reject_or_valid(k, p, lambda t: None, "random table")
    if expect_ok:
        assert out is not None, "a valid table was rejected"
        want = np.array([[float(v) * 8 for v in c[:3]] for c in cells]).reshape(-1, 3)
        np.testing.assert_array_equal(out.points, want)
    else:
        assert out is None, f"accepted a table with a non-finite coordinate: {cells}"


@FUZZ
@given(cells=st.lists(st.tuples(st.text(max_size=4), st.sampled_from(["TRUE", "FALSE", "x", ""]),
                                _num, _num, _num, _num, _num, _num), min_size=0, max_size=8))
def test_random_landmark_rows(corpus, tmp_path, cells):
    k = corpus["landmarks_microns"]
    text = "name,active,em_x,em_y,em_z,lm_x,lm_y,lm_z\n" + "".join(
        ",".join('"' + v.replace('"', '""') + '"' for v in c) + "\n" for c in cells)

    def check(pairs):
        assert len(pairs) > 0
        assert np.isfinite(pairs.src_points).all() and np.isfinite(pairs.dst_points).all()
        assert pairs.src.unit == "nm" and pairs.dst.unit == "mm"

    reject_or_valid(k, _write(tmp_path, k, text.encode()), check, "random landmarks")


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["neurons", "axon", "dendrite", "soma", "x", "y", "z", "sampleNumber",
                                          "parentNumber", "structureIdentifier", "radius", "id", "msg", "children",
                                          "acronym", "name", "parent_structure_id", "structure_id_path",
                                          "coordinateTransformations", "ome", "type", "input", "output",
                                          "affine", "coordinateSystems", "axes", "unit"]), inner, max_size=5),
                     max_leaves=25)


def _has_space(obj):
    assert obj is not None


@FUZZ
@given(doc=_json, name=st.sampled_from(["mouselight", "ontology_json", "transform.json"]))
def test_random_json_documents(corpus, tmp_path, doc, name):
    k = corpus[name]
    reject_or_valid(k, _write(tmp_path, k, json.dumps(doc).encode()), _has_space, "random JSON")


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["name", "kind", "title", "licence", "files", "atlas", "space",
                                            "voxel_size"]), _json, max_size=8))
def test_random_manifests(corpus, tmp_path, doc):
    import yaml

    k = corpus["manifest"]

    def check(manifests):
        for m in manifests.values():
            for key in ("name", "kind", "title", "licence"):
                assert m.get(key)

    reject_or_valid(k, _write(tmp_path, k, yaml.safe_dump(doc).encode()), check, "random manifest")


# -- sidecars: the JSON next to an SWC or CSV that records space and unit --------------------------------
_COMMON = [b"\x00\xff garbage", b"", b"[1, 2]", b'{"space": "ccf", "unit": "parsec"}',
           b'{"space": "ccf", "unit": "um", "orientation": "up"}']
SIDECARS = [("swc_fmost", sc) for sc in _COMMON + [
    b'{"space": "ccf", "unit": "um", "voxel_size": "abc"}', b'{"space": "ccf", "unit": "um", "voxel_size": -25}',
    b'{"space": "ccf", "unit": "um", "voxel_size": [NaN, 1, 1]}']] + [("synapses_csv", sc) for sc in _COMMON + [
        b'{"space": "em", "unit": "nm", "columns": 5}', b'{"space": "em", "unit": "nm", "columns": ["x", "y"]}',
        b'{"space": "em", "unit": "nm", "columns": ["x", "y", "depth"]}']]


@pytest.mark.parametrize("name,sidecar", SIDECARS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SIDECARS)])
def test_damaged_sidecar(corpus, tmp_path, name, sidecar):
    """A damaged ``<file>.json`` sidecar is named in the error (reading without space/unit relies on it)."""
    k = corpus[name]
    p = _write(tmp_path, k, k.data)
    sc = p.with_name(p.name + ".json")
    sc.write_bytes(sidecar)
    reader = ar.tracings.read_swc if name.startswith("swc") else ar.tracings.read_table
    try:
        out = reader(p)
    except AtlasregError as exc:
        assert p.name in str(exc), exc
        assert "\n" not in str(exc)
        return
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} leaked: {exc}") from exc
    raise AssertionError(f"damaged sidecar {sidecar!r} accepted -> {out!r}")


def test_point_table_whose_physical_value_overflows_is_refused(corpus, tmp_path):
    """The case hypothesis found: 2.2e307 voxels times 8 nm is not a float64; refused, naming the file."""
    k = corpus["synapses_csv"]
    p = _write(tmp_path, k, b"x,y,z,type\n0,0,2.247116418577895e+307,pre\n")
    assert reject_or_valid(k, p, lambda t: None, "overflowing table") is None
