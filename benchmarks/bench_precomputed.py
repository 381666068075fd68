"""Reading a neuroglancer precomputed EM volume: atlasreg vs cloud-volume vs tensorstore, side by side.

The real ISBI 2012 EM stack (30 x 512 x 512, 4 x 4 x 50 nm) is written once as precomputed by cloud-volume
(raw and jpeg encodings, 64 x 64 x 8 chunks, x y z), then read in the same process by

* ``atlasreg``: ``read_volume(folder)`` (lazy dask array over tensorstore) then ``.numpy()`` or a slice;
* ``cloud-volume``: ``CloudVolume(url)[...]`` (what connectomics users call today);
* ``tensorstore``: ``ts.open(...)[...].read().result()`` — the library atlasreg wraps, the floor.

Each timing is the best of ``--repeats``; opening is included (a user opens and reads). Every reader's voxels are
checked equal. The machine is shared: the load average is recorded with the result.
Run: ``python benchmarks/bench_precomputed.py`` (writes benchmarks/results/precomputed.json and .md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
os.environ.setdefault("ATLASREG_DATA", str(HERE.parent.parent / "shared" / "data"))
sys.path.insert(0, str(HERE))
from bench_region_of import best_of  # noqa: E402  (one timing helper for the benchmarks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "precomputed.json")
    args = ap.parse_args()

    import cloudvolume
    import tensorstore as ts
    import tifffile

    import atlasreg as ar

    data = Path(os.environ["ATLASREG_DATA"])
    em = tifffile.imread(data / "em" / "isbi2012_train_volume_30x512x512.tif")
    xyz = np.ascontiguousarray(em.transpose(2, 1, 0))
    tmp = Path(tempfile.mkdtemp(prefix="bench_precomputed_"))
    rows = []
    for encoding in ("raw", "jpeg"):
        url = f"file://{tmp}/{encoding}"
        info = cloudvolume.CloudVolume.create_new_info(1, "image", "uint8", encoding, [4, 4, 50], [0, 0, 0],
                                                       list(xyz.shape), chunk_size=[64, 64, 8])
        cv = cloudvolume.CloudVolume(url, info=info, compress=False, progress=False)
        cv.commit_info()
        cv[:, :, :] = xyz[..., None]
        truth = np.asarray(cloudvolume.CloudVolume(url, progress=False)[:, :, :])[..., 0]
        sub = (slice(130, 330), slice(70, 270), slice(5, 21))

        def ar_full():
            return ar.read_volume(f"{tmp}/{encoding}").numpy()

        def ar_sub():
            return ar.read_volume(f"{tmp}/{encoding}").data[sub].compute()

        def cv_full():
            return np.asarray(cloudvolume.CloudVolume(url, progress=False)[:, :, :])[..., 0]

        def cv_sub():
            return np.asarray(cloudvolume.CloudVolume(url, progress=False)[sub])[..., 0]

        def ts_open():
            return ts.open({"driver": "neuroglancer_precomputed", "kvstore": url + "/"}).result()

        def ts_full():
            return ts_open()[..., 0].read().result()

        def ts_sub():
            return ts_open()[sub + (0,)].read().result()

        for what, fns in (("whole volume", (ar_full, cv_full, ts_full)),
                          ("200x200x16 block", (ar_sub, cv_sub, ts_sub))):
            times = []
            for fn in fns:
                t, out = best_of(fn, args.repeats)
                want = truth if what == "whole volume" else truth[sub]
                assert np.array_equal(out, want), (encoding, what, fn.__name__)
                times.append(t)
            rows.append({"encoding": encoding, "read": what, "atlasreg_s": times[0], "cloudvolume_s": times[1],
                         "tensorstore_s": times[2], "atlasreg_over_cloudvolume": times[0] / times[1],
                         "atlasreg_over_tensorstore": times[0] / times[2]})
    load = os.getloadavg()
    result = {"data": "ISBI 2012 EM, 512 x 512 x 30 uint8, 64x64x8 chunks, written by cloud-volume",
              "repeats": args.repeats, "load_average": load, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lines = ["| encoding | read | atlasreg (s) | cloud-volume (s) | tensorstore (s) | atlasreg / cloud-volume | "
             "atlasreg / tensorstore |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoding']} | {r['read']} | {r['atlasreg_s']:.3f} | {r['cloudvolume_s']:.3f} | "
                     f"{r['tensorstore_s']:.3f} | {r['atlasreg_over_cloudvolume']:.2f} | "
                     f"{r['atlasreg_over_tensorstore']:.2f} |")
    lines.append(f"\nload average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; best of {args.repeats}")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
