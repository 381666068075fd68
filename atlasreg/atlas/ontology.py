"""The structure tree of an atlas: ids, acronyms, names, parents, paths, colours.

Reads Allen's structure-tree CSV, Allen's nested structure-graph JSON and
BrainGlobe's flat ``structures.json``. Every query is vectorised over id arrays;
the two non-structure codes of CONVENTIONS pass through untouched:
``0`` (no structure, inside the volume) and ``-1`` (outside the annotation volume).

"Level" means depth in the tree: the root is level 0, its children level 1, and
so on (Allen's ``st_level`` column is a different, curated grouping and is not used).
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

#: Codes ``region_of`` returns that are not structures (CONVENTIONS).
NO_STRUCTURE = 0
OUTSIDE = -1
_SPECIAL = (NO_STRUCTURE, OUTSIDE)
_SPECIAL_NAMES = {NO_STRUCTURE: "no structure (inside the volume, outside the brain)",
                  OUTSIDE: "outside the annotation volume"}


@dataclass(frozen=True)
class Structure:
    """One structure of an ontology. Also readable like BrainGlobe's dicts (``s["acronym"]``)."""

    id: int
    acronym: str
    name: str
    parent: int | None
    structure_id_path: tuple
    colour: str  # "RRGGBB"

    @property
    def depth(self) -> int:
        return len(self.structure_id_path) - 1

    @property
    def rgb_triplet(self) -> list[int]:
        return [int(self.colour[i:i + 2], 16) for i in (0, 2, 4)]

    def __getitem__(self, key: str):
        if key == "rgb_triplet":
            return self.rgb_triplet
        if key in ("id", "acronym", "name", "parent", "structure_id_path", "colour", "depth"):
            return getattr(self, key)
        raise KeyError(key)


class Ontology:
    """A structure tree: look structures up, walk the hierarchy, roll ids up to coarser levels.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``id``, ``acronym``, ``name``, ``parent`` (``None``/NaN for a root) and optionally
        ``structure_id_path`` (sequence of ids from the root to the structure) and ``colour``
        (``"RRGGBB"``). Paths are derived from parents where missing and checked where given.
    source : str, optional
        File it came from, named in error messages.

    Examples
    --------
    >>> onto = Ontology.read("allen_structure_tree.csv")            # doctest: +SKIP
    >>> onto["VISp"].id, onto.ancestors(385)[:3]                    # doctest: +SKIP
    (385, [997, 8, 567])
    >>> onto.at_level([385, 0, -1], 3)                              # doctest: +SKIP
    array([688,   0,  -1])
    """

    def __init__(self, table: pd.DataFrame, source: str | None = None):
        self.source = source
        for col in ("id", "acronym", "name"):
            if col not in table.columns:
                raise InputError(f"structure table has no column {col!r} (columns: {list(table.columns)})",
                                 path=source, field=col)
        t = table.copy()
        ids = pd.to_numeric(t["id"], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(ids) | (ids != np.round(ids))
        if bad.any():  # NaN, inf, text or fractions: a damaged row, not a structure
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"row {r + 1}: id {table['id'].iloc[r]!r} is not an integer structure id", path=source,
                             field="id")
        t["id"] = ids.astype(np.int64)
        t = t[t["id"] > 0]  # 0 is "no structure" (Allen's 'void' / 'universe' rows), never a region
        if t["id"].duplicated().any():
            dup = sorted(set(t.loc[t["id"].duplicated(), "id"].tolist()))[:10]
            raise InputError(f"structure ids appear more than once: {dup}", path=source, field="id")
        t = t.sort_values("id").reset_index(drop=True)
        self.ids = t["id"].to_numpy(np.int64)
        n = len(self.ids)
        if n == 0:
            raise InputError("structure table holds no structures", path=source)
        if n >= 65535:
            raise InputError(f"{n} structures: more than a uint16 label index can hold", path=source)
        for col in ("acronym", "name"):
            if t[col].isna().any():
                i = int(t.loc[t[col].isna(), "id"].iloc[0])
                raise InputError(f"structure {i} has no {col} (a damaged or cut-short row?)", path=source, field=col)
        self._acronym = t["acronym"].astype(str).to_numpy(object)
        self._name = t["name"].astype(str).to_numpy(object)
        colours = t["colour"] if "colour" in t.columns else pd.Series(["FFFFFF"] * n)
        self._colour = np.array([_hex_colour(c) for c in colours], dtype=object)
        self._paths = self._build_paths(t)
        self._pos = {int(i): k for k, i in enumerate(self.ids)}
        self.depth = np.array([len(p) - 1 for p in self._paths], dtype=np.int64)
        self.parent = np.array([p[-2] if len(p) > 1 else 0 for p in self._paths], dtype=np.int64)
        # (n, max_depth + 1) ids along each path, padded with the structure's own id below its depth,
        # so that column L gives the ancestor at level L (or the structure itself if shallower).
        width = int(self.depth.max()) + 1
        self._path_table = np.empty((n, width), dtype=np.int64)
        for k, p in enumerate(self._paths):
            self._path_table[k, :len(p)] = p
            self._path_table[k, len(p):] = p[-1]
        self._by_acronym = {a: int(i) for a, i in zip(self._acronym, self.ids)}
        self._by_acronym_lower: dict[str, list[int]] = {}
        for a, i in zip(self._acronym, self.ids):
            self._by_acronym_lower.setdefault(a.lower(), []).append(int(i))
        self._by_name_lower: dict[str, list[int]] = {}
        for nm, i in zip(self._name, self.ids):
            self._by_name_lower.setdefault(nm.lower(), []).append(int(i))

    def _build_paths(self, t: pd.DataFrame) -> list[tuple]:
        ids = t["id"].tolist()
        known = set(ids)
        parents: dict[int, int | None] = {}
        if "parent" in t.columns:
            for i, p in zip(ids, t["parent"].tolist()):
                p = None if p is None or (isinstance(p, float) and np.isnan(p)) else int(p)
                parents[i] = None if p in (None, 0, -1) else p
        given = None
        if "structure_id_path" in t.columns:
            given = [_parse_path(p, self.source) for p in t["structure_id_path"].tolist()]
            if any(g is None for g in given):
                given = None if all(g is None for g in given) else given
        if "parent" not in t.columns:
            if given is None or any(g is None for g in given):
                raise InputError("structure table needs a 'parent' column or a structure_id_path for every "
                                 "structure", path=self.source, field="parent")
            parents = {i: (g[-2] if len(g) > 1 else None) for i, g in zip(ids, given)}
        missing = sorted({p for p in parents.values() if p is not None and p not in known})
        if missing:
            raise InputError(f"parents {missing[:10]} are not structures of this table", path=self.source,
                             field="parent")
        paths: dict[int, tuple] = {}

        def path_of(i: int) -> tuple:
            chain = []
            cur: int | None = i
            while cur is not None and cur not in paths:
                if cur in chain:
                    raise InputError(f"the parent links of structure {i} form a cycle: {chain}",
                                     path=self.source, field="parent")
                chain.append(cur)
                cur = parents[cur]
            base = paths[cur] if cur is not None else ()
            for c in reversed(chain):
                base = base + (c,)
                paths[c] = base
            return paths[i]

        out = [path_of(i) for i in ids]
        if given is not None:
            for i, g, p in zip(ids, given, out):
                if g is not None and tuple(g) != p:
                    raise InputError(f"structure {i}: structure_id_path {'/'.join(map(str, g))} disagrees with "
                                     f"the parent links ({'/'.join(map(str, p))})", path=self.source,
                                     field="structure_id_path")
        return out

    # -- readers ---------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> "Ontology":
        """Read Allen's structure CSV, Allen's nested structure-graph JSON or BrainGlobe's structures.json.

        >>> Ontology.read("allen_structure_tree.csv")                   # doctest: +SKIP
        <Ontology 1327 structures from allen_structure_tree.csv>
        """
        p = Path(path)
        if not p.exists():
            raise InputError("ontology file not found", path=p)
        if p.suffix.lower() == ".csv":
            return cls.from_csv(p)
        if p.suffix.lower() == ".json":
            return cls.from_json(p)
        raise InputError("unknown ontology format: expected an Allen structure CSV or a .json structure graph "
                         "(Allen nested or BrainGlobe flat)", path=p)

    @classmethod
    def from_csv(cls, path: str | Path) -> "Ontology":
        """Allen's structure CSV (``id, acronym, name, parent_structure_id, structure_id_path,
        color_hex_triplet``; ``parent``/``colour`` spellings accepted too)."""
        try:
            df = pd.read_csv(path, keep_default_na=True)
        except Exception as exc:  # pandas raises many kinds
            raise InputError(f"cannot read structure CSV: {exc}", path=path) from None
        ren = {"parent_structure_id": "parent", "parent_id": "parent", "color_hex_triplet": "colour",
               "color": "colour", "hex": "colour",
               # BrainGlobe 3 terminology.csv
               "identifier": "id", "parent_identifier": "parent", "abbreviation": "acronym",
               "root_identifier_path": "structure_id_path"}
        df = df.rename(columns={k: v for k, v in ren.items() if k in df.columns and v not in df.columns})
        if "annotation_value" in df.columns and "id" in df.columns:
            # BrainGlobe 3 lets a structure's voxel value differ from its identifier; brainglobe-atlasapi 3.0
            # itself looks voxel values up as identifiers, and so does atlasreg: a table where they differ
            # would be read wrong, so it is refused.
            av = pd.to_numeric(df["annotation_value"], errors="coerce")
            differ = df.loc[av.notna() & (av != pd.to_numeric(df["id"], errors="coerce")), "id"].tolist()
            if differ:
                raise InputError(f"annotation_value differs from identifier for structures {differ[:10]}: "
                                 "atlasreg reads annotation voxels as structure ids", path=path,
                                 field="annotation_value")
        return cls(df, source=str(path))

    @classmethod
    def from_json(cls, path: str | Path) -> "Ontology":
        """Allen's nested structure graph (``{"msg": [{..., "children": [...]}]}``) or BrainGlobe's
        flat list of ``{id, acronym, name, structure_id_path, rgb_triplet}``."""
        try:
            data = json.loads(Path(path).read_text())
        except Exception as exc:
            raise InputError(f"cannot read JSON: {exc}", path=path) from None
        if isinstance(data, dict) and "msg" in data:
            data = data["msg"]
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise InputError("expected a list of structure objects (or Allen's {'msg': [...]})", path=path)
        rows = []
        if any("children" in d for d in data):
            stack = [(d, None) for d in reversed(data)]
            while stack:
                node, parent = stack.pop()
                rows.append(_json_row(node, parent, path))
                for ch in reversed(node.get("children") or []):
                    stack.append((ch, node.get("id")))
        else:
            rows = [_json_row(d, None, path) for d in data]
        if not rows:
            raise InputError("the JSON holds no structure objects", path=path)
        df = pd.DataFrame(rows)
        if df["parent"].isna().all() and df["structure_id_path"].notna().any():
            df = df.drop(columns="parent")
        return cls(df, source=str(path))

    # -- basic access ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        src = f" from {Path(self.source).name}" if self.source else ""
        return f"<Ontology {len(self)} structures{src}>"

    def __contains__(self, key) -> bool:
        try:
            self.id_of(key)
            return True
        except InputError:
            return False

    def __iter__(self):
        return (self[int(i)] for i in self.ids)

    def __getitem__(self, key) -> Structure:
        k = self._pos[self.id_of(key)]
        path = self._paths[k]
        return Structure(int(self.ids[k]), self._acronym[k], self._name[k], path[-2] if len(path) > 1 else None,
                         path, self._colour[k])

    def get(self, key, default=None):
        try:
            return self[key]
        except InputError:
            return default

    @property
    def root(self) -> int:
        """Id of the (first) root structure."""
        return int(self.ids[np.argmin(self.depth)])

    def id_of(self, key) -> int:
        """The id of a structure given by id, acronym (exact, then case-insensitive) or full name.

        Unknown keys raise :class:`InputError` listing the closest acronyms and names.
        """
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if int(key) in self._pos:
                return int(key)
            raise InputError(f"structure id {int(key)} is not in this ontology ({len(self)} structures)",
                             path=self.source, field="id")
        if not isinstance(key, str):
            raise InputError(f"a structure is named by id, acronym or name, not {type(key).__name__}")
        s = key.strip()
        if s in self._by_acronym:
            return self._by_acronym[s]
        if s.lstrip("-").isdigit() and int(s) in self._pos:
            return int(s)
        for table in (self._by_acronym_lower, self._by_name_lower):
            hits = table.get(s.lower())
            if hits and len(hits) == 1:
                return hits[0]
            if hits:
                raise InputError(f"{key!r} matches several structures {hits}; use the exact acronym or id",
                                 path=self.source, field="acronym")
        cands = list(self._by_acronym) + list(self._name)
        close = difflib.get_close_matches(s, cands, n=5, cutoff=0.6)
        if not close:
            lower = {c.lower(): c for c in cands}
            close = [lower[c] for c in difflib.get_close_matches(s.lower(), list(lower), n=5, cutoff=0.5)]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"unknown structure {key!r}{hint}", path=self.source, field="acronym")

    def ids_of(self, keys: Iterable) -> np.ndarray:
        """Ids of several structures (ids, acronyms or names)."""
        if isinstance(keys, (str, int, np.integer)):
            keys = [keys]
        return np.array([self.id_of(k) for k in keys], dtype=np.int64)

    def _positions(self, ids, field: str = "ids") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat ids, positions in the table, mask of real structures); unknown ids raise."""
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise InputError(f"{field} must be integer structure ids", field=field)
        flat = arr.astype(np.int64, copy=False).ravel()
        real = (flat != NO_STRUCTURE) & (flat != OUTSIDE)
        pos = np.searchsorted(self.ids, flat)
        pos = np.minimum(pos, len(self.ids) - 1)
        bad = real & (self.ids[pos] != flat)
        if bad.any():
            unknown = np.unique(flat[bad])
            raise InputError(f"{len(unknown)} id(s) are not in the ontology: {unknown[:10].tolist()}"
                             f"{' ...' if len(unknown) > 10 else ''}", path=self.source, field=field)
        return flat, pos, real

    def check_ids(self, ids, path=None) -> None:
        """Raise :class:`InputError` naming every id of ``ids`` that the ontology lacks (0 and -1 allowed)."""
        u = np.unique(np.asarray(ids, dtype=np.int64))
        u = u[(u != NO_STRUCTURE) & (u != OUTSIDE)]
        missing = u[~np.isin(u, self.ids)]
        if len(missing):
            raise InputError(
                f"the annotation holds {len(missing)} label id(s) missing from the ontology "
                f"{self.source or ''}: {missing[:20].tolist()}{' ...' if len(missing) > 20 else ''}. "
                "Use the ontology that belongs to this annotation (same atlas version)",
                path=path, field="annotation")

    # -- hierarchy -------------------------------------------------------------------------
    def ancestors(self, key, include_self: bool = False) -> list[int]:
        """Ids from the root down to the parent of ``key`` (and ``key`` itself if ``include_self``)."""
        path = self._paths[self._pos[self.id_of(key)]]
        return list(path if include_self else path[:-1])

    def parent_of(self, key) -> int | None:
        path = self._paths[self._pos[self.id_of(key)]]
        return path[-2] if len(path) > 1 else None

    def children(self, key) -> list[int]:
        i = self.id_of(key)
        return self.ids[self.parent == i].tolist()

    def descendants(self, key, include_self: bool = False) -> list[int]:
        """All ids below ``key`` in the tree (any depth), sorted."""
        k = self._pos[self.id_of(key)]
        d = int(self.depth[k])
        mask = (self.depth > d) & (self._path_table[:, d] == self.ids[k])
        if include_self:
            mask[k] = True
        return self.ids[mask].tolist()

    def is_descendant(self, ids, of) -> np.ndarray:
        """Boolean array: is each id ``of`` or below it (0 and -1 are below nothing)."""
        anc = self.id_of(of)
        d = int(self.depth[self._pos[anc]])
        flat, pos, real = self._positions(ids)
        out = real & (self.depth[pos] >= d) & (self._path_table[pos, d] == anc)
        return out.reshape(np.shape(ids))

    def at_level(self, ids, level: int) -> np.ndarray:
        """Map each id to its ancestor at depth ``level`` (root = 0); shallower ids stay as they are.

        0 and -1 pass through.

        >>> onto.at_level([385, 593], 5)                                # doctest: +SKIP
        array([315, 315])
        """
        if not isinstance(level, (int, np.integer)) or level < 0:
            raise InputError(f"level must be a depth >= 0 in the structure tree, got {level!r}", field="level")
        level = min(int(level), self._path_table.shape[1] - 1)
        flat, pos, real = self._positions(ids)
        out = np.where(real, self._path_table[pos, level], flat)
        return out.reshape(np.shape(ids))

    def major_divisions(self) -> list[int]:
        """Ids of the atlas's major divisions (about a dozen regions), for coarse overviews.

        For an Allen-style ontology these are Allen's major divisions (Isocortex, OLF, HPF, CTXsp, STR, PAL,
        TH, HY, MB, P, MY, CB) with the fiber tracts and ventricles (``fiber tracts``, ``VS``) where the
        ontology has them; for any other ontology, the structures at the shallowest depth that has at least
        ten (or the deepest level, if none has).

        >>> onto.acronyms(onto.major_divisions())                       # doctest: +SKIP
        array(['Isocortex', 'OLF', 'HPF', 'CTXsp', 'STR', 'PAL', 'TH', 'HY', 'MB', 'P', 'MY', 'CB',
               'fiber tracts', 'VS'], dtype=object)
        """
        allen = ["Isocortex", "OLF", "HPF", "CTXsp", "STR", "PAL", "TH", "HY", "MB", "P", "MY", "CB"]
        try:
            got = [int(i) for i in self.ids_of(allen)]
        except InputError:
            got = []
        if got:
            for a in ("fiber tracts", "VS"):
                try:
                    got.append(int(self.id_of(a)))
                except InputError:
                    pass
            return got
        depth = np.asarray(self.depth)
        for d in range(int(depth.max()) + 1):
            if (depth == d).sum() >= 10:
                return [int(i) for i in self.ids[depth == d]]
        return [int(i) for i in self.ids[depth == depth.max()]]

    def rollup(self, ids, parents: Sequence, other: int = NO_STRUCTURE) -> np.ndarray:
        """Map each id to the deepest of ``parents`` that is it or one of its ancestors.

        ``parents`` are ids, acronyms or names. Ids under none of them become ``other``
        (default 0); 0 and -1 pass through.

        >>> onto.rollup(onto.ids_of(["VISp1", "MOp5", "CA1"]), ["Isocortex", "HPF"])   # doctest: +SKIP
        array([315, 315, 1089])
        """
        targets = self.ids_of(parents)
        if len(targets) == 0:
            raise InputError("rollup needs at least one parent structure", field="parents")
        flat, pos, real = self._positions(ids)
        # For each structure in the table: its deepest ancestor-or-self among the targets.
        tpos = np.array([self._pos[int(t)] for t in targets])
        mapping = np.full(len(self.ids), other, dtype=np.int64)
        for tp in tpos[np.argsort(self.depth[tpos])]:  # shallow first, deeper targets overwrite
            d = int(self.depth[tp])
            under = (self.depth >= d) & (self._path_table[:, d] == self.ids[tp])
            mapping[under] = self.ids[tp]
        out = np.where(real, mapping[pos], flat)
        return out.reshape(np.shape(ids))

    # -- vectorised labels ---------------------------------------------------------------
    def acronyms(self, ids) -> np.ndarray:
        """Acronym per id ('' for 0 and -1)."""
        flat, pos, real = self._positions(ids)
        return np.where(real, self._acronym[pos], "").reshape(np.shape(ids))

    def names(self, ids) -> np.ndarray:
        """Name per id (0 and -1 get a plain-words description)."""
        flat, pos, real = self._positions(ids)
        special = np.array([_SPECIAL_NAMES.get(int(v), "") for v in flat], dtype=object) if (~real).any() \
            else np.empty(len(flat), dtype=object)
        return np.where(real, self._name[pos], special).reshape(np.shape(ids))

    def depths(self, ids) -> np.ndarray:
        """Depth per id (-1 for 0 and -1)."""
        flat, pos, real = self._positions(ids)
        return np.where(real, self.depth[pos], -1).reshape(np.shape(ids))

    def to_frame(self) -> pd.DataFrame:
        """The table: id, acronym, name, parent (0 for a root), depth, structure_id_path, colour."""
        return pd.DataFrame({
            "id": self.ids, "acronym": self._acronym, "name": self._name, "parent": self.parent,
            "depth": self.depth, "structure_id_path": ["/" + "/".join(map(str, p)) + "/" for p in self._paths],
            "colour": self._colour,
        })


def _parse_path(p, source) -> tuple | None:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return None
    if isinstance(p, (list, tuple, np.ndarray)):
        vals = [int(v) for v in p]
    else:
        try:
            # Allen: "/997/8/567/"; BrainGlobe 3 terminology: "[997, 8, 567]"
            text = str(p).strip()
            sep = "," if text.startswith("[") else "/"
            vals = [int(v) for v in text.strip("[]").strip("/").split(sep) if v.strip() != ""]
        except ValueError:
            raise InputError(f"cannot read structure_id_path {p!r}", path=source, field="structure_id_path") from None
    return tuple(vals) if vals else None


def _json_row(node: dict, parent, path) -> dict:
    if "id" not in node or "acronym" not in node:
        raise InputError(f"structure object without id/acronym: {str(node)[:120]}", path=path)
    colour = node.get("color_hex_triplet") or node.get("colour")
    if colour is None and node.get("rgb_triplet") is not None:
        r, g, b = node["rgb_triplet"]
        colour = f"{int(r):02X}{int(g):02X}{int(b):02X}"
    par = node.get("parent_structure_id", parent)
    sid = node["id"]
    if isinstance(sid, bool) or not isinstance(sid, (int, float)) or not np.isfinite(sid) or sid != int(sid):
        raise InputError(f"structure id {sid!r} is not an integer (acronym {node.get('acronym')!r})", path=path,
                         field="id")
    return {"id": int(sid), "acronym": node["acronym"], "name": node.get("name", node["acronym"]),
            "parent": np.nan if par is None else par, "structure_id_path": node.get("structure_id_path"),
            "colour": colour or "FFFFFF"}


def _hex_colour(c) -> str:
    if c is None or (isinstance(c, float) and np.isnan(c)):
        return "FFFFFF"
    if isinstance(c, (list, tuple, np.ndarray)) and len(c) == 3:
        return "".join(f"{int(v):02X}" for v in c)
    s = str(c).strip().lstrip("#").upper()
    if len(s) == 6 and all(ch in "0123456789ABCDEF" for ch in s):
        return s
    return "FFFFFF"
