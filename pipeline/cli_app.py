"""CLI commands that work with a user's app module (filled in as the runtime lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_app_commands"]


def add_app_commands(sub: Any) -> None:
    """Register the app-level subcommands on ``sub``."""
    _ = argparse
