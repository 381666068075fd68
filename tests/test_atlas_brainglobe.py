"""BrainGlobe 2 and 3 atlases: folders written by brainglobe-atlasapi's own code, lookups against its own reader.

brainglobe-atlasapi's ``structure_from_coords(microns=True)`` truncates (voxel ``int(x / res)``); atlasreg
rounds to the nearest voxel centre (voxel ``round(x / res)``, centres at ``i * res``). So atlasreg at ``x``
equals BrainGlobe at ``x + res / 2``, and the two agree directly at voxel centres.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from atlasreg import InputError
from atlasreg.atlas import Atlas
from atlasreg.atlas.loaders import brainglobe_dir, find_installed_brainglobe

BG3_NAME = "testallen_mouse_200.0um"


@pytest.fixture(scope="module")
def bg3_root(data_dir) -> Path:
    return data_dir / "interop" / "brainglobe_v3"


def _bg_config(tmp: Path, root: Path) -> Path:
    """A BrainGlobe config file pointing at ``root`` (brainglobe-atlasapi writes one into $HOME otherwise)."""
    conf_dir = tmp / "bgconf"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "bg_config.conf").write_text(
        f"[default_dirs]\nbrainglobe_dir = {root}\ninterm_download_dir = {root}\n")
    return conf_dir


@pytest.fixture(scope="module")
def bg_oracle(bg3_root, tmp_path_factory):
    """brainglobe-atlasapi's own reader on the BrainGlobe 3 folder (offline: the atlas is local).

    brainglobe-atlasapi 3.0.2 reads ``parent_identifier`` as UInt16, which Allen ids above 65535 (e.g.
    182305689) do not fit, so it cannot read this folder its own writer made; its terminology reader is
    run here with that one column widened to UInt32 (everything else is its own code).
    """
    import pandas as pd
    from brainglobe_atlasapi import BrainGlobeAtlas, core

    original = core.load_structures_from_csv

    def widened(path):
        real = pd.read_csv

        def read_csv(*a, dtype=None, **k):
            if isinstance(dtype, dict) and "parent_identifier" in dtype:
                dtype = {**dtype, "parent_identifier": pd.UInt32Dtype()}
            return real(*a, dtype=dtype, **k)

        pd.read_csv = read_csv
        try:
            return original(path)
        finally:
            pd.read_csv = real

    core.load_structures_from_csv = widened
    try:
        conf = _bg_config(tmp_path_factory.mktemp("bg"), bg3_root)
        return BrainGlobeAtlas(BG3_NAME, brainglobe_dir=bg3_root, check_latest=False,
                               config_dir=conf / "bg_config.conf")
    finally:
        core.load_structures_from_csv = original


def _points(shape, res, n, seed):
    rng = np.random.default_rng(seed)
    hi = (np.asarray(shape) - 1) * res
    return rng.uniform(0, hi, size=(n, 3))


def _bg_lookup(bg, pts):
    return np.array([bg.structure_from_coords(tuple(p), microns=True) for p in pts], dtype=np.int64)


@pytest.mark.parametrize("how", ["root", "manifest", "atlas_folder"])
def test_brainglobe3_loads_like_brainglobe(bg3_root, bg_oracle, how):
    manifest = bg3_root / "brainglobe-atlasapi" / "atlases" / BG3_NAME / "3_0" / "manifest.json"
    src = {"root": bg3_root, "manifest": manifest, "atlas_folder": manifest.parents[1]}[how]
    with warnings.catch_warnings():
        # this folder's hemispheres put left (1) at LR index 0 although "asr" puts right there: atlasreg says so
        warnings.simplefilter("ignore", UserWarning)
        atlas = Atlas.load(src)
        hemis = atlas.hemispheres.data
    assert atlas.orientation == "asr"
    assert np.allclose(atlas.voxel_size, 200.0)
    assert atlas.shape == tuple(bg_oracle.shape) == (66, 40, 57)
    # the same arrays as brainglobe-atlasapi reads from the same files
    assert np.array_equal(np.asarray(atlas.annotation.data), bg_oracle.annotation)
    assert np.array_equal(atlas.reference.data, bg_oracle.template)
    assert np.array_equal(hemis, bg_oracle.hemispheres)
    # the same terminology
    for sid in (997, 385, 315, 1089, 549):
        assert atlas.structures[sid]["acronym"] == bg_oracle.structures[sid]["acronym"]
        assert list(atlas.structures[sid]["structure_id_path"]) == list(bg_oracle.structures[sid]["structure_id_path"])


def test_brainglobe3_structure_lookups_agree(bg3_root, bg_oracle):
    atlas = Atlas.load(bg3_root)
    res = 200.0
    pts = _points(atlas.shape, res, 3000, seed=1)
    ours = atlas.region_of(pts)
    # atlasreg rounds to the nearest voxel centre; BrainGlobe truncates: shifted by half a voxel they agree
    theirs = _bg_lookup(bg_oracle, pts + res / 2)
    assert (ours > 0).mean() > 0.3  # the points hit the brain, not only background
    assert np.array_equal(ours, theirs)
    # ... and without the shift they differ on points near boundaries: the documented convention difference
    assert (ours != _bg_lookup(bg_oracle, pts)).mean() > 0.05
    # at voxel centres the two conventions coincide
    centres = np.round(pts / res) * res
    assert np.array_equal(atlas.region_of(centres), _bg_lookup(bg_oracle, centres))
    # hemispheres too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hem = atlas.hemisphere_of(centres[:300])
    bg_hem = [bg_oracle.hemisphere_from_coords(tuple(p), microns=True) for p in centres[:300]]
    assert np.array_equal(hem, bg_hem)


def test_brainglobe2_folder_written_by_brainglobe(bg_oracle, tmp_path):
    """A BrainGlobe 2 folder (metadata.json, structures.json, *.tiff) made with brainglobe-atlasapi's own
    v2 metadata writer (``create_metadata_files``: metadata.json, structures.csv, README) from the arrays its
    reader gives; the stacks with ``tifffile.imwrite``, which is all its ``stacks.write_stack`` does (that
    module needs ome-zarr-py, not installed here)."""
    from brainglobe_atlasapi.atlas_generation.metadata_utils import create_metadata_files
    import tifffile

    def write_stack(stack, filename):
        tifffile.imwrite(str(filename), stack)

    folder = tmp_path / "testallen_mouse_200um_v1.2"
    folder.mkdir()
    write_stack(bg_oracle.template, folder / "reference.tiff")
    write_stack(bg_oracle.annotation, folder / "annotation.tiff")
    write_stack(bg_oracle.hemispheres, folder / "hemispheres.tiff")
    structures = [{"id": int(s["id"]), "acronym": s["acronym"], "name": s["name"],
                   "structure_id_path": [int(v) for v in s["structure_id_path"]],
                   "rgb_triplet": [int(v) for v in s["rgb_triplet"]]} for s in bg_oracle.structures_list]
    (folder / "structures.json").write_text(json.dumps(structures))
    meta = {"name": "testallen_mouse", "citation": "unpublished", "atlas_link": "http://example.com",
            "species": "Mus musculus", "symmetric": False, "resolution": [200.0, 200.0, 200.0],
            "orientation": "asr", "version": "1.2", "shape": [66, 40, 57], "trasform_to_bg": None,
            "additional_references": []}
    create_metadata_files(folder, meta, structures, 997)
    assert (folder / "structures.csv").exists()  # brainglobe's writer ran

    atlas = Atlas.load(folder)
    pts = _points(atlas.shape, 200.0, 2000, seed=2)
    assert np.array_equal(atlas.region_of(pts), _bg_lookup(bg_oracle, pts + 100.0))
    assert np.array_equal(atlas.reference.data, bg_oracle.template)

    # installed in a BrainGlobe 2 directory, it is found by name
    found = find_installed_brainglobe("testallen_mouse_200um", root=tmp_path)
    assert found == folder


def test_installed_atlas_found_by_name_before_download(bg3_root, tmp_path, monkeypatch):
    """``Atlas.load("allen_mouse_25um")`` with no mirror and an empty cache takes the atlas installed in the
    BrainGlobe directory its config file names, and never downloads."""
    bg = tmp_path / "bgdir"
    shutil.copytree(bg3_root / "brainglobe-atlasapi", bg / "brainglobe-atlasapi")
    atlases = bg / "brainglobe-atlasapi" / "atlases"
    (atlases / BG3_NAME).rename(atlases / "allen_mouse_25um")  # an installed atlas of that name
    monkeypatch.setenv("BRAINGLOBE_CONFIG_DIR", str(_bg_config(tmp_path, bg)))
    monkeypatch.delenv("ATLASREG_DATA", raising=False)
    monkeypatch.setenv("ATLASREG_CACHE", str(tmp_path / "cache"))
    import pooch

    def no_download(*a, **k):
        raise AssertionError("Atlas.load tried to download")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    assert brainglobe_dir() == bg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        atlas = Atlas.load("allen_mouse_25um")
    assert atlas.metadata["brainglobe_version"] == 3
    assert Path(atlas.metadata["manifest_path"]).is_relative_to(bg)
    assert atlas.space.name == "ccf" and atlas.shape == (66, 40, 57)
    # a name only BrainGlobe knows
    (atlases / "allen_mouse_25um").rename(atlases / "kim_mouse_25um")
    assert Atlas.load("kim_mouse_25um").metadata["brainglobe_version"] == 3


def test_not_an_atlas_folder_messages(bg3_root, tmp_path):
    # a BrainGlobe 3 tree whose atlas manifest is missing: the message says so, not "no annotation volume"
    partial = tmp_path / "partial"
    shutil.copytree(bg3_root / "brainglobe-atlasapi", partial, ignore=shutil.ignore_patterns("atlases"))
    with pytest.raises(InputError, match="BrainGlobe 3 tree.*manifest.json") as e:
        Atlas.load(partial)
    assert "no annotation volume" not in str(e.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not an atlas folder.*metadata.json.*manifest.json"):
        Atlas.load(tmp_path / "empty")
    # a manifest pointing outside its BrainGlobe root is refused
    root = tmp_path / "bg"
    shutil.copytree(bg3_root / "brainglobe-atlasapi", root)
    man = root / "atlases" / BG3_NAME / "3_0" / "manifest.json"
    meta = json.loads(man.read_text())
    meta["terminology"]["location"] = "/../../etc"
    man.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="outside the BrainGlobe folder"):
        Atlas.load(man)
    # a missing annotation (a partial download) is named
    meta = json.loads((bg3_root / "brainglobe-atlasapi" / "atlases" / BG3_NAME / "3_0" / "manifest.json").read_text())
    man.write_text(json.dumps(meta))
    shutil.rmtree(root / "annotation-sets" / "testallen_mouse-annotation" / "3_0" / "annotations_compressed.ome.zarr")
    with pytest.raises(InputError, match="annotation.*missing"):
        Atlas.load(man)
