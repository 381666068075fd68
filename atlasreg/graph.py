"""SpaceGraph: named spaces as nodes, transforms as edges; paths are composed and applied in one pass."""
from __future__ import annotations

import heapq

import numpy as np

from .errors import InputError, NoPathError, SpaceMismatchError
from .spaces import Space, resolve_space
from .transforms.base import Affine, Sequence, Transform, as_points, with_ends
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
        self._derived: set[tuple[str, str]] = set()  # edges that are the inverse of an added one
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
        """Add ``transform`` as an edge ``src -> dst`` (and ``dst -> src`` through its inverse).

        Adding an edge that exists replaces it, and its reverse with it (unless
        the reverse was added as a transform of its own).
        """
        if not isinstance(transform, Transform):
            raise InputError(f"SpaceGraph.add takes a Transform, got {type(transform).__name__}")
        if transform.src.name == transform.dst.name:
            raise SpaceMismatchError(f"{transform!r} maps a space onto itself; give its ends different names")
        self.add_space(transform.src)
        self.add_space(transform.dst)
        a, b = transform.src.name, transform.dst.name
        self._edges[a][b] = transform
        self._derived.discard((a, b))
        if (b, a) in self._derived:
            # the old reverse came from the edge just replaced: it goes with it
            del self._edges[b][a]
            self._derived.discard((b, a))
        if inverse and a not in self._edges[b]:
            # The inverse edge is created lazily: numerical inverses cost nothing until used.
            self._edges[b][a] = _LazyInverse(transform)
            self._derived.add((b, a))

    def __contains__(self, name: str) -> bool:
        return name in self.spaces

    def edges(self) -> list[tuple[str, str]]:
        return [(a, b) for a, nbrs in self._edges.items() for b in nbrs]

    # -- paths ------------------------------------------------------------------------
    def path(self, src: str | Space, dst: str | Space) -> list[str]:
        """The chain of space names from ``src`` to ``dst`` with the fewest numerical inverses, then hops.

        Exact routes win: a longer chain of affines, fields and attached inverses
        is preferred to a shorter one through an inverse solved numerically.
        """
        s, d = _name(src), _name(dst)
        for n in (s, d):
            if n not in self.spaces:
                raise NoPathError(f"space {n!r} is not in the graph (known: {sorted(self.spaces)})")
        if s == d:
            return [s]
        best = {s: (0, 0)}
        prev: dict[str, str | None] = {s: None}
        heap = [(0, 0, 0, s)]
        order = 0
        done = set()
        while heap:
            num, hops, _, cur = heapq.heappop(heap)
            if cur in done:
                continue
            done.add(cur)
            if cur == d:
                out = [d]
                while prev[out[-1]] is not None:
                    out.append(prev[out[-1]])
                return out[::-1]
            for nxt, edge in self._edges[cur].items():
                cost = (num + self._numerical(cur, nxt, edge), hops + 1)
                if nxt not in best or cost < best[nxt]:
                    best[nxt] = cost
                    prev[nxt] = cur
                    order += 1
                    heapq.heappush(heap, (cost[0], cost[1], order, nxt))
        reach_s = sorted(prev)
        raise NoPathError(
            f"no chain of transforms links {s!r} to {d!r}: from {s!r} one can reach {reach_s}. "
            f"Add a transform between one of those and {d!r} (or one of the spaces connected to it)")

    def _numerical(self, a: str, b: str, edge) -> int:
        """1 where the edge ``a -> b`` is (or will be) computed by a numerical solver."""
        if isinstance(edge, _LazyInverse):
            return int(edge.forward.numerical_inverse)
        return int(edge.is_numerical)

    def transform(self, src: str | Space, dst: str | Space) -> Transform:
        """The composed transform along :meth:`path` (a Sequence, or the single edge).

        ``src`` and ``dst`` resolve against the graph (:func:`atlasreg.spaces.resolve_space`): a bare
        name means the space as the graph records it; a :class:`Space` in another unit gets its points
        converted at that end.
        """
        s_sp, d_sp = self.resolve(src), self.resolve(dst)
        names = self.path(s_sp, d_sp)
        if len(names) == 1:
            sp = self.spaces[names[0]]
            T: Transform = Affine(np.eye(4), sp, Space(sp.name, sp.unit, sp.orientation))
        else:
            steps = [self._edge(a, b) for a, b in zip(names[:-1], names[1:])]
            T = steps[0] if len(steps) == 1 else Sequence(steps)
        return with_ends(T, s_sp, d_sp)

    def resolve(self, space: str | Space) -> Space:
        """``space`` as the graph knows it: a bare name takes the graph's unit (never a silent µm)."""
        name = _name(space)
        if name not in self.spaces:
            raise NoPathError(f"space {name!r} is not in the graph (known: {sorted(self.spaces)})")
        return resolve_space(space, self.spaces[name])

    def _edge(self, a: str, b: str) -> Transform:
        t = self._edges[a][b]
        if isinstance(t, _LazyInverse):
            t = t.resolve()
            self._edges[a][b] = t
        return t

    # -- moving things ------------------------------------------------------------------
    def map_points(self, points, src: str | Space, dst: str | Space) -> np.ndarray:
        """Map ``(N, 3)`` points from ``src`` to ``dst`` along the graph.

        Points are in ``src``'s unit and come back in ``dst``'s: the graph's units for bare names, the
        given units for :class:`Space` arguments (converted exactly).
        """
        pts = as_points(points)
        return self.transform(src, dst).map_points(pts)

    def warp(self, volume: Volume, dst: str | Space, reference: Volume | Grid,
             interpolation: str = "linear", fill: float = 0.0, dtype=None) -> Volume:
        """Resample ``volume`` into ``reference``'s grid (in space ``dst``) with ONE resampling.

        The whole chain ``dst -> volume.space`` is composed per output voxel;
        the volume's and the grid's units are honoured (converted where they
        differ from the graph's).
        """
        grid = as_grid(reference)
        if grid.space.name != _name(dst):
            raise SpaceMismatchError(f"reference grid is in {grid.space.name!r}, not {_name(dst)!r}")
        data = resample(volume, self.pull(grid.space, volume.space), grid, interpolation, fill, dtype)
        return Volume(data, grid.spacing, grid.origin, grid.direction, grid.space)

    def pull(self, target: Space, moving: Space) -> Transform | None:
        """The resampling map ``target -> moving`` along the graph (None where it is the identity)."""
        if target.name == moving.name and target.unit == moving.unit:
            self.path(target, moving)
            return None
        return self.transform(target, moving)


class _LazyInverse:
    def __init__(self, forward: Transform):
        self.forward = forward

    def resolve(self) -> Transform:
        return self.forward.inverse()


def _name(s) -> str:
    return s.name if isinstance(s, Space) else str(s)
