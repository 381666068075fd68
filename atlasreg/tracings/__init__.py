"""Neurons, synapses and cell tables: read, move through spaces, annotate by region, combine EM + optical.

Examples
--------
>>> import atlasreg as ar                                                      # doctest: +SKIP
>>> n = ar.tracings.read_swc("cell.swc", space="ccf", unit="um", voxel_size=25.0,
...                          orientation="asr")                               # doctest: +SKIP
>>> m = ar.tracings.transform_neuron(n, graph, dst="sample")                  # doctest: +SKIP
>>> ar.tracings.projection_matrix([n], atlas, level=5)                        # doctest: +SKIP
"""
from .analysis import (annotate_neuron, annotate_points, projection_matrix, rollup_matrix, segment_regions,
                       soma_regions, synapse_counts)
from .combine import (EMBlock, block_from_neurons, bounds_of, combine, find_passing, place_block, read_collection,
                      write_collection)
from .mouselight import read_mouselight, write_mouselight
from .neuron import NODE_COLUMNS, Neuron, NeuronList
from .precomputed import (read_precomputed_lines, read_precomputed_points, read_precomputed_skeleton,
                          read_precomputed_skeletons, write_precomputed_lines, write_precomputed_points)
from .swc import read_swc, write_swc
from .tables import PointTable, annotate_table, attach_synapses, read_table, write_table
from .transform import transform_neuron, transform_neurons, transform_table

__all__ = ["Neuron", "NeuronList", "NODE_COLUMNS", "read_swc", "write_swc", "read_mouselight", "write_mouselight",
           "PointTable", "read_table", "write_table", "attach_synapses", "annotate_table", "transform_neuron",
           "transform_neurons", "transform_table", "EMBlock", "block_from_neurons", "bounds_of", "place_block", "combine",
           "find_passing", "write_collection", "read_collection", "annotate_points", "annotate_neuron",
           "soma_regions", "segment_regions", "projection_matrix", "synapse_counts", "rollup_matrix",
           "read_precomputed_skeletons", "read_precomputed_skeleton", "read_precomputed_points",
           "read_precomputed_lines", "write_precomputed_points", "write_precomputed_lines"]
