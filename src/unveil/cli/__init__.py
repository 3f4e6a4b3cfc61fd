"""The ``unveil`` command. It needs the ``cli`` extra; without it, it says so and exits."""

from __future__ import annotations

import sys

try:
    import click  # noqa: F401
    import pathspec  # noqa: F401
    import rich  # noqa: F401
except ImportError:
    sys.exit("the unveil command needs its extra: pip install 'unveil[cli]'")
