"""Placeholder: mounts nothing yet."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add this part's routes to the app."""
