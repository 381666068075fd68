"""Files from others are untrusted (issue 13, items 10, 11, 12, 14).

Each test plants what another user (or a crafted file) could plant — a symlink at a temporary name, a lock
folder in the shared tmp dir, an HDF5 dataset whose bytes live in another file, a summary.json naming a
PNG elsewhere, a manifest whose name walks out of the cache — and checks atlasreg neither reads nor writes
outside what the user named.
"""
from __future__ import annotations

import json
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

import atlasreg as ar
from atlasreg.errors import AtlasregError, InputError

SECRET = b"top secret: the victim's file\n" * 4


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim" / "precious.txt"
    v.parent.mkdir(exist_ok=True)
    v.write_bytes(SECRET)
    return v


def _png(color=(255, 0, 0)) -> bytes:
    """A 1x1 PNG made by hand (no atlasreg code involved)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00" + bytes(color)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# -- item 11: no fixed temporary names, no writing through symlinks ------------------------------------------
def test_report_does_not_write_through_a_planted_part_file(tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "report.html"
    (tmp_path / "report.html.part").symlink_to(victim)  # the name the old writer used
    ar.qc.write_report({"title": "t", "metrics": {"x": 1.0}}, out)
    assert victim.read_bytes() == SECRET
    assert "<html" in out.read_text().lower() and not out.is_symlink()


def test_registration_fingerprint_and_stage_markers_do_not_follow_symlinks(tmp_path):
    from atlasreg.registration import ants_backend, pipeline

    victim = _victim(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "fingerprint.json.tmp").symlink_to(victim)
    vol = ar.Volume(np.zeros((4, 4, 4), np.float32), 1.0, space="a")
    # the planted symlink is removed with the rest of a foreign run's stage files, or ignored; never written
    pipeline._prepare_workdir(work, "ants", {"p": 1}, vol, vol, ar.Affine(np.eye(4), src="a", dst="a"))
    assert json.loads((work / "fingerprint.json").read_text())["backend"] == "ants"
    (work / "affine.done.tmp").symlink_to(victim)
    ants_backend._atomic_done(work / "affine.done", 1.5)
    assert (work / "affine.done").read_text() == "1.500\n"
    assert victim.read_bytes() == SECRET


def test_job_metadata_and_table_parts_do_not_follow_symlinks(tmp_path):
    from atlasreg.distributed import _job, points

    victim = _victim(tmp_path)
    job = _job.Job(tmp_path / "out.csv", token="t", kind="points")
    assert job.begin() is False
    try:
        (job.work / "job.tmp").symlink_to(victim)
        job.started()
        assert json.loads((job.work / "job.json").read_text())["token"] == "t"
        parts = job.work / "parts"
        parts.mkdir()
        (parts / "part-0000000.csv.tmp").symlink_to(victim)
        import pandas as pd

        df = pd.DataFrame({"x": [1.0], "y": [2.0], "z": [3.0]})
        ctx = {"columns": ["x", "y", "z"], "transform": ar.Affine(np.eye(4), src="a", dst="b"), "annotate": None,
               "out_columns": ["x", "y", "z"], "region_column": None, "parts_dir": str(parts),
               "out_fmt": "csv", "done_dir": str(job.done_dir)}
        assert points._map_table_chunk(df, ctx, 0) == 1
        assert [float(v) for v in (parts / "part-0000000.csv").read_text().split(",")] == [1.0, 2.0, 3.0]
    finally:
        job.release()
    assert victim.read_bytes() == SECRET


def test_job_refuses_a_planted_work_folder_symlink(tmp_path):
    from atlasreg.distributed import _job

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out.ome.zarr.partial").symlink_to(elsewhere)
    job = _job.Job(tmp_path / "out.ome.zarr", token="t", kind="warp")
    with pytest.raises(InputError, match="symlink"):
        job.begin()
    assert list(elsewhere.iterdir()) == []


def test_atomic_writer_private_folder_and_symlinked_target(tmp_path):
    from atlasreg.io.atomic import atomic_path, write_atomic

    victim = _victim(tmp_path)
    out = tmp_path / "out.txt"
    out.symlink_to(victim)
    with atomic_path(out, force=True) as tmp:
        mode = stat.S_IMODE(os.lstat(tmp.parent).st_mode)
        assert mode == 0o700 and tmp.parent.parent == tmp_path
        tmp.write_text("new")
    assert not out.is_symlink() and out.read_text() == "new"  # the link was replaced, not followed
    assert victim.read_bytes() == SECRET
    write_atomic(out, b"bytes")
    assert out.read_bytes() == b"bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "victim"]


# -- item 10: the lock folder -----------------------------------------------------------------------------------
def test_lock_folder_is_per_user_0700_not_in_shared_tmp(tmp_path, monkeypatch):
    import tempfile

    from atlasreg.io.locks import lock_file_for, locked

    monkeypatch.delenv("ATLASREG_LOCK_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    lf = lock_file_for(tmp_path / "out.nii.gz")
    assert lf.parent == run / "atlasreg-locks" and lf.parent.parent != Path(tempfile.gettempdir())
    with locked(tmp_path / "out.nii.gz") as held:
        assert held == lf
    assert stat.S_IMODE(os.lstat(lf.parent).st_mode) == 0o700 and os.lstat(lf.parent).st_uid == os.getuid()

    # without a runtime folder: the user's cache folder, never <tmp>/atlasreg-locks-<user>
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lf = lock_file_for(tmp_path / "out.nii.gz")
    if sys.platform.startswith("linux"):
        assert lf.parent == tmp_path / "cache" / "atlasreg" / "locks"
    assert lf.parent.parent != Path(tempfile.gettempdir()) and stat.S_IMODE(os.lstat(lf.parent).st_mode) == 0o700


def test_lock_folder_planted_by_someone_else_is_refused(tmp_path, monkeypatch):
    from atlasreg.io.locks import locked

    monkeypatch.delenv("ATLASREG_LOCK_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    (run / "atlasreg-locks").symlink_to(attacker)
    with pytest.raises(AtlasregError, match="symlink"):
        with locked(tmp_path / "x"):
            pass
    assert list(attacker.iterdir()) == []
    (run / "atlasreg-locks").unlink()
    (run / "atlasreg-locks").mkdir(mode=0o777)
    os.chmod(run / "atlasreg-locks", 0o777)
    if os.getuid() == 0:  # only root can make a folder that belongs to another user
        os.chown(run / "atlasreg-locks", 65534, 65534)
        with pytest.raises(AtlasregError, match="belongs to user"):
            with locked(tmp_path / "x"):
                pass
        os.chown(run / "atlasreg-locks", 0, 0)
    with locked(tmp_path / "x"):  # our own but too open: tightened
        pass
    assert stat.S_IMODE(os.lstat(run / "atlasreg-locks").st_mode) == 0o700


# -- item 12: HDF5 that reads other files -----------------------------------------------------------------------
@pytest.fixture
def secret_file(tmp_path):
    p = tmp_path / "secret.bin"
    p.write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    return p


def test_hdf5_external_storage_is_refused(tmp_path, secret_file):
    p = tmp_path / "crafted.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("volume", shape=(4, 4, 4), dtype=np.uint8, external=[(str(secret_file), 0, 64)])
    with h5py.File(p, "r") as f:  # h5py itself hands out the other file's bytes
        assert f["volume"][0, 0, 3] == 3
    with pytest.raises(InputError, match="external storage") as e:
        ar.read_volume(p, voxel_size=1.0)
    assert str(p) in str(e.value)


def test_hdf5_virtual_dataset_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.full((4, 4, 4), 7, np.uint8)
    layout = h5py.VirtualLayout(shape=(4, 4, 4), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(4, 4, 4))
    p = tmp_path / "crafted.h5"
    with h5py.File(p, "w") as f:
        f.create_virtual_dataset("volume", layout, fillvalue=0)
    with pytest.raises(InputError, match="virtual dataset"):
        ar.read_volume(p, voxel_size=1.0)
    with pytest.raises(InputError, match="virtual dataset"):
        ar.read_volume(p, voxel_size=1.0, dataset="volume")


def test_hdf5_external_link_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.full((4, 4, 4), 7, np.uint8)
    p = tmp_path / "crafted.h5"
    with h5py.File(p, "w") as f:
        f["volume"] = h5py.ExternalLink(str(other), "/data")
        g = f.create_group("g")
        g["inner"] = h5py.ExternalLink(str(other), "/data")
        f["soft"] = h5py.SoftLink("/g/inner")
    for ds in (None, "g/inner", "soft"):
        with pytest.raises(InputError, match="external link"):
            ar.read_volume(p, voxel_size=1.0, dataset=ds)
    # a plain file with a soft link inside itself still reads
    ok = tmp_path / "ok.h5"
    with h5py.File(ok, "w") as f:
        f["data"] = np.full((4, 4, 4), 7, np.uint8)
        f["volume"] = h5py.SoftLink("/data")
    assert ar.read_volume(ok, voxel_size=1.0).numpy().sum() == 7 * 64


# -- item 14: report figures and manifest names -----------------------------------------------------------------
def test_summary_json_cannot_embed_files_outside_its_folder(tmp_path):
    from atlasreg.qc.report import render_report

    secret = tmp_path / "private" / "photo.png"
    secret.parent.mkdir()
    secret.write_bytes(_png((1, 2, 3)))
    res = tmp_path / "result"
    res.mkdir()
    (res / "fig.png").write_bytes(_png())
    (res / "link.png").symlink_to(secret)
    for name in (str(secret), "../private/photo.png", "link.png"):
        (res / "summary.json").write_text(json.dumps({"title": "t", "figures": {"a": "fig.png", "b": name}}))
        with pytest.raises(InputError, match="outside|inside") as e:
            render_report(res)
        assert "summary.json" in str(e.value)
    # a figure in several versions ({label: file}) is held to the same rule
    (res / "summary.json").write_text(json.dumps({"title": "t", "figures": [
        {"caption": "v", "file": {"one": "fig.png", "two": "../private/photo.png"}}]}))
    with pytest.raises(InputError, match="outside"):
        render_report(res)
    (res / "summary.json").write_text(json.dumps({"title": "t", "figures": {"a": "fig.png"}}))
    assert "data:image/png;base64" in render_report(res)


def _manifest(folder: Path, name: str, fid: str = "f", path: str = "x.tif", url: str | None = None) -> None:
    entry = {"path": path, "sha256": "0" * 64} if url is None else {"original": {"url": url}}
    (folder / "m.yaml").write_text(json.dumps({"name": name, "kind": "em", "title": "t", "licence": "CC0",
                                               "files": {fid: entry}}))


@pytest.mark.parametrize("name,fid", [("../../evil", "f"), ("ok", "../x"), ("a/b", "f"), ("ok", "/etc/x")])
def test_manifest_names_are_validated(tmp_path, monkeypatch, name, fid):
    from atlasreg import data

    monkeypatch.setenv("ATLASREG_MANIFESTS", str(tmp_path))
    _manifest(tmp_path, name, fid)
    with pytest.raises(InputError, match="not a valid name"):
        data.list_datasets()


def test_manifest_mirror_path_and_url_stay_inside(tmp_path, monkeypatch):
    from atlasreg import data

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("ATLASREG_MANIFESTS", str(tmp_path))
    monkeypatch.setenv("ATLASREG_DATA", str(mirror))
    for bad in ("../secret.tif", "/etc/passwd"):
        _manifest(tmp_path, "ds", path=bad)
        data._load_all.cache_clear()
        with pytest.raises(InputError, match="relative to the mirror"):
            data.list_datasets()
    (mirror / "out.tif").symlink_to(tmp_path / "m.yaml")  # a symlink out of the mirror
    _manifest(tmp_path, "ds", path="out.tif")
    data._load_all.cache_clear()
    with pytest.raises(InputError, match="outside"):
        data.resolve("ds", "f", download=False)
    # the URL's last part becomes a plain token
    n = data._cached_name("ds", "f", "https://x.org/a/..%2F..%2Fevil?q=1")
    assert n.startswith("ds__f__") and ".." not in n and "%" not in n


def test_itk_h5_transform_with_external_parameters_is_refused(tmp_path):
    import SimpleITK as sitk

    p = tmp_path / "affine.h5"
    sitk.WriteTransform(sitk.AffineTransform(3), str(p))  # a real ITK transform file, written by ITK
    secret = tmp_path / "params.bin"
    secret.write_bytes(np.arange(12, dtype="<f8").tobytes())
    with h5py.File(p, "a") as f:
        g = f["TransformGroup/0"]
        del g["TransformParameters"]
        g.create_dataset("TransformParameters", shape=(12,), dtype="<f8", external=[(str(secret), 0, 96)])
    with pytest.raises(InputError, match="external storage"):
        ar.load_transform(p, src="a", dst="b")
