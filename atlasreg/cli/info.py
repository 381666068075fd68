"""``atlasreg version``: what is installed."""
from __future__ import annotations

import typer

from ._app import app


@app.command()
def version() -> None:
    """Print atlasreg's version and those of the libraries it drives.

    Example: atlasreg version
    """
    import importlib.metadata as md

    typer.echo(f"atlasreg {md.version('atlasreg')}")
    for pkg in ("numpy", "SimpleITK", "antspyx", "zarr", "dask"):
        try:
            typer.echo(f"  {pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            typer.echo(f"  {pkg} not installed")
