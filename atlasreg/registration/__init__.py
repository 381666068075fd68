"""Registration: intensity registration presets and backends, landmark fitting. Each returns atlasreg transforms.

- :func:`register` (``atlasreg.register``): moving volume -> fixed volume, presets as data
  (:mod:`.presets`), ANTs (:mod:`.ants_backend`) or SimpleITK (:mod:`.sitk_backend`) backends,
  orientation search (:mod:`.orientation`), preprocessing (:mod:`.preprocess`).
- :class:`RegistrationResult`: ``.transform`` (moving -> fixed), ``.warp``, ``.warp_back``, ``.save``/``.load``.
- :mod:`.landmarks`: ``fit_landmarks`` (point-pair fitting).
"""
from .pipeline import register  # noqa: F401
from .presets import PRESETS, get_preset  # noqa: F401
from .result import RegistrationResult  # noqa: F401
