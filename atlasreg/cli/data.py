"""``atlasreg data list|fetch|verify``: public datasets from their manifests, with checksums."""
from __future__ import annotations

from typing import List, Optional

import typer

from ._app import EXIT_INPUT, app, run_cli

data_app = typer.Typer(help="Public datasets: list, fetch (checksummed), verify a local mirror.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
@run_cli
def list_(kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind: atlas, em, lightsheet, "
                                                                     "landmarks, neurons, template.")) -> None:
    """List the datasets with a manifest: name, kind, licence, title.

    Example: atlasreg data list --kind atlas
    """
    from .. import data

    for name in data.list_datasets(kind):
        m = data.manifest(name)
        typer.echo(f"{name:22s} {m['kind']:10s} {m['title']}  [{m['licence'].split(';')[0]}]")


@data_app.command("fetch")
@run_cli
def fetch(
    name: str = typer.Argument(..., help="Dataset name (atlasreg data list)."),
    file: Optional[List[str]] = typer.Option(None, "--file", help="Only this file id (repeatable)."),
    download: Optional[bool] = typer.Option(None, "--download/--no-download",
                                            help="Download public originals missing locally (default: only when "
                                                 "ATLASREG_DATA is not set)."),
) -> None:
    """Make a dataset's files available locally and print their paths (checksums verified).

    With ATLASREG_DATA set to a local mirror the files come from there; otherwise the public
    originals are downloaded (pooch) into the cache (ATLASREG_CACHE).

    Example: atlasreg data fetch allen_mouse_25um
    """
    from .. import data

    for fid, path in data.fetch(name, files=file or None, download=download).items():
        typer.echo(f"{fid}\t{path}")


@data_app.command("verify")
@run_cli
def verify(names: Optional[List[str]] = typer.Argument(None, help="Datasets to check (default: all).")) -> None:
    """Check every mirrored file (ATLASREG_DATA) against the sha256 its manifest records.

    Exits with code 2 if a file is missing or differs.

    Example: ATLASREG_DATA=../shared/data atlasreg data verify
    """
    from .. import data

    bad = 0
    for r in data.verify(names or None):
        if r["status"] == "not mirrored":
            continue
        typer.echo(f"{r['status']:9s} {r['dataset']}/{r['file']}  {r['path']}")
        bad += r["status"] != "ok"
    if bad:
        typer.echo(f"error: {bad} file(s) missing or changed", err=True)
        raise typer.Exit(EXIT_INPUT)
