"""Dataset manifests: list public datasets, fetch their files with checksums, verify a local mirror.

Each dataset is one YAML file in ``data_manifests/`` (shipped inside the package as
``atlasreg/manifests``, a link to that folder, so the repository copy is the only
source of truth). A manifest records the public originals (URL, checksum where known,
orientation), the voxel size, unit, orientation and licence, and, for every file of the
shared mirror, its path there and the sha256 of the file *as it is in the mirror* —
with a note where that file is a converted copy of the original.

Where files come from, in order:

1. ``ATLASREG_DATA`` (a local mirror such as ``../shared/data``): files listed with a
   ``path`` are taken from it and their sha256 checked. With a mirror set nothing is
   downloaded unless ``download=True`` is passed.
2. The download cache (``ATLASREG_CACHE``, default the OS cache folder ``atlasreg``):
   files fetched before, checked again against their recorded checksum.
3. The public original, downloaded with pooch and checked against its recorded
   sha256 (originals without one are downloaded with a warning saying so). Only
   :func:`fetch` (``atlasreg data fetch``) downloads; loading an atlas by name
   (``Atlas.load("allen_mouse_25um")``) never does unless ``download=True`` is given.

Examples
--------
>>> from atlasreg import data
>>> data.list_datasets()                                    # doctest: +SKIP
['allen_mouse_100um', 'allen_mouse_10um', 'allen_mouse_200um', 'allen_mouse_25um', ...]
>>> data.fetch("allen_mouse_25um")["annotation"]           # doctest: +SKIP
PosixPath('/work/shared/data/atlas/ABA_25um_2017_annotation.tif')
>>> [r for r in data.verify() if r["status"] != "ok"]       # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import DownloadError, InputError
from .spaces import as_voxel_size
from .io.paths import check_name, inside, safe_file_name

_PKG_MANIFESTS = Path(__file__).resolve().parent / "manifests"
_REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def manifest_dir() -> Path:
    """Folder of the YAML manifests (``ATLASREG_MANIFESTS`` overrides)."""
    env = os.environ.get("ATLASREG_MANIFESTS")
    if env:
        return Path(env)
    for d in (_PKG_MANIFESTS, _REPO_MANIFESTS):
        if d.is_dir() and any(d.glob("*.yaml")):
            return d
    raise InputError("no dataset manifests found (atlasreg/manifests is missing): reinstall atlasreg or set "
                     "ATLASREG_MANIFESTS to a folder of manifest YAMLs")


def mirror_dir() -> Path | None:
    """The local mirror named by ``ATLASREG_DATA``, or None."""
    env = os.environ.get("ATLASREG_DATA")
    return Path(env) if env else None


def cache_dir() -> Path:
    """Where downloads go (``ATLASREG_CACHE``, default the OS cache folder)."""
    env = os.environ.get("ATLASREG_CACHE")
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("atlasreg"))


@lru_cache(maxsize=None)
def _load_all(folder: str) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(folder).glob("*.yaml")):
        if p.stat().st_size > 1_000_000:  # manifests are a few kB; don't spend minutes parsing something else
            raise InputError(f"{p.stat().st_size} bytes is far too large for a dataset manifest", path=p)
        try:
            m = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise InputError(f"invalid YAML{where}: {getattr(exc, 'problem', None) or ' '.join(str(exc).split())}",
                             path=p) from None
        _check_manifest(m, p)
        if m["name"] in out:
            raise InputError(f"dataset name {m['name']!r} is used by two manifests", path=p, field="name")
        m["_file"] = str(p)
        out[m["name"]] = m
    return out


def _check_manifest(m, path) -> None:
    if not isinstance(m, dict):
        raise InputError("a manifest is a YAML mapping", path=path)
    for k in ("name", "kind", "title", "licence"):
        if not m.get(k):
            raise InputError(f"manifest lacks {k!r}", path=path, field=k)
        if not isinstance(m[k], str):
            raise InputError(f"{k!r} must be text, got {type(m[k]).__name__}", path=path, field=k)
    # the name and the file ids become part of cache file names: plain tokens only
    check_name(m["name"], source=path, field="name")
    files = m.get("files") or {}
    if not isinstance(files, dict):
        raise InputError("'files' must map file ids to entries", path=path, field="files")
    for fid, f in files.items():
        check_name(fid, source=path, field=f"files.{fid}")
        if not isinstance(f, dict) or not (f.get("path") or (f.get("original") or {}).get("url")):
            raise InputError(f"file {fid!r} needs a mirror 'path' or an 'original' with a 'url'", path=path,
                             field=f"files.{fid}")
        if f.get("path") and (not isinstance(f["path"], str) or os.path.isabs(f["path"])
                              or ".." in Path(f["path"]).parts):
            raise InputError(f"file {fid!r}: 'path' must be relative to the mirror folder, without '..', got "
                             f"{f['path']!r}", path=path, field=f"files.{fid}.path")
        if f.get("path") and not f.get("sha256"):
            raise InputError(f"file {fid!r} is in the mirror but has no sha256", path=path, field=f"files.{fid}")
        for where, e in ((f"files.{fid}", f), (f"files.{fid}.original", f.get("original"))):
            h = e.get("sha256") if isinstance(e, dict) else None
            if h is not None and not re.fullmatch(r"[0-9a-f]{64}", str(h)):
                raise InputError(f"sha256 {h!r} is not 64 hex digits (damaged or cut short?)", path=path,
                                 field=f"{where}.sha256")
        _check_voxel_size(f.get("voxel_size"), path, f"files.{fid}.voxel_size")
    _check_voxel_size(m.get("voxel_size"), path, "voxel_size")
    roles = m.get("atlas") or {}
    if not isinstance(roles, dict):
        raise InputError("'atlas' must map roles (reference, annotation, ...) to file ids", path=path, field="atlas")
    for role, fid in roles.items():
        if not isinstance(fid, str) or fid not in files:
            raise InputError(f"atlas role {role!r} names file {fid!r}, which is not listed", path=path,
                             field=f"atlas.{role}")


def _check_voxel_size(vs, path, field: str) -> None:
    if vs is None:
        return
    if not isinstance(vs, list) or len(vs) != 3:  # a manifest states every axis
        raise InputError(f"voxel_size must be a list of three positive numbers, got {vs!r}", path=path, field=field)
    as_voxel_size(vs, path=path, field=field)


def _all() -> dict[str, dict]:
    return _load_all(str(manifest_dir()))


def list_datasets(kind: str | None = None) -> list[str]:
    """Names of all datasets with a manifest (optionally only one ``kind``: atlas, em, lightsheet, ...)."""
    return sorted(n for n, m in _all().items() if kind is None or m["kind"] == kind)


def manifest(name: str) -> dict:
    """The parsed manifest of dataset ``name``."""
    allm = _all()
    if name not in allm:
        import difflib

        close = difflib.get_close_matches(name, list(allm), n=3)
        raise InputError(f"no dataset named {name!r}{'; did you mean ' + ', '.join(close) + '?' if close else ''} "
                         f"(known: {', '.join(sorted(allm))})", field="name")
    return allm[name]


# -- checksums -------------------------------------------------------------------------------------
_HASHES: dict[tuple, str] = {}


def sha256(path: str | Path) -> str:
    """sha256 of a file (memoised per path, size and modification time), or of a folder's tree.

    A folder's digest is the sha256 of its sorted ``relative/path<TAB>sha256`` lines, one per file (a
    symbolic link counts as its target text, never followed), so one manifest entry can vouch for a
    multi-file format such as an OME-Zarr store or a conformance suite.
    """
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        return _tree_sha256(p)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def tree_files(folder: Path) -> list[Path]:
    """Every file and symbolic link under ``folder`` (links not followed), sorted."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        out.extend(Path(root) / f for f in files)
        out.extend(Path(root) / d for d in dirs if (Path(root) / d).is_symlink())
    return sorted(out)


def _tree_sha256(folder: Path) -> str:
    lines = []
    for f in tree_files(folder):
        rel = f.relative_to(folder).as_posix()
        digest = hashlib.sha256(os.readlink(f).encode()).hexdigest() if f.is_symlink() else sha256(f)
        lines.append(f"{rel}\t{digest}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# -- fetching --------------------------------------------------------------------------------------------
def _from_mirror(name: str, fid: str, entry: dict, mirror: Path) -> Path | None:
    rel = entry.get("path")
    if not rel:
        return None
    p = inside(mirror, rel, source=manifest(name)["_file"], field=f"files.{fid}.path")
    if not p.exists():
        return None
    got = sha256(p)
    if got != entry["sha256"]:
        raise InputError(f"checksum mismatch for {name}/{fid}: sha256 {got}, the manifest records "
                         f"{entry['sha256']}. The mirror file changed or is not the one described; restore it "
                         f"or update {Path(manifest(name)['_file']).name}", path=p, field="sha256")
    return p


def _cached_name(name: str, fid: str, url: str) -> str:
    base = safe_file_name(url.split("?")[0].split("#")[0].rstrip("/").split("/")[-1], fid)
    return f"{check_name(name, field='name')}__{check_name(fid, field='files')}__{base}"


def _from_cache_or_download(name: str, fid: str, entry: dict, download: bool) -> Path | None:
    orig = entry.get("original") or {}
    url = orig.get("url")
    if not url:
        return None
    known = orig.get("sha256")
    cache = cache_dir()
    target = cache / _cached_name(name, fid, url)
    from .io.locks import locked

    # One process fills a cache entry; concurrent fetches wait, then find it complete (issue 9).
    with locked(target, beside=True):
        if target.exists():
            if known and sha256(target) != known:
                raise InputError(f"cached download of {name}/{fid} does not match its recorded sha256; delete it "
                                 "and fetch again", path=target, field="sha256")
            return target
        if not download:
            return None
        import pooch

        if not known:
            warnings.warn(f"{name}/{fid}: no checksum is recorded for the original at {url}; downloading "
                          "unchecked (pooch logs the sha256 it finds - add it to the manifest)", stacklevel=3)
        if not url.startswith(("https://", "http://127.0.0.1:", "http://localhost:")):  # loopback: a local server
            raise InputError(f"{name}/{fid}: the manifest's original is not on https ({url}); atlasreg downloads "
                             "over https only", field="url")
        try:
            path = pooch.retrieve(url, known_hash=f"sha256:{known}" if known else None, fname=target.name,
                                  path=str(cache), progressbar=False)
        except Exception as exc:  # network (requests/urllib3) or checksum (ValueError): one line, named
            raise DownloadError(f"{name}/{fid}: downloading {url} failed: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:300]}") from None
    return Path(path)


def resolve(name: str, fid: str, download: bool | None = None) -> tuple[Path, bool] | None:
    """Local path of one file of a dataset and whether it is the public original (else the mirror copy).

    Returns None when the file is neither in the mirror nor in the cache and downloading is off.
    """
    m = manifest(name)
    entry = (m.get("files") or {}).get(fid)
    if entry is None:
        raise InputError(f"dataset {name!r} has no file {fid!r} (files: {sorted(m.get('files') or {})})",
                         field="file")
    mirror = mirror_dir()
    if download is None:
        download = mirror is None
    if mirror is not None:
        p = _from_mirror(name, fid, entry, mirror)
        if p is not None:
            return p, False
    p = _from_cache_or_download(name, fid, entry, download)
    return (p, True) if p is not None else None


def fetch(name: str, files=None, download: bool | None = None) -> dict[str, Path]:
    """Local, checksum-verified paths of a dataset's files: ``{file id: path}``.

    Parameters
    ----------
    name : str
        Dataset name (``atlasreg data list``).
    files : list of str, optional
        Only these file ids (default: all).
    download : bool, optional
        Download originals that are not available locally. Default: only when no
        ``ATLASREG_DATA`` mirror is set (tests set one and never touch the network).

    Raises :class:`InputError` naming every requested file that could not be provided.
    """
    m = manifest(name)
    ids = list(files) if files is not None else list(m.get("files") or {})
    out, missing = {}, []
    for fid in ids:
        r = resolve(name, fid, download)
        if r is None:
            missing.append(fid)
        else:
            out[fid] = r[0]
    if missing:
        where = f"the mirror {mirror_dir()}" if mirror_dir() else "the download cache"
        if download or (download is None and mirror_dir() is None):
            how = "the manifest lists no public original for them"
        else:
            how = (f"fetch them first: `atlasreg data fetch {name} --download` (from Python: "
                   f"atlasreg.data.fetch({name!r}, download=True))")
        raise InputError(f"{name}: file(s) {missing} are not in {where}; {how}", field="files")
    return out


def verify(names=None) -> list[dict]:
    """Check every mirrored file of the given datasets (default all) against its recorded sha256.

    Returns one record per file: ``dataset, file, path, status`` (``ok``, ``mismatch``,
    ``missing``, ``not mirrored``), ``expected`` and ``actual`` sha256.
    """
    mirror = mirror_dir()
    if mirror is None:
        raise InputError("set ATLASREG_DATA to the mirror folder to verify (e.g. ../shared/data)",
                         field="ATLASREG_DATA")
    if isinstance(names, str):
        names = [names]
    recs = []
    for n in (names or list_datasets()):
        m = manifest(n)
        for fid, e in (m.get("files") or {}).items():
            rec = {"dataset": n, "file": fid, "path": None, "status": "not mirrored", "expected": e.get("sha256"),
                   "actual": None}
            if e.get("path"):
                p = mirror / e["path"]
                rec["path"] = str(p)
                if not p.exists():
                    rec["status"] = "missing"
                else:
                    rec["actual"] = sha256(p)
                    rec["status"] = "ok" if rec["actual"] == e["sha256"] else "mismatch"
            recs.append(rec)
    return recs


def atlas_files(name: str, download: bool = False) -> dict:
    """What :meth:`atlasreg.Atlas.load` needs for an atlas manifest: local paths and geometry.

    Nothing is downloaded unless ``download=True``: files come from the mirror or the cache.

    Optional roles (reference, hemispheres) that are not available locally are left out;
    the annotation and ontology must be found.
    """
    m = manifest(name)
    roles = m.get("atlas")
    if m["kind"] != "atlas" or not roles:
        raise InputError(f"dataset {name!r} is a {m['kind']!r} dataset, not an atlas "
                         f"(atlases: {', '.join(list_datasets('atlas'))})", field="atlas")
    files = m["files"]
    space = m.get("space") or {}
    orientation = space.get("orientation")
    out: dict = {"keys": {}}
    file_orients = {}
    for role, fid in roles.items():
        r = resolve(name, fid, download)
        if r is None:
            if role in ("annotation", "ontology"):
                fetch(name, [fid], download)  # raises with the explanation
            continue
        path, is_original = r
        out[role] = path
        entry = files[fid]
        if role != "ontology":
            fo = (entry.get("original") or {}).get("orientation") if is_original else entry.get("orientation")
            file_orients[role] = fo or orientation
            keys = entry.get("keys") or {}
            if role in keys:
                out["keys"][role] = keys[role]
    # Files stored in different axis orders (the mirror's annotation LR/AP/DV beside a template AP/DV/LR, or a
    # mirror copy beside a downloaded original) are each permuted exactly into the atlas orientation.
    ann_fo = file_orients["annotation"]
    out["role_orientations"] = {r: o for r, o in file_orients.items() if r != "annotation" and o != ann_fo}
    from .spaces import orientation_mapping

    fo = file_orients["annotation"]
    vs = list(m["voxel_size"])
    perm, _ = orientation_mapping(orientation, fo)  # file axis j is space axis perm[j]
    out.update({"voxel_size": [vs[i] for i in perm], "file_orientation": fo, "orientation": orientation,
                "unit": space.get("unit", "um"), "space": space.get("name")})
    return out
