"""NGFF transformations as atlasreg's 3-D transforms: :func:`read_ngff` and :func:`scene_graph`.

A coordinate system becomes a :class:`~atlasreg.spaces.Space` named by its node
name (``tile_0/physical`` for a system of the image group ``tile_0``), with the
unit its space axes record: nm, µm and mm as they are, any other unit of the
specification converted exactly at the boundary (a system in ``angstrom`` is a
Space in nm). Orientation comes from RFC-4 ``orientation`` on the axes. A system
with other than three space axes, or one with no unit where none is given, has no
atlasreg Space: reading it says so (the N-D :mod:`.scene` still maps its points).
"""
from __future__ import annotations

from ...errors import InputError, SpaceMismatchError
from ...spaces import Space, as_space, letter_of_rfc4, validate_orientation
from ..base import Affine, LazyTransform, Sequence, Transform
from .nd import ByDimension, Bijection, Field, Inverted, Matrix, NDTransform, SequenceND, Spline
from .scene import Edge, Scene, read_scene
from .units import to_atlasreg_unit


def space_from_system(cs: dict, name: str | None = None, given: Space | None = None, path=None
                      ) -> tuple[Space, float]:
    """The atlasreg Space of an NGFF coordinate system, and the factor from its numbers to the file's.

    ``given`` supplies the unit where the file records none (and must agree where it does).

    Examples
    --------
    >>> cs = {"name": "em", "axes": [{"name": n, "type": "space", "unit": "angstrom"} for n in "zyx"]}
    >>> space_from_system(cs)
    (Space(name='em', unit='nm', orientation=None), 10.0)
    """
    name = name or cs["name"]
    axes = cs.get("axes") or []
    kinds = [a.get("type", "space") if isinstance(a, dict) else None for a in axes]
    if kinds != ["space"] * 3:
        raise InputError(f"coordinate system {name!r} has axes of types {kinds}; an atlasreg space has three "
                         "'space' axes (the N-D NGFF reader, read_scene, maps these points)", path=path,
                         field="axes")
    units = {a.get("unit") for a in axes}
    if len(units) != 1:
        raise InputError(f"coordinate system {name!r}: its three space axes need one unit, found "
                         f"{sorted(map(str, units))}", path=path, field="unit")
    ngff_u = units.pop()
    if ngff_u is None:
        if given is None:
            raise InputError(f"coordinate system {name!r} records no unit; pass the space with its unit "
                             f"(Space({name!r}, 'um'))", path=path, field="unit")
        unit, factor = given.unit, 1.0
    else:
        try:
            unit, factor = to_atlasreg_unit(ngff_u)
        except InputError as exc:
            raise InputError(f"coordinate system {name!r}: {exc}", path=path, field="unit") from None
    orient = None
    vals = [a.get("orientation", {}).get("value") if isinstance(a.get("orientation"), dict) else None for a in axes]
    letters = [letter_of_rfc4(v) if isinstance(v, str) else None for v in vals]
    if all(letters):
        try:
            orient = validate_orientation("".join(letters))
        except InputError:
            orient = None
    sp = Space(name, unit, orient)
    if given is not None:
        if given.unit != sp.unit:
            raise SpaceMismatchError(f"{path}: space {name!r} is in {sp.unit} in the file but {given.unit} was given")
        if given.orientation and sp.orientation and given.orientation != sp.orientation:
            raise SpaceMismatchError(f"{path}: space {name!r} has orientation {sp.orientation!r} in the file but "
                                     f"{given.orientation!r} was given")
        sp = Space(name, sp.unit, sp.orientation or given.orientation)
    return sp, factor


class _Converter:
    def __init__(self, scene: Scene, given: dict[str, Space]):
        self.scene, self.given = scene, given
        self.doc = scene.doc_path

    def space(self, key: str) -> tuple[Space, float]:
        cs = self.scene.systems.get(key)
        g = self.given.get(key)
        if cs is None:
            if g is not None:
                return g, 1.0
            raise InputError(f"coordinate system {key!r} is not declared in the file (no unit known); pass it as "
                             "src/dst with its unit", path=self.doc, field="coordinateSystems")
        return space_from_system(cs, key, g, self.doc)

    def edge(self, e: Edge, forward: bool) -> Transform:
        (s, fs), (d, fd) = self.space(e.src), self.space(e.dst)
        inner_s = s if fs == 1.0 else Space(f"{s.name} [file units]", s.unit)
        inner_d = d if fd == 1.0 else Space(f"{d.name} [file units]", d.unit)
        T = self.convert(self.scene.edge_transform(e), inner_s, inner_d)
        steps = ([Affine.from_scale(fs, src=s, dst=inner_s)] if fs != 1.0 else []) + [T] + \
                ([Affine.from_scale(1.0 / fd, src=inner_d, dst=d)] if fd != 1.0 else [])
        T = steps[0] if len(steps) == 1 else Sequence(steps)
        return T if forward else T.inverse()

    def named(self, ref) -> Space | None:
        if ref is None:
            return None
        from .scene import node_key

        key = node_key(ref)
        return self.space(key)[0] if key in self.scene.systems or key in self.given else None

    def convert(self, t: NDTransform, s: Space, d: Space) -> Transform:
        h = t.homogeneous(3)
        if h is not None:
            if h.shape != (4, 4):
                raise InputError(f"a 3-D -> {h.shape[0] - 1}-D {t.kind}: atlasreg transforms are 3-D",
                                 path=self.doc, field=t.kind)
            return Affine(h, s, d)
        if isinstance(t, SequenceND):
            return self.sequence(t, s, d)
        if isinstance(t, Bijection):
            inverse = LazyTransform(lambda: self.convert(t.given_inverse, d, s), d, s,
                                    f"the inverse given in {self.doc}")
            return self.convert(t.forward, s, d).with_inverse(inverse)
        if isinstance(t, Field):
            if t.n != 3:
                raise InputError(f"a {t.n}-D {t.kind} field: atlasreg transforms are 3-D", path=self.doc,
                                 field=t.kind)
            return t.displacement_field(s, d)
        if isinstance(t, Inverted):
            return self.convert(t.forward, d, s).inverse()
        if isinstance(t, Spline):
            return _with_spaces(t.transform, s, d)
        if isinstance(t, ByDimension):
            raise InputError("a byDimension with non-matrix parts (fields on some axes) has no atlasreg 3-D form; "
                             "read_scene maps its points", path=self.doc, field="byDimension")
        raise InputError(f"no atlasreg form for an NGFF {t.kind}", path=self.doc, field=t.kind)

    def sequence(self, t: SequenceND, s: Space, d: Space) -> Transform:
        # Fold runs of matrix steps; what remains alternates with fields, splines and wrappers.
        groups: list[NDTransform] = []
        for it in t.items:
            if it.homogeneous(3) is not None and groups and groups[-1].homogeneous(3) is not None:
                groups[-1] = SequenceND([groups[-1], it])
            else:
                groups.append(it)
        if len(groups) == 1:
            return self.convert(groups[0], s, d)
        steps, cur = [], s
        for i, g in enumerate(groups):
            if i == len(groups) - 1:
                nxt = d
            else:
                nxt = self.named(g.io[1]) if isinstance(g.io, tuple) else None
                if nxt is None:
                    nxt = Space(f"{s.name}->{d.name}#{i + 1}", self._unit_between(groups[i], groups[i + 1], s, d))
            steps.append(self.convert(g, cur, nxt))
            cur = nxt
        try:
            return Sequence(steps)
        except SpaceMismatchError as exc:
            raise SpaceMismatchError(f"{self.doc}: {exc}") from None

    def _unit_between(self, a: NDTransform, b: NDTransform, s: Space, d: Space) -> str:
        if s.unit == d.unit:
            return s.unit
        for t in (b, a):
            f = t.forward if isinstance(t, Inverted) else t
            if isinstance(f, Field) and f.unit is not None:
                return to_atlasreg_unit(f.unit)[0]
        raise InputError(f"a sequence from {s.name!r} ({s.unit}) to {d.name!r} ({d.unit}) passes through a space "
                         "whose unit the file does not record (give the steps input/output systems, or the "
                         "field's axes a unit)", path=self.doc, field="sequence")


def _with_spaces(T: Transform, s: Space, d: Space) -> Transform:
    """The same spline between the file's spaces."""
    from ..bspline import BSplineTransform
    from ..tps import ThinPlateSpline

    if isinstance(T, ThinPlateSpline):
        return ThinPlateSpline.from_solution(T.src_points, T.dst_points, T.weights, T.affine_coeffs,
                                             T.regularization, T.kernel, T.frame, src=s, dst=d)
    if isinstance(T, BSplineTransform):
        return BSplineTransform(T.coefficients, T.spacing, T.origin, T.direction, src=s, dst=d, outside=T.outside)
    raise InputError(f"no atlasreg form for a stored {type(T).__name__}", field="transform")


def _given(src, dst) -> dict[str, Space]:
    out = {}
    for sp in (src, dst):
        if isinstance(sp, Space):
            out[sp.name] = sp
    return out


def read_ngff(path, src: Space | str | None = None, dst: Space | str | None = None,
              outside: str | None = None) -> Transform:
    """An atlasreg transform ``src -> dst`` from an NGFF scene, zarr group or atlasreg ``.json`` file.

    ``src``/``dst`` name coordinate systems (``path/name`` for a system of an
    image group; a bare name that only one group has also works); without them
    the transform the file was written for (atlasreg files) or its only one. A
    Space given supplies a unit the file does not record. ``outside`` overrides
    what displacement fields give off their grid.

    Examples
    --------
    >>> import tempfile, os
    >>> from .write import write_ngff
    >>> T = Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("lm", "um"))
    >>> p = write_ngff(T, os.path.join(tempfile.mkdtemp(), "em_to_lm.json"))
    >>> read_ngff(p).map_points([[1000.0, 0, 0]])
    array([[1., 0., 0.]])
    """
    if outside is not None and outside not in ("nan", "zero"):
        raise InputError("outside must be 'nan' or 'zero'", field="outside")
    scene = read_scene(path, outside)
    names = [None if x is None else (x.name if isinstance(x, Space) else str(x)) for x in (src, dst)]
    if names[0] is None or names[1] is None:
        a, b = scene.default_ends()
        if names[0] is None and names[1] is None:
            names = [a, b]
        elif names[0] is None:
            names[0] = b if scene.resolve(names[1]) == scene.resolve(a) else a
        else:
            names[1] = a if scene.resolve(names[0]) == scene.resolve(b) else b
    keys = [scene.resolve(n) for n in names]
    given = {}
    for k, sp in zip(keys, (src, dst)):
        if isinstance(sp, Space):
            given[k] = Space(k, sp.unit, sp.orientation)
    conv = _Converter(scene, given)
    steps = [conv.edge(e, fwd) for e, fwd in scene.path(*keys)]
    if not steps:
        raise SpaceMismatchError(f"{scene.doc_path}: {keys[0]!r} to itself is no transform")
    try:
        return steps[0] if len(steps) == 1 else Sequence(steps)
    except SpaceMismatchError as exc:
        raise SpaceMismatchError(f"{scene.doc_path}: {exc}") from None


def scene_graph(path, outside: str | None = None, spaces: dict | None = None):
    """A :class:`~atlasreg.graph.SpaceGraph` of an NGFF scene: one node per coordinate system (``path/name``).

    ``spaces`` maps node names to Spaces for systems whose unit the file does not record.

    Examples
    --------
    >>> g = scene_graph("scene.ome.zarr")                             # doctest: +SKIP
    >>> g.map_points(pts, "tile_1/physical", "tile_0/physical")       # doctest: +SKIP
    """
    from ...graph import SpaceGraph

    scene = read_scene(path, outside)
    given = {k: as_space(v) if not isinstance(v, Space) else v for k, v in (spaces or {}).items()}
    conv = _Converter(scene, given)
    g = SpaceGraph()
    for e in scene.edges:
        if not e.dataset:  # array index spaces of image levels are grids, not atlasreg spaces
            g.add(conv.edge(e, True))
    return g
