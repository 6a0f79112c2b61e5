"""Functions for the tool sandbox's tests, run in its child process (`chat.tools.sandbox`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def spin(arguments: dict[str, Any]) -> str:
    """Say it started (its pid, in the file named by `pid_file`), then burn CPU forever."""
    Path(arguments["pid_file"]).write_text(str(os.getpid()))
    while True:
        pass
