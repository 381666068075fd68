"""Neuroglancer precomputed volumes (images and segmentations), read and written through tensorstore.

The format H01, MICrONS and FlyWire publish in: a folder (local, ``gs://``,
``https://``) holding an ``info`` JSON and one sub-folder of chunks per scale.
atlasreg never decodes chunks itself: tensorstore's ``neuroglancer_precomputed``
driver does (raw, jpeg, png, compressed_segmentation, sharded or not), opened
lazily as a dask array so only the chunks a computation touches are fetched.

Geometry (the precomputed frame, as neuroglancer draws it)
---------------------------------------------------------
* Array axes 0, 1, 2 are the file's x, y, z (the channel axis is dropped; a
  volume with more than one channel is refused).
* ``resolution`` is the voxel size in nanometres; the space unit is ``nm``.
* Voxel ``i`` of a scale covers ``[(voxel_offset + i) * resolution,
  (voxel_offset + i + 1) * resolution)`` nm, so its *centre* — atlasreg's voxel
  position (CONVENTIONS) — is ``(voxel_offset + i + 0.5) * resolution``. This is
  the one frame in which every scale of a pyramid lines up (a scale-1 voxel is
  the mean of the scale-0 voxels it covers) and in which neuroglancer places
  skeleton vertices and annotations given in nm.
* Precomputed stores no rotation and integer offsets only: writing a volume
  whose direction is not the identity is refused; one whose voxel corners are
  not on its own grid is written with the offset just below and its exact
  origin in ``info["atlasreg"]`` (atlasreg reads it back exactly, and the
  neuroglancer state of :mod:`atlasreg.qc.neuroglancer` applies the remainder).

Untrusted input: the ``info`` file is at most :data:`MAX_INFO_BYTES`; scale keys
must stay inside the folder (no ``..``, absolute paths or URLs; for a local
folder the scale directory must resolve inside it); sizes, chunk sizes and
chunk counts are bounded before tensorstore opens anything.

tensorstore is an optional dependency: ``pip install 'atlasreg[precomputed]'``.

Examples
--------
>>> vol = read_volume("precomputed://gs://h01-release/data/20210601/4nm_raw", level=5)  # doctest: +SKIP
>>> vol.voxel_size, vol.unit                                                          # doctest: +SKIP
(array([128., 128., 33.]), 'nm')
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InputError
from ..spaces import as_voxel_size
from ._checks import RawVolume, check_dtype, open_lazy, wrap_read_error

__all__ = ["PrecomputedSource", "precomputed_source", "read_precomputed_info", "read_precomputed", "read_bounded",
           "write_precomputed", "require", "MAX_INFO_BYTES", "PREFIX"]

PREFIX = "precomputed://"
#: largest ``info`` file read (H01's is a few kB; a sharded segmentation's stays well under 1 MiB)
MAX_INFO_BYTES = 4 * 2**20
MAX_SCALES = 64
MAX_CHUNKS_PER_SCALE = 2**42
MAX_VOXELS = 2**60
DATA_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32")
ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "jxl")
_SCHEMES = ("file", "gs", "http", "https", "s3")
_INSTALL = "pip install 'atlasreg[precomputed]'"


def require(module: str, what: str = "neuroglancer precomputed data"):
    """Import an optional dependency of the precomputed readers, or say how to install it.

    >>> require("json").__name__
    'json'
    """
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise InputError(f"reading or writing {what} needs the package {module.split('.')[0]!r}, which is not "
                         f"installed; install it with: {_INSTALL}") from exc


@dataclass(frozen=True)
class PrecomputedSource:
    """Where a precomputed dataset lives: ``url`` is a tensorstore kvstore URL ending in ``/``;
    ``local`` is the folder when it is on this machine (else ``None``)."""

    url: str
    local: Path | None

    @property
    def display(self) -> str:
        return str(self.local) if self.local is not None else PREFIX + self.url.rstrip("/")

    def child(self, key: str) -> "PrecomputedSource":
        key = check_key(key, self.display).strip("/")
        return PrecomputedSource(self.url + key + "/", None if self.local is None else self.local / key)


def _restore(rest: str) -> str:
    """``gs:/b/x`` (a URL whose ``//`` a shell path or pathlib collapsed) -> ``gs://b/x``."""
    m = re.match(r"^([a-z0-9+]+):/*(.*)$", rest, re.IGNORECASE)
    if not m:
        return rest
    scheme, tail = m.group(1).lower(), m.group(2)
    if scheme == "file":
        return "file:///" + tail.lstrip("/")
    return f"{scheme}://{tail}"


def precomputed_source(path) -> PrecomputedSource | None:
    """The precomputed dataset ``path`` names, or ``None`` if it is not one.

    ``path`` is a ``precomputed://`` URL (``precomputed://file:///data/em``,
    ``precomputed://gs://bucket/em``, ``precomputed://https://host/em``), also
    after pathlib collapsed its ``//``, or a local folder whose ``info`` file
    describes a precomputed volume (it has ``scales``).

    >>> precomputed_source("precomputed://gs://h01-release/data/4nm_raw").url
    'gs://h01-release/data/4nm_raw/'
    >>> precomputed_source("brain.nii.gz") is None
    True
    """
    if isinstance(path, PrecomputedSource):
        return path
    if not isinstance(path, (str, os.PathLike)):
        return None
    s = os.fspath(path)
    m = re.match(r"^precomputed:/+(.*)$", s, re.IGNORECASE)
    if m:
        url = _restore(m.group(1))
        scheme = url.split(":", 1)[0].lower() if "://" in url else ""
        if not scheme:
            local = Path(url).expanduser().absolute()
            return PrecomputedSource(local.as_uri() + "/", local)
        if scheme not in _SCHEMES:
            raise InputError(f"unsupported precomputed location {scheme}://; use file://, gs://, s3://, http(s)://",
                             path=s)
        url = url.rstrip("/") + "/"
        if scheme == "file":
            from urllib.parse import unquote, urlparse

            local = Path(unquote(urlparse(url).path))
            return PrecomputedSource(local.absolute().as_uri() + "/", local.absolute())
        return PrecomputedSource(url, None)
    p = Path(s).expanduser()
    if p.is_dir() and (p / "info").is_file() and not any((p / n).exists() for n in ("zarr.json", ".zgroup",
                                                                                     ".zarray", "attributes.json")):
        try:
            head = _read_local_info(p / "info", p)
        except InputError:
            return None
        if isinstance(head, dict) and "scales" in head:
            p = p.absolute()
            return PrecomputedSource(p.as_uri() + "/", p)
    return None


def check_key(key, where: str) -> str:
    """A scale / sub-folder key that stays inside its dataset (no ``..``, absolute paths or URLs)."""
    if not isinstance(key, str) or not key.strip("/"):
        raise InputError(f"key {key!r} must be a non-empty relative path", path=where, field="key")
    if "://" in key or key.startswith("/") or "\\" in key or "\x00" in key or \
            any(part in ("..", ".") for part in PurePosixPath(key).parts):
        raise InputError(f"key {key!r} points outside the dataset's folder; refused (a precomputed key is a "
                         "relative path inside it)", path=where, field="key")
    return key


def _read_local_info(info: Path, folder: Path) -> dict:
    try:
        if info.is_symlink() and not info.resolve().is_relative_to(folder.resolve()):
            raise InputError("the info file is a link to outside the folder; refused", path=info)
        size = info.stat().st_size
        if size > MAX_INFO_BYTES:
            raise InputError(f"the info file is {size} bytes; more than the {MAX_INFO_BYTES} an info file may "
                             "have: not a precomputed info file", path=info)
        text = info.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror or exc})", path=info) from exc
    return _parse_info(text, info)


def _parse_info(text: bytes, where) -> dict:
    try:
        d = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the info file is not valid JSON ({exc})", path=where) from exc
    if not isinstance(d, dict):
        raise InputError("the info file must hold a JSON object", path=where)
    return d


def read_precomputed_info(source, key: str = "info") -> dict:
    """The JSON ``info`` (or another small JSON file ``key``) of a precomputed dataset, size-checked.

    >>> read_precomputed_info("precomputed://file:///data/em")["scales"][0]["resolution"]   # doctest: +SKIP
    [8, 8, 40]
    """
    src = precomputed_source(source)
    if src is None:
        raise InputError("not a neuroglancer precomputed dataset (no precomputed:// URL, and no 'info' file "
                         "with 'scales' in the folder)", path=source)
    if src.local is not None:
        if not src.local.is_dir():
            raise InputError("no such precomputed folder", path=src.local)
        f = src.local / key
        if not f.is_file():
            raise InputError(f"the folder has no {key!r} file: not a neuroglancer precomputed dataset",
                             path=src.local)
        return _read_local_info(f, src.local)
    ts = require("tensorstore")
    try:
        kv = ts.KvStore.open(src.url).result()
        res = read_bounded(kv, key, MAX_INFO_BYTES)
    except Exception as exc:  # noqa: BLE001 - network and driver errors
        raise InputError(f"could not read its {key!r} file ({type(exc).__name__}: {str(exc)[:300]})",
                         path=src.display) from exc
    if res is None:
        raise InputError(f"its {key!r} file is more than {MAX_INFO_BYTES} bytes: not a precomputed info file",
                         path=src.display)
    if res.state != "value":
        raise InputError(f"has no {key!r} file: not a neuroglancer precomputed dataset", path=src.display)
    return _parse_info(bytes(res.value), src.display)


def read_bounded(kv, key, bound: int):
    """Read ``key`` from a tensorstore KvStore unless it is longer than ``bound`` bytes (then ``None``, having
    fetched one byte of it): a probe one byte past the bound first, so a huge remote file is never downloaded."""
    try:
        probe = kv.read(key, byte_range=slice(bound, bound + 1)).result()
        if probe.state == "value" and len(probe.value):
            return None
    except Exception:  # noqa: BLE001 - OUT_OF_RANGE: the value ends before the probe (a store without ranges
        pass           # is read whole, and checked below)
    res = kv.read(key).result()
    return None if res.state == "value" and len(res.value) > bound else res


def _ints(v, n, what, where, positive):
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise InputError(f"{what} must be {n} integers, got {v!r}", path=where, field=what)
    if positive and min(v) < 1:
        raise InputError(f"{what} must be positive, got {v!r}", path=where, field=what)
    return v


def check_volume_info(info: dict, where) -> list[dict]:
    """Validate the volume part of an info file; returns its scales (bounded sizes, keys inside the folder)."""
    dt = info.get("data_type")
    if dt not in DATA_TYPES:
        raise InputError(f"data_type {dt!r} is not one of the precomputed types {DATA_TYPES}", path=where,
                         field="data_type")
    nch = info.get("num_channels", 1)
    if not isinstance(nch, int) or isinstance(nch, bool) or nch < 1:
        raise InputError(f"num_channels must be a positive integer, got {nch!r}", path=where, field="num_channels")
    if nch != 1:
        raise InputError(f"the volume has {nch} channels; an atlasreg volume is one channel (read one with "
                         "tensorstore and wrap it in atlasreg.Volume)", path=where, field="num_channels")
    scales = info.get("scales")
    if not isinstance(scales, list) or not scales:
        raise InputError("'scales' must be a non-empty list", path=where, field="scales")
    if len(scales) > MAX_SCALES:
        raise InputError(f"{len(scales)} scales; at most {MAX_SCALES} are read", path=where, field="scales")
    for k, s in enumerate(scales):
        f = f"scales[{k}]"
        if not isinstance(s, dict):
            raise InputError("must be an object", path=where, field=f)
        check_key(s.get("key"), f"{where} {f}")
        size = _ints(s.get("size"), 3, f"{f}.size", where, True)
        _ints(s.get("voxel_offset", [0, 0, 0]), 3, f"{f}.voxel_offset", where, False)
        res = s.get("resolution")
        if not isinstance(res, list) or len(res) != 3:
            raise InputError(f"resolution must be a list of 3 positive numbers (nm), got {res!r}", path=where,
                             field=f"{f}.resolution")
        as_voxel_size(res, path=where, field=f"{f}.resolution")
        if math.prod(size) > MAX_VOXELS:
            raise InputError(f"size {size} is beyond any real dataset", path=where, field=f"{f}.size")
        chunks = s.get("chunk_sizes")
        if not isinstance(chunks, list) or not chunks:
            raise InputError("chunk_sizes must be a non-empty list", path=where, field=f"{f}.chunk_sizes")
        for c in chunks:
            _ints(c, 3, f"{f}.chunk_sizes", where, True)
            n = math.prod(-(-a // b) for a, b in zip(size, c))
            if n > MAX_CHUNKS_PER_SCALE:
                raise InputError(f"chunk size {c} makes {n} chunks; at most {MAX_CHUNKS_PER_SCALE}", path=where,
                                 field=f"{f}.chunk_sizes")
        enc = s.get("encoding")
        if enc not in ENCODINGS:
            raise InputError(f"encoding {enc!r} is not one of {ENCODINGS}", path=where, field=f"{f}.encoding")
    return scales


def _context():
    import tensorstore as ts

    return ts.Context({"cache_pool": {"total_bytes_limit": 0}, "data_copy_concurrency": {"limit": 2}})


class _Reader:
    """Numpy-style slicing of one scale (channel dropped, domain from 0) through tensorstore."""

    def __init__(self, store):
        self.store = store

    def __getitem__(self, idx):
        return self.store[idx].read().result()


def _open_scale(url: str, scale_index: int):
    import tensorstore as ts

    t = ts.open({"driver": "neuroglancer_precomputed", "kvstore": url, "scale_index": scale_index},
                read=True, context=_context()).result()
    return _Reader(t[ts.d[:].translate_to[0]][..., 0])


def read_precomputed(source, level: int, allow_nonfinite: bool) -> RawVolume:
    """One scale of a precomputed volume as a :class:`RawVolume` (lazy), for :func:`atlasreg.read_volume`."""
    src = precomputed_source(source)
    where = src.display
    info = read_precomputed_info(src)
    scales = check_volume_info(info, where)
    if level >= len(scales):
        raise InputError(f"level={level} does not exist: the dataset has {len(scales)} scale(s) "
                         f"(0..{len(scales) - 1})", path=where, field="level")
    s = scales[level]
    if src.local is not None:
        d = src.local / s["key"]
        if d.exists() and not d.resolve().is_relative_to(src.local.resolve()):
            raise InputError(f"scale {level}'s folder {s['key']!r} links outside the dataset; refused", path=where,
                             field="key")
    require("tensorstore")
    try:
        reader = _open_scale(src.url, level)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - tensorstore reports bad metadata as ValueError
        raise wrap_read_error(exc, where, "open the precomputed volume") from exc
    shape = tuple(int(v) for v in s["size"])
    dtype = check_dtype(reader.store.dtype.numpy_dtype, where, "the precomputed volume")
    chunk = tuple(int(c) for c in s["chunk_sizes"][0])
    # dask blocks: whole chunks, grouped up to ~64 MiB, so a block read is one parallel tensorstore request
    per = max(1, (64 * 2**20) // (dtype.itemsize * math.prod(chunk)))
    grow = max(1, int(round(per ** (1 / 3))))
    dchunks = tuple(min(n, c * grow) for n, c in zip(shape, chunk))
    data = open_lazy(Path(where), partial(_open_scale, src.url, level), shape, dtype, chunk, allow_nonfinite,
                     token=f"precomputed|{src.url}|{level}", dask_chunks=dchunks)
    res = np.asarray(s["resolution"], np.float64)
    off = np.asarray(s.get("voxel_offset", [0, 0, 0]), np.float64)
    origin = (off + 0.5) * res
    note = info.get("atlasreg") if isinstance(info.get("atlasreg"), dict) else {}
    exact = note.get("origin_nm")
    res0 = np.asarray(scales[0]["resolution"], np.float64)
    if isinstance(exact, list) and len(exact) == 3 and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in exact):
        # atlasreg's exact origin: the file's integer offset is the corner just below it (within one voxel)
        delta = np.asarray(exact, np.float64) - (np.asarray(scales[0].get("voxel_offset", [0, 0, 0])) + 0.5) * res0
        if np.all((delta > -1e-6 * res0) & (delta < res0)):
            origin = origin + delta
    raw = RawVolume(data, spacing=res, origin=origin, direction=np.eye(3), file_unit="nm",
                    spacing0=np.asarray(scales[0]["resolution"], np.float64))
    raw.space_name = note.get("space") if isinstance(note.get("space"), str) else None
    raw.orientation = note.get("orientation") if isinstance(note.get("orientation"), str) else None
    raw.recorded_unit = note.get("unit") if note.get("unit") in ("nm", "um", "mm") else "nm"
    return raw


# -- writing --------------------------------------------------------------------------------------------------

def _labels(labels, where) -> tuple[dict, dict | None]:
    """``{id: label}`` and optional ``{id: description}`` from a dict or an Ontology-like ``to_frame()`` table."""
    if hasattr(labels, "to_frame"):  # an atlas Ontology: acronym as the label, full name as the description
        t = labels.to_frame()
        ids = [int(i) for i in t["id"]]
        return dict(zip(ids, map(str, t["acronym"]))), dict(zip(ids, map(str, t["name"])))
    try:
        return {int(k): str(v) for k, v in dict(labels).items()}, None
    except (TypeError, ValueError):
        raise InputError("labels must map integer ids to names (or be an atlas Ontology)", path=where,
                         field="labels") from None


def _segment_properties(labels: dict, descriptions: dict | None) -> dict:
    ids = sorted(labels)
    props = [{"id": "label", "type": "label", "values": [labels[i] for i in ids]}]
    if descriptions:
        props.append({"id": "description", "type": "description", "values": [descriptions.get(i, "") for i in ids]})
    return {"@type": "neuroglancer_segment_properties", "inline": {"ids": [str(i) for i in ids], "properties": props}}


def write_precomputed(vol, path, force: bool = False, *, chunks=64, levels: int = 1, segmentation: bool | None = None,
                      labels: dict | None = None, encoding: str | None = None):
    """Write a volume as a neuroglancer precomputed folder (through tensorstore), blockwise.

    Parameters
    ----------
    vol : Volume
        Identity direction (precomputed has no rotation). Lengths are written in nm.
    path : str or Path
        A local folder, or ``precomputed://file:///...``.
    force : bool
        Replace an existing output.
    chunks : int or 3 ints
        Chunk shape (x, y, z), clipped to the volume.
    levels : int
        Most scales written; each further scale halves the axes whose voxels are not already coarser than
        1.5 times the finest (mean for images, the most frequent label for segmentations, as tensorstore's
        downsample driver computes them), until one chunk holds the scale.
    segmentation : bool, optional
        Write a segmentation layer (integer labels, ``compressed_segmentation`` for 32/64-bit labels).
        Default: True when ``labels`` are given.
    labels : dict or Ontology, optional
        ``{id: name}``, or an atlas :class:`~atlasreg.atlas.Ontology` (acronym as the label, full name as the
        description): written as neuroglancer segment properties, so the viewer lists region names.
    encoding : str, optional
        Chunk encoding (``raw`` default for images).

    Returns
    -------
    Path
        The folder written. Its ``info`` also records ``{"atlasreg": {"space", "unit", "orientation",
        "origin_nm"}}`` (the exact origin, see the module notes).

    Examples
    --------
    >>> write_precomputed(annotation_in_em, "atlas_in_em", labels=atlas.ontology)   # doctest: +SKIP
    PosixPath('atlas_in_em')
    """
    from ..volume import Volume
    from .atomic import atomic_path, check_writable

    if not isinstance(vol, Volume):
        raise InputError(f"write_precomputed needs a Volume, got {type(vol).__name__}", field="vol")
    src = precomputed_source(path) if isinstance(path, str) and path.lower().startswith("precomputed:") else None
    if src is not None and src.local is None:
        raise InputError("atlasreg writes precomputed volumes to a local folder; copy it to the bucket afterwards "
                         "(e.g. gsutil -m cp -r)", path=path)
    p = src.local if src is not None else Path(path).expanduser()
    if not np.allclose(vol.direction, np.eye(3), atol=1e-9):
        raise InputError("neuroglancer precomputed stores no rotation, but this volume's direction is not the "
                         "identity; resample it onto an axis-aligned grid first", path=p, field="direction")
    dtype = np.dtype(vol.dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    if dtype.name not in DATA_TYPES:
        hint = " (cast float64 to float32)" if dtype.kind == "f" else ""
        raise InputError(f"precomputed cannot hold {dtype}; it holds {', '.join(DATA_TYPES)}{hint}", path=p,
                         field="dtype")
    if segmentation is None:
        segmentation = labels is not None
    if segmentation and dtype.kind not in "ui":
        raise InputError(f"a segmentation holds integer labels, not {dtype}", path=p, field="dtype")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise InputError(f"levels must be a positive integer, got {levels!r}", path=p, field="levels")
    descriptions = None
    if labels is not None:
        labels, descriptions = _labels(labels, p)
    if encoding is None:
        encoding = "compressed_segmentation" if segmentation and dtype.itemsize >= 4 and dtype.kind == "u" else "raw"
    if encoding not in ENCODINGS:
        raise InputError(f"encoding must be one of {ENCODINGS}, got {encoding!r}", path=p, field="encoding")
    ts = require("tensorstore")
    check_writable(p, force)
    shape = tuple(int(n) for n in vol.shape)
    c = np.broadcast_to(np.asarray(chunks, dtype=np.int64), (3,))
    if np.any(c < 1):
        raise InputError(f"chunks must be positive, got {chunks!r}", path=p, field="chunks")
    chunk = [int(min(a, n)) for a, n in zip(c, shape)]
    res = vol.voxel_size * _to_nm(vol.unit)
    corner = vol.origin * _to_nm(vol.unit) / res - 0.5
    offset = np.floor(corner + 1e-6)
    note = {"space": vol.space.name, "unit": vol.unit, "orientation": vol.orientation,
            "origin_nm": [float(v) for v in vol.origin * _to_nm(vol.unit)]}
    with atomic_path(p, force) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        url = tmp.absolute().as_uri() + "/"
        base = {"driver": "neuroglancer_precomputed", "kvstore": url,
                "multiscale_metadata": {"type": "segmentation" if segmentation else "image",
                                        "data_type": dtype.name, "num_channels": 1}}
        factors = []
        size, res_k, off_k = list(shape), res.copy(), offset.copy()
        for k in range(int(levels)):
            if k:
                if all(n <= ch for n, ch in zip(size, chunk)):
                    break  # one chunk holds the whole scale
                f = [2 if n > 1 and r <= 1.5 * res_k.min() else 1 for n, r in zip(size, res_k)]
                size = [-(-(int(o) + n) // fi) - int(o) // fi for n, o, fi in zip(size, off_k, f)]
                off_k = np.floor(off_k / f)
                res_k = res_k * f
                factors.append(f)
            scale = {"size": [int(v) for v in size], "resolution": [float(v) for v in res_k],
                     "voxel_offset": [int(v) for v in off_k], "chunk_size": chunk, "encoding": encoding}
            if encoding == "compressed_segmentation":
                scale["compressed_segmentation_block_size"] = [8, 8, 8]
            try:
                t = ts.open({**base, "scale_metadata": scale}, create=True, context=_context()).result()
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"tensorstore could not create scale {k} ({str(exc)[:300]})", path=p) from exc
            if k == 0:
                _store(vol, dtype, t, chunk)
            else:
                prev = ts.open({"driver": "neuroglancer_precomputed", "kvstore": url, "scale_index": k - 1},
                               context=_context()).result()
                _copy_blocks(ts.downsample(prev, list(factors[-1]) + [1], "mode" if segmentation else "mean"), t,
                             chunk)
        info = json.loads((tmp / "info").read_text())
        info["atlasreg"] = note
        if labels is not None:
            info["segment_properties"] = "segment_properties"
            (tmp / "segment_properties").mkdir()
            (tmp / "segment_properties" / "info").write_text(json.dumps(_segment_properties(labels, descriptions)))
        (tmp / "info").write_text(json.dumps(info, indent=1))
    return p


def _to_nm(unit: str) -> float:
    from ..spaces import unit_scale

    return unit_scale(unit, "nm")


def _store(vol, dtype, t, chunk) -> None:
    """Level 0 from the volume's (numpy or dask) data, in blocks of whole chunks.

    Every block covers whole precomputed chunks (the chunk grid starts at ``voxel_offset``, index 0 here), so each
    chunk is encoded and written once, not read back and rewritten for every source block that touches it
    (tensorstore keeps such overlapping writes correct, but pays for each one).
    """
    import dask.array as da
    import tensorstore as ts

    view = t[ts.d[:].translate_to[0]][..., 0]
    per = max(1, (64 * 2**20) // (dtype.itemsize * math.prod(chunk)))
    m = max(1, int(per ** (1 / 3)))
    block = tuple(min(n, c * m) for n, c in zip(vol.shape, chunk))
    data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=block)
    data = data.astype(dtype).rechunk(block)
    da.store(data, _Writer(view), lock=False, compute=True)


class _Writer:
    def __init__(self, view):
        self.view = view

    def __setitem__(self, idx, value):
        self.view[idx].write(np.asarray(value)).result()


def _copy_blocks(src, dst, chunk) -> None:
    import itertools

    import tensorstore as ts

    origin = dst.domain.origin
    shape = dst.domain.shape
    step = [c * 4 for c in chunk]
    s = src[ts.d[:].translate_to[origin]]
    for start in itertools.product(*(range(0, n, st) for n, st in zip(shape[:3], step))):
        sl = tuple(slice(o + a, o + min(a + st, n)) for o, a, st, n in zip(origin[:3], start, step, shape[:3]))
        dst[sl].write(s[sl].read().result().astype(dst.dtype.numpy_dtype, copy=False)).result()
