"""Dataset manifests: well-formed, packaged, checksums of the shared mirror, fetch without network."""
from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from atlasreg import InputError, data
from atlasreg.cli import app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ATLASREG_DATA", str(data_dir))
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path / "cache"))

    def no_network(*a, **k):
        raise AssertionError("tests must not download")

    import pooch

    monkeypatch.setattr(pooch, "retrieve", no_network)
    return data_dir


def test_manifests_well_formed_and_packaged():
    files = sorted((REPO / "data_manifests").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        m = yaml.safe_load(f.read_text())
        assert m["name"] == f.stem
        for k in ("kind", "title", "licence"):
            assert m.get(k), (f.name, k)
        for fid, e in (m.get("files") or {}).items():
            assert e.get("path") or e["original"]["url"], (f.name, fid)
            if e.get("path"):
                assert len(e["sha256"]) == 64 and int(e["sha256"], 16) >= 0
    # The package ships the same manifests (atlasreg/manifests links to data_manifests/).
    pkg = REPO / "atlasreg" / "manifests"
    assert sorted(p.name for p in pkg.glob("*.yaml")) == [f.name for f in files]
    assert all(filecmp.cmp(pkg / f.name, f, shallow=False) for f in files)
    assert data.manifest_dir().resolve() == (REPO / "data_manifests").resolve()
    wanted = {"allen_mouse_10um", "allen_mouse_25um", "allen_mouse_50um", "allen_mouse_100um", "h01",
              "microns_minnie65", "brainreg_sample_brain", "zheng_ca3"}
    assert wanted <= set(data.list_datasets())


def test_manifest_facts():
    h01 = data.manifest("h01")
    assert h01["remote"]["raw"]["voxel_size"] == [4, 4, 33] and h01["remote"]["segmentation"]["voxel_size"] == [8, 8, 33]
    assert data.manifest("microns_minnie65")["voxel_size"] == [4, 4, 40]
    for r in (10, 25, 50, 100):
        m = data.manifest(f"allen_mouse_{r}um")
        assert m["space"] == {"name": "ccf", "unit": "um", "orientation": "asr"}
        assert (np.array(m["shape"]) * r).tolist() == m["extent"] == [13200, 8000, 11400]
    m200 = data.manifest("allen_mouse_200um")
    # zoom(x, 0.5) of the 100 um grid: (n100 - 1) * 100 = (n200 - 1) * spacing
    assert np.allclose((np.array(m200["shape"]) - 1) * m200["voxel_size"], (np.array([132, 80, 114]) - 1) * 100)
    ann = data.manifest("allen_mouse_25um")["files"]["annotation"]
    assert ann["orientation"] == "ras" and "converted copy" in ann["note"]


def test_mirror_checksums_all_match(mirror):
    recs = data.verify()
    mirrored = [r for r in recs if r["status"] != "not mirrored"]
    assert len(mirrored) >= 40
    assert all(r["status"] == "ok" for r in mirrored), [r for r in mirrored if r["status"] != "ok"]
    # every real data file in the shared folder is described by some manifest
    described = {Path(r["path"]).resolve() for r in mirrored}
    # a folder entry (tree digest) vouches for every file under it
    described |= {f.resolve() for d in list(described) if d.is_dir() for f in data.tree_files(d)}
    on_disk = {p.resolve() for p in Path(mirror).rglob("*") if p.is_file() and p.name != "README.md"}
    assert on_disk <= described, sorted(map(str, on_disk - described))[:5]


def test_fetch_from_mirror_and_atlas_files(mirror):
    got = data.fetch("allen_mouse_25um", files=["annotation", "ontology"])
    assert got["annotation"] == mirror / "atlas" / "ABA_25um_2017_annotation.tif"
    spec = data.atlas_files("allen_mouse_25um")
    assert spec["file_orientation"] == "ras" and spec["orientation"] == "asr" and spec["space"] == "ccf"
    # the template is mirrored now, stored AP/DV/LR beside the LR/AP/DV annotation: kept, each permuted exactly
    assert spec["reference"] == mirror / "atlas" / "allen_mouse_25um_template.tif"
    assert spec["role_orientations"] == {"reference": "asr"}
    with pytest.raises(InputError, match="not in the mirror"):
        data.fetch("allen_mouse_10um")                 # originals only; a mirror never triggers a download
    with pytest.raises(InputError, match="did you mean allen_mouse_25um"):
        data.manifest("allen_mouse_25")


def test_changed_or_missing_mirror_file_is_caught(data_dir, tmp_path, monkeypatch):
    fake = tmp_path / "mirror"
    (fake / "atlas").mkdir(parents=True)
    shutil.copy(data_dir / "atlas" / "allen_mouse_200um.npz", fake / "atlas")
    text = (data_dir / "atlas" / "allen_structure_tree.csv").read_text()
    (fake / "atlas" / "allen_structure_tree.csv").write_text(text.replace("Primary visual area", "Primary visua"))
    monkeypatch.setenv("ATLASREG_DATA", str(fake))
    with pytest.raises(InputError, match="checksum mismatch"):
        data.fetch("allen_mouse_200um")
    status = {r["file"]: r["status"] for r in data.verify("allen_mouse_200um")}
    assert status == {"volumes": "ok", "ontology": "mismatch", "licence": "missing", "ontology_json": "missing"}
    assert {r["status"] for r in data.verify("zheng_ca3")} == {"missing"}
    res = CliRunner().invoke(app, ["data", "verify", "allen_mouse_200um"])
    assert res.exit_code == 2 and "mismatch" in res.output


def test_download_path_uses_pooch_with_checksum(monkeypatch, tmp_path):
    monkeypatch.delenv("ATLASREG_DATA", raising=False)
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path))
    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash))
        p = Path(path) / fname
        p.write_bytes(b"not really an nrrd")
        return str(p)

    import pooch

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    got = data.fetch("allen_mouse_25um", files=["template"])
    url, known = calls[0]
    assert url.endswith("average_template_25.nrrd")
    assert known == "sha256:e4a2b483e842b4c8c1b5452d940ea59e14bc1ebaa38fe6a9c3bacac6db2a8f4b"
    assert got["template"].parent == tmp_path
    # cached now, but it does not match the recorded checksum: refused
    with pytest.raises(InputError, match="does not match"):
        data.fetch("allen_mouse_25um", files=["template"])
    with pytest.warns(UserWarning, match="no checksum"):
        data.fetch("allen_mouse_10um", files=["annotation"])


def test_data_cli(mirror):
    r = CliRunner()
    out = r.invoke(app, ["data", "list", "--kind", "atlas"])
    assert out.exit_code == 0 and "allen_mouse_25um" in out.output and "h01" not in out.output
    out = r.invoke(app, ["data", "fetch", "zheng_ca3"])
    assert out.exit_code == 0 and "zheng-ca3-uct-to-ccf.csv" in out.output
    out = r.invoke(app, ["data", "verify"])
    assert out.exit_code == 0 and "mismatch" not in out.output
    out = r.invoke(app, ["data", "fetch", "allen_mouse_10um"])
    assert out.exit_code == 2 and "not in the mirror" in out.output
    for verb in (["data", "list"], ["data", "fetch"], ["data", "verify"]):
        h = r.invoke(app, verb + ["--help"])
        assert h.exit_code == 0 and "Example" in h.output


def test_tree_digest_sees_every_file_and_never_follows_links(tmp_path):
    tree = tmp_path / "store.zarr"
    (tree / "c" / "0").mkdir(parents=True)
    (tree / "zarr.json").write_text("{}")
    (tree / "c" / "0" / "0").write_bytes(b"\x00\x01")
    first = data.sha256(tree)
    assert first == data.sha256(tree) and len(first) == 64
    (tree / "c" / "0" / "0").write_bytes(b"\x00\x02")      # one chunk changes: the digest changes
    second = data.sha256(tree)
    assert second != first
    (tmp_path / "secret").write_text("not part of the store")
    (tree / "link").symlink_to(tmp_path / "secret")         # a link counts as its target text, not its content
    third = data.sha256(tree)
    assert third != second
    (tmp_path / "secret").write_text("changed, still not read")
    assert data.sha256(tree) == third


# -- downloads only when asked, over https (issue 16, item 8) -----------------------------------------------
def test_every_manifest_original_is_https():
    for f in sorted((REPO / "data_manifests").glob("*.yaml")):
        text = f.read_text()
        assert "http://" not in text, f"{f.name}: a plain-http URL"


def test_loading_a_named_atlas_never_downloads(monkeypatch, tmp_path):
    """`atlasreg atlas info allen_mouse_25um` with no mirror and an empty cache: no download, exit 2 with the
    command that fetches it; `Atlas.load` likewise."""
    import pooch

    from atlasreg.atlas import Atlas

    monkeypatch.delenv("ATLASREG_DATA", raising=False)
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path / "cache"))

    def no_network(*a, **k):
        raise AssertionError("downloaded without being asked")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    res = CliRunner().invoke(app, ["atlas", "info", "allen_mouse_25um"])
    assert res.exit_code == 2, res.output
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and "atlasreg data fetch allen_mouse_25um --download" in err[0], res.stderr
    assert "pass download=" not in err[0]
    with pytest.raises(InputError, match="data fetch allen_mouse_25um"):
        Atlas.load("allen_mouse_25um")


def test_a_failed_download_is_one_line(monkeypatch, tmp_path):
    """Offline: `atlasreg data fetch` ends in one `error:` line naming the dataset and URL, exit 1 (no urllib3
    traceback)."""
    import pooch

    monkeypatch.delenv("ATLASREG_DATA", raising=False)
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path / "cache"))

    def offline(url, **k):
        raise ConnectionError(f"HTTPSConnectionPool(host='x', port=443): Max retries exceeded with url: {url}\n"
                              "(Caused by NameResolutionError)")

    monkeypatch.setattr(pooch, "retrieve", offline)
    res = CliRunner().invoke(app, ["data", "fetch", "allen_mouse_25um", "--file", "template"])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: allen_mouse_25um/template: downloading https://")
    assert "Traceback" not in res.output


def test_manifests_cite_tests_that_exist():
    """A manifest saying 'checked in tests/x.py::test_y' names a file and a test that are there."""
    import re

    cited = 0
    for f in sorted((REPO / "data_manifests").glob("*.yaml")):
        for path, name in re.findall(r"\b(tests/[\w/]+\.py)(?:::(\w+))?", f.read_text()):
            if path.startswith("tests/test_data/"):  # another project's folder, inside a URL or note
                continue
            cited += 1
            assert (REPO / path).is_file(), f"{f.name} cites {path}, which does not exist"
            if name:
                assert f"def {name}(" in (REPO / path).read_text(), f"{f.name} cites {path}::{name}"
    assert cited >= 1


def test_readme_links_stay_inside_the_repository():
    """Every relative link of the README resolves to a file of the repository (a fresh clone has no ../shared)."""
    import re

    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" in target:
            continue
        p = (REPO / target).resolve()
        assert p.is_relative_to(REPO) and p.exists(), f"README links {target}"
