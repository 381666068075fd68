"""The ``atlasreg`` command line: one verb per user task. It only parses arguments and calls the library.

Each verb lives in its own module here and registers itself on :data:`app`.
"""
from __future__ import annotations

from ._app import app, main  # noqa: F401

# Verb modules (each adds its commands to `app` on import).
from . import info  # noqa: F401,E402
from . import demo  # noqa: F401,E402
from . import qc  # noqa: F401,E402
from . import combine  # noqa: F401,E402
from . import query  # noqa: F401,E402
from . import atlas  # noqa: F401,E402
from . import data  # noqa: F401,E402
from . import register  # noqa: F401,E402
from . import scale  # noqa: F401,E402
from . import landmarks  # noqa: F401,E402
from . import em  # noqa: F401,E402
from . import ngff  # noqa: F401,E402
