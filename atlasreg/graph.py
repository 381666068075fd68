"""SpaceGraph: named spaces as nodes, transforms as edges; paths are composed and applied in one pass."""
from __future__ import annotations

from collections import deque

import numpy as np

from .errors import InputError, NoPathError, SpaceMismatchError
from .spaces import Space
from .transforms.base import Affine, Sequence, Transform, as_points
from .volume import Grid, Volume, as_grid, resample


class SpaceGraph:
    """A registry of spaces and the transforms between them.

    Examples
    --------
    >>> g = SpaceGraph()
    >>> g.add(Affine.from_scale(1e-3, src=Space("em", "nm"), dst=Space("lm", "um")))
    >>> g.add(Affine.from_translation([100, 0, 0], src="lm", dst="ccf"))
    >>> g.map_points([[1e6, 0, 0]], src="em", dst="ccf")
    array([[1100.,    0.,    0.]])
    >>> g.path("ccf", "em")
    ['ccf', 'lm', 'em']
    """

    def __init__(self, transforms=()):
        self.spaces: dict[str, Space] = {}
        self._edges: dict[str, dict[str, Transform]] = {}
        for t in transforms:
            self.add(t)

    # -- building -----------------------------------------------------------------
    def add_space(self, space: Space) -> None:
        known = self.spaces.get(space.name)
        if known is None:
            self.spaces[space.name] = space
            self._edges.setdefault(space.name, {})
            return
        if known.unit != space.unit:
            raise SpaceMismatchError(
                f"space {space.name!r} is already in the graph in {known.unit}; a transform declares it in "
                f"{space.unit}. Declare each space with one unit (Space({space.name!r}, {known.unit!r}))")
        if known.orientation and space.orientation and known.orientation != space.orientation:
            raise SpaceMismatchError(
                f"space {space.name!r} has orientation {known.orientation!r} in the graph but "
                f"{space.orientation!r} in a new transform")
        if space.orientation and not known.orientation:
            self.spaces[space.name] = space

    def add(self, transform: Transform, inverse: bool = True) -> None:
        """Add ``transform`` as an edge ``src -> dst`` (and ``dst -> src`` through its inverse)."""
        if not isinstance(transform, Transform):
            raise InputError(f"SpaceGraph.add takes a Transform, got {type(transform).__name__}")
        if transform.src.name == transform.dst.name:
            raise SpaceMismatchError(f"{transform!r} maps a space onto itself; give its ends different names")
        self.add_space(transform.src)
        self.add_space(transform.dst)
        self._edges[transform.src.name][transform.dst.name] = transform
        if inverse:
            # The inverse edge is created lazily: numerical inverses cost nothing until used.
            self._edges[transform.dst.name].setdefault(transform.src.name, _LazyInverse(transform))

    def __contains__(self, name: str) -> bool:
        return name in self.spaces

    def edges(self) -> list[tuple[str, str]]:
        return [(a, b) for a, nbrs in self._edges.items() for b in nbrs]

    # -- paths ------------------------------------------------------------------------
    def path(self, src: str | Space, dst: str | Space) -> list[str]:
        """Shortest chain of space names from ``src`` to ``dst``; exact edges preferred on ties."""
        s, d = _name(src), _name(dst)
        for n in (s, d):
            if n not in self.spaces:
                raise NoPathError(f"space {n!r} is not in the graph (known: {sorted(self.spaces)})")
        if s == d:
            return [s]
        prev = {s: None}
        q = deque([s])
        while q:
            cur = q.popleft()
            # Direct edges before lazily inverted ones, so an exact route wins a tie.
            nbrs = sorted(self._edges[cur].items(), key=lambda kv: isinstance(kv[1], _LazyInverse))
            for nxt, _ in nbrs:
                if nxt not in prev:
                    prev[nxt] = cur
                    if nxt == d:
                        out = [d]
                        while prev[out[-1]] is not None:
                            out.append(prev[out[-1]])
                        return out[::-1]
                    q.append(nxt)
        reach_s = sorted(prev)
        raise NoPathError(
            f"no chain of transforms links {s!r} to {d!r}: from {s!r} one can reach {reach_s}. "
            f"Add a transform between one of those and {d!r} (or one of the spaces connected to it)")

    def transform(self, src: str | Space, dst: str | Space) -> Transform:
        """The composed transform along :meth:`path` (a Sequence, or the single edge)."""
        names = self.path(src, dst)
        if len(names) == 1:
            sp = self.spaces[names[0]]
            return Affine(np.eye(4), sp, Space(sp.name, sp.unit, sp.orientation))
        steps = [self._edge(a, b) for a, b in zip(names[:-1], names[1:])]
        return steps[0] if len(steps) == 1 else Sequence(steps)

    def _edge(self, a: str, b: str) -> Transform:
        t = self._edges[a][b]
        if isinstance(t, _LazyInverse):
            t = t.resolve()
            self._edges[a][b] = t
        return t

    # -- moving things ------------------------------------------------------------------
    def map_points(self, points, src: str | Space, dst: str | Space) -> np.ndarray:
        """Map ``(N, 3)`` points from ``src`` to ``dst`` along the graph, in each space's unit."""
        pts = as_points(points)
        if _name(src) == _name(dst):
            self.path(src, dst)
            return pts.copy()
        return self.transform(src, dst).map_points(pts)

    def warp(self, volume: Volume, dst: str | Space, reference: Volume | Grid,
             interpolation: str = "linear", fill: float = 0.0, dtype=None) -> Volume:
        """Resample ``volume`` into ``reference``'s grid (in space ``dst``) with ONE resampling.

        The whole chain ``dst -> volume.space`` is composed per output voxel.
        """
        grid = as_grid(reference)
        if grid.space.name != _name(dst):
            raise SpaceMismatchError(f"reference grid is in {grid.space.name!r}, not {_name(dst)!r}")
        pull = None if volume.space.name == grid.space.name else self.transform(grid.space.name,
                                                                                volume.space.name)
        data = resample(volume, pull, grid, interpolation, fill, dtype)
        return Volume(data, grid.spacing, grid.origin, grid.direction, self.spaces.get(grid.space.name, grid.space))


class _LazyInverse:
    def __init__(self, forward: Transform):
        self.forward = forward

    def resolve(self) -> Transform:
        return self.forward.inverse()


def _name(s) -> str:
    return s.name if isinstance(s, Space) else str(s)
