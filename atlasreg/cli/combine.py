"""``atlasreg combine``: EM skeletons and optical neurons in one atlas frame, with an EM block footprint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ._app import app, output_option, run_cli, say, voxel_size_option


def _files(items: List[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    from ..errors import InputError

    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"no {'/'.join(suffixes)} files in this folder", path=p, field=what)
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError("no such file or folder", path=p, field=what)
    return out


@app.command()
@run_cli
def combine(
    em: List[Path] = typer.Option(..., "--em", help="EM skeleton SWC files or folders (repeatable). Synapse "
                                                    "tables are taken from <folder>/synapses/<name>.csv if present."),
    em_space: str = typer.Option(..., "--em-space", help="Name of the EM space (e.g. hemibrain)."),
    em_unit: str = typer.Option(..., "--em-unit", help="Physical unit of the EM space: nm, um or mm."),
    em_voxel_size: Optional[str] = voxel_size_option("EM coordinates are voxels of this size (in --em-unit); "
                                                     "one value or three (8 8 8 or 8,8,8).", "--em-voxel-size"),
    optical: List[Path] = typer.Option(..., "--optical", help="Optical neuron files (SWC, MouseLight .json) or "
                                                              "folders (repeatable)."),
    optical_space: str = typer.Option("ccf", "--optical-space", help="Space of the optical neurons."),
    optical_unit: str = typer.Option("um", "--optical-unit", help="Unit of the optical space."),
    optical_voxel_size: Optional[str] = voxel_size_option("Optical coordinates are voxels of this size "
                                                          "(e.g. 25 for CCF 25 µm voxel units).",
                                                          "--optical-voxel-size"),
    orientation: Optional[str] = typer.Option(None, "--orientation",
                                              help="Orientation code of the atlas space (e.g. asr for the CCF)."),
    block: str = typer.Option(..., "--block",
                              help="Either a transform file mapping the EM space into the atlas (.json NGFF, "
                                   ".tfm/.h5/.txt ITK, .mat) — the block is then the EM data's bounding box "
                                   "carried through it — or six numbers 'lo0,lo1,lo2,hi0,hi1,hi2' (atlas "
                                   "unit): the block's box in the atlas, with the EM skeletons placed "
                                   "synthetically at its centre (unit change only)."),
    block_margin: float = typer.Option(0.0, "--block-margin",
                                       help="Grow the EM bounding box by this much (EM unit) on every side."),
    out: Path = output_option("Output folder."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing collection in the output folder."),
) -> None:
    """Bring EM skeletons and optical neurons into one atlas space, find the optical neurons that pass through the EM block, and write the combined collection.

    Writes to OUTPUT: swc/*.swc (atlas space, with .json sidecars), neurons.parquet (one row per neuron: kind, source space and unit, transforms applied), nodes.parquet, synapses.parquet, passing.csv (optical neurons crossing the block, cable inside) and block.json.

    Example (fly EM skeletons placed synthetically in a 400 µm box of the mouse CCF, next to fMOST neurons in CCF 25 µm voxel units):

      atlasreg combine --em hemibrain_em/ --em-space hemibrain --em-unit nm --em-voxel-size 8 --optical fmost_ccf25/ --optical-voxel-size 25 --orientation asr --block 5800,3800,5500,6200,4200,5900 -o combined/

    With a registration instead: --block em_to_ccf.json (a transform file mapping the EM space into the atlas).
    """
    import numpy as np

    from ..errors import InputError, OutputExistsError
    from ..spaces import Space
    from ..transforms.base import Affine
    from ..tracings import (EMBlock, NeuronList, attach_synapses, block_from_neurons, bounds_of,
                            combine as combine_lib,
                            find_passing, place_block, read_mouselight, read_swc, read_table, write_collection)

    out = Path(out)
    if out.exists() and not force and any((out / f).exists() for f in ("neurons.parquet", "passing.csv")):
        raise OutputExistsError(f"{out} already holds a combined collection")
    em_sp = Space(em_space, em_unit)
    atlas_sp = Space(optical_space, optical_unit, orientation)

    em_neurons = NeuronList()
    for f in _files(em, (".swc",), "em"):
        n = read_swc(f, space=em_sp, voxel_size=em_voxel_size, kind="em")
        syn = f.parent / "synapses" / f"{f.stem}.csv"
        if syn.is_file():
            n = attach_synapses(n, read_table(syn, space=em_sp, voxel_size=em_voxel_size))
        em_neurons.append(n)
    opt = NeuronList()
    for f in _files(optical, (".swc", ".json"), "optical"):
        if f.suffix.lower() == ".json":
            if f.name.endswith(".swc.json"):
                continue  # an SWC sidecar, read with its SWC
            opt.extend(read_mouselight(f, space=atlas_sp))
        else:
            opt.append(read_swc(f, space=atlas_sp, voxel_size=optical_voxel_size, kind="optical"))

    parts = [s.strip() for s in block.split(",")]
    if len(parts) == 6 and not Path(block).exists():
        try:
            box = np.array([float(s) for s in parts])
        except ValueError:
            raise InputError(f"--block {block!r}: six numbers expected (lo0,lo1,lo2,hi0,hi1,hi2)",
                             field="block") from None
        lo, hi = box[:3], box[3:]
        if np.any(hi <= lo):
            raise InputError(f"--block {block!r}: each hi must exceed its lo", field="block")
        em_lo, em_hi = bounds_of(em_neurons)
        T = place_block(em_sp, em_lo, em_hi, (lo + hi) / 2, atlas_sp)
        footprint = EMBlock(lo, hi, Affine(np.eye(4), atlas_sp, atlas_sp), name="block")
        placement = "synthetic: EM data centred in the given atlas box (unit change, no registration)"
    else:
        from ..transforms.files import load_transform

        if not Path(block).exists():
            raise InputError(f"--block {block!r} is neither a transform file that exists nor six numbers "
                             "'lo0,lo1,lo2,hi0,hi1,hi2' (a box in the atlas)", field="block")

        T = load_transform(block, src=em_sp, dst=atlas_sp)
        footprint = block_from_neurons(em_neurons, T, margin=block_margin, name="block")
        placement = f"transform file {block}"
    both = combine_lib(em=em_neurons, optical=opt, dst=atlas_sp, em_transform=T)
    write_collection(both, out, force=force)
    hits = find_passing(opt, footprint)
    hits.to_csv(out / "passing.csv", index=False)
    lo_a, hi_a = footprint.atlas_bounds()
    (out / "block.json").write_text(json.dumps({
        "placement": placement, "block_space": footprint.space.name, "block_unit": footprint.space.unit,
        "lo": footprint.lo.tolist(), "hi": footprint.hi.tolist(), "atlas_space": atlas_sp.name,
        "atlas_unit": atlas_sp.unit, "atlas_bounds": [lo_a.tolist(), hi_a.tolist()],
        "transform": repr(T)}, indent=1))
    say(f"{len(em_neurons)} EM + {len(opt)} optical neurons in {atlas_sp} -> {out}")
    say(f"block ({placement}); {len(hits)} optical neuron(s) pass through it")
    for r in hits.head(10).itertuples(index=False):
        say(f"  {r.name}: {r.length_inside:.1f} {atlas_sp.unit} inside ({r.nodes_inside} nodes)")
