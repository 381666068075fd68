"""Atlases and region queries: which structure, at every level of the hierarchy, each point is in.

``Atlas.load`` reads BrainGlobe folders, Allen-style files or a manifest name;
``Ontology`` is the structure tree; the queries live in :mod:`atlasreg.atlas.queries`.
"""
from .atlas import Atlas
from ..labels import LabelArray
from .loaders import LEFT, RIGHT
from .ontology import NO_STRUCTURE, OUTSIDE, Ontology, Structure
from .queries import AtlasQueryWarning

__all__ = ["Atlas", "Ontology", "Structure", "LabelArray", "AtlasQueryWarning", "NO_STRUCTURE", "OUTSIDE",
           "LEFT", "RIGHT"]
