"""Quality control: numbers and pictures that let a person trust (or distrust) a registration.

- :mod:`atlasreg.qc.metrics` — target registration error, Dice per label, Jacobian determinant and
  folding fraction of a transform on a grid, similarity (normalised cross-correlation, mutual information); anatomy without landmarks
  (distance from a plane, label interfaces, surface distances, dark-structure thresholds, region-volume agreement).
- :mod:`atlasreg.qc.figures` — matplotlib (Agg) figures: overlay and checkerboard slices in three
  planes, atlas boundaries drawn on a sample, Jacobian map with folding marked, landmark residuals,
  matched point clouds, per-region counts. Every function returns a ``matplotlib.figure.Figure``; :func:`figure_png` turns
  one into PNG bytes.
- :mod:`atlasreg.qc.report` — :func:`write_report`: one self-contained HTML file (figures embedded as
  PNG data URIs, numbers in a table) for a saved result folder or a dict of figures and numbers.
- :mod:`atlasreg.qc.neuroglancer` — a neuroglancer state (JSON) opening precomputed layers (EM block,
  light-sheet, atlas regions with names, point annotations) in one view.

Examples
--------
>>> from atlasreg import qc
>>> fig = qc.overlay_slices(fixed_volume, warped_moving)          # doctest: +SKIP
>>> qc.write_report({"title": "my run", "metrics": {"TRE median (um)": 12.3},
...                  "figures": {"overlay": fig}}, "report.html")  # doctest: +SKIP
"""
from __future__ import annotations

from importlib import import_module

_LAZY = {
    # metrics
    "point_errors": "metrics", "tre": "metrics", "dice": "metrics", "jacobian_determinant": "metrics",
    "folding_fraction": "metrics", "ncc": "metrics", "mutual_information": "metrics",
    "plane_distances": "metrics", "label_interface": "metrics", "surface_distances": "metrics",
    "dark_mask": "metrics", "volume_agreement": "metrics",
    # figures
    "figure_png": "figures", "overlay_slices": "figures", "overlay_key": "figures", "checkerboard_slices": "figures",
    "boundary_slices": "figures", "boundary_levels": "figures", "roll_labels": "figures",
    "jacobian_slices": "figures", "landmark_residuals": "figures",
    "region_counts_bar": "figures", "matched_points": "figures", "registration_figures": "figures", "tracings_projection": "figures",
    # report
    "write_report": "report", "render_report": "report",
    # neuroglancer
    "neuroglancer_state": "neuroglancer", "write_neuroglancer_state": "neuroglancer",
    "neuroglancer_url": "neuroglancer",
}

__all__ = list(_LAZY)


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'atlasreg.qc' has no attribute {name!r}")
    return getattr(import_module(f"atlasreg.qc.{mod}"), name)
