"""``python -m ipcwire`` is the ``ipcwire`` command."""

from __future__ import annotations

import sys

from ipcwire.cli.main import main

sys.exit(main())
