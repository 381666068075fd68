"""``atlasreg atlas list|info``: which atlases are available and what one holds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import app, run_cli, voxel_size_option

atlas_app = typer.Typer(help="Atlases: list the known ones, describe one.", no_args_is_help=True)
app.add_typer(atlas_app, name="atlas")


def load_atlas(atlas: str, ontology: Optional[Path] = None, voxel_size=None, file_orientation: Optional[str] = None,
               download: bool = False):
    """An Atlas from a manifest name, a BrainGlobe folder, a folder/npz/file of Allen-style data.

    ``voxel_size`` is the value of a ``--voxel-size`` option (a float, three floats or None).
    """
    from ..atlas import Atlas

    return Atlas.load(atlas, ontology=ontology, voxel_size=voxel_size,
                      file_orientation=file_orientation, download=download)


@atlas_app.command("list")
@run_cli
def list_atlases() -> None:
    """List the atlases atlasreg knows by name, and whether their files are here.

    "mirror" means ATLASREG_DATA holds them (checksums are verified on load); "download"
    means `atlasreg data fetch NAME --download` would get the public originals.

    Example: atlasreg atlas list
    """
    from .. import data

    for name in data.list_datasets("atlas"):
        m = data.manifest(name)
        ann = m["files"][m["atlas"]["annotation"]]
        mirror = data.mirror_dir()
        here = "mirror" if mirror is not None and ann.get("path") and (mirror / ann["path"]).exists() else "download"
        sp = m.get("space") or {}
        vs = "x".join(f"{v:g}" for v in m.get("voxel_size", []))
        typer.echo(f"{name:20s} {sp.get('name', '?')} [{sp.get('unit', '?')}, {sp.get('orientation', '?')}] "
                   f"voxel {vs} {sp.get('unit', '')}  ({here})  {m['title']}")


@atlas_app.command("info")
@run_cli
def info(
    atlas: str = typer.Argument(..., help="Manifest name (atlasreg atlas list), BrainGlobe folder, or Allen-style "
                                          "folder / npz / annotation file."),
    ontology: Optional[Path] = typer.Option(None, "--ontology", help="Structure CSV/JSON (Allen-style files)."),
    voxel_size: Optional[str] = voxel_size_option("µm, 25 or 25 25 25 per stored axis (files that don't record "
                                                  "it)."),
    file_orientation: Optional[str] = typer.Option(None, "--file-orientation",
                                                   help="Orientation code of the stored arrays, e.g. 'asr'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    download: bool = typer.Option(False, "--download", help="Download the public originals of a named atlas "
                                                            "that are neither in ATLASREG_DATA nor in the cache."),
) -> None:
    """Describe an atlas: space, unit, orientation, shape, voxel size, structures, memory.

    Examples:

      atlasreg atlas info allen_mouse_25um

      atlasreg atlas info annotation_25.nrrd --ontology structures.csv --voxel-size 25 --file-orientation asr
    """
    a = load_atlas(atlas, ontology, voxel_size, file_orientation, download)
    d = a.info()
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    for k, v in d.items():
        typer.echo(f"{k:24s} {v}")
