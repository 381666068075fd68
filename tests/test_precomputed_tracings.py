"""Precomputed skeletons -> Neuron and annotations <-> point / synapse tables, on the real hemibrain EM neurons.

Fixtures are written by neuroglancer's Python package (its skeleton encoder and AnnotationWriter) or packed here
byte by byte from the documented format; atlasreg reads skeletons with cloud-volume's codec and annotations with
neuroglancer's reader, and what atlasreg writes is decoded here from the documented format.
"""
from __future__ import annotations

import json
import struct

import neuroglancer  # the test extra installs neuroglancer, cloud-volume and tensorstore
import numpy as np
import pandas as pd
import pytest

import atlasreg as ar
from atlasreg.errors import InputError
from atlasreg.tracings.precomputed import (read_precomputed_lines, read_precomputed_points,
                                           read_precomputed_skeleton, read_precomputed_skeletons,
                                           write_precomputed_lines, write_precomputed_points)

IDS = (722817260, 1734350788)
VOXEL_NM = 8.0   # hemibrain SWC and synapse coordinates are 8 nm voxels


def _swc(data_dir, segid):
    a = np.loadtxt(data_dir / "neurons" / "hemibrain_em" / f"{segid}.swc", comments="#")
    return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:5], a[:, 5], a[:, 6].astype(int)


def _cable(ids, xyz, parents):
    row = {int(i): r for r, i in enumerate(ids)}
    has = parents >= 0
    pr = np.array([row[int(p)] for p in parents[has]])
    return float(np.linalg.norm(xyz[has] - xyz[pr], axis=1).sum())


def _write_skeletons(folder, data_dir, extra=None):
    """Each hemibrain neuron as a precomputed skeleton in voxel units, encoded by neuroglancer."""
    from neuroglancer.skeleton import Skeleton, SkeletonSource, VertexAttributeInfo

    folder.mkdir(parents=True)
    src = SkeletonSource(neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 8]))
    src.vertex_attributes["radius"] = VertexAttributeInfo(data_type=np.float32, num_components=1)
    src.vertex_attributes["vertex_types"] = VertexAttributeInfo(data_type=np.uint8, num_components=1)
    src.vertex_attributes["compartment"] = VertexAttributeInfo(data_type=np.float32, num_components=2)
    truth = {}
    for segid in IDS:
        ids, types, xyz, radius, parents = _swc(data_dir, segid)
        row = {int(i): r for r, i in enumerate(ids)}
        edges = np.array([[r, row[int(p)]] for r, p in enumerate(parents) if p >= 0])
        comp = np.stack([np.arange(len(ids)) % 7, types * 0.5], axis=1).astype(np.float32)
        sk = Skeleton(xyz, edges, {"radius": radius, "vertex_types": types, "compartment": comp})
        (folder / str(segid)).write_bytes(sk.encode(src))
        truth[segid] = (ids, types, xyz, radius, parents, comp)
    info = {"@type": "neuroglancer_skeletons", "transform": [VOXEL_NM, 0, 0, 0, 0, VOXEL_NM, 0, 0, 0, 0, VOXEL_NM, 0],
            "vertex_attributes": [{"id": k, "data_type": np.dtype(v.data_type).name, "num_components": v.num_components}
                                  for k, v in src.vertex_attributes.items()]}
    info.update(extra or {})
    (folder / "info").write_text(json.dumps(info))
    return truth


def test_skeletons_become_neurons_with_their_attributes(data_dir, tmp_path):
    truth = _write_skeletons(tmp_path / "skel", data_dir)
    ns = read_precomputed_skeletons(tmp_path / "skel", space="hemibrain")
    assert sorted(ns.names) == sorted(str(i) for i in IDS)
    for segid, (ids, types, xyz, radius, parents, comp) in truth.items():
        n = ns[str(segid)]
        assert n.space == ar.Space("hemibrain", "nm") and n.n_nodes == len(ids)
        np.testing.assert_allclose(n.points, xyz.astype(np.float32) * VOXEL_NM, rtol=1e-6)
        np.testing.assert_allclose(n.radius, radius.astype(np.float32) * VOXEL_NM, rtol=1e-6)
        np.testing.assert_array_equal(n.nodes["type"], types)
        np.testing.assert_array_equal(n.nodes[["compartment_0", "compartment_1"]].to_numpy(), comp)
        # the tree is the SWC's: same cable length (edges rebuilt into parents), one root per SWC root
        assert n.cable_length == pytest.approx(_cable(ids, xyz, parents) * VOXEL_NM, rel=1e-5)
        assert len(n.roots) == int((parents < 0).sum())
        assert n.provenance["segment_id"] == segid
    one = read_precomputed_skeleton("precomputed://file://" + str(tmp_path / "skel"), IDS[0], space="hemibrain")
    assert one.equals(ns[str(IDS[0])])


def test_skeletons_of_a_segmentation_volume(data_dir, tmp_path):
    import cloudvolume

    info = cloudvolume.CloudVolume.create_new_info(1, "segmentation", "uint64", "raw", [8, 8, 8], [0, 0, 0],
                                                   [16, 16, 16], chunk_size=[16, 16, 16])
    info["skeletons"] = "skeletons"
    cv = cloudvolume.CloudVolume("file://" + str(tmp_path / "seg"), info=info, progress=False)
    cv.commit_info()
    _write_skeletons(tmp_path / "seg" / "skeletons", data_dir)
    ns = read_precomputed_skeletons(tmp_path / "seg", ids=[IDS[1]], space="hemibrain")
    assert ns.names == [str(IDS[1])]
    # cloud-volume's own skeleton reader of the same segmentation (it applies the info transform) agrees (nm)
    cvs = cloudvolume.CloudVolume("file://" + str(tmp_path / "seg"), progress=False).skeleton.get(IDS[1])
    np.testing.assert_allclose(ns[0].points, np.asarray(cvs.vertices, float), rtol=1e-6)
    np.testing.assert_allclose(ns[0].radius, np.asarray(cvs.radius, float) * VOXEL_NM, rtol=1e-6)


def test_bad_skeletons_are_refused(data_dir, tmp_path):
    _write_skeletons(tmp_path / "s", data_dir)
    buf = (tmp_path / "s" / str(IDS[0])).read_bytes()
    (tmp_path / "s" / "5").write_bytes(buf[:-7])
    with pytest.raises(InputError, match="skeleton 5: .* bytes, but"):
        read_precomputed_skeletons(tmp_path / "s", ids=[5])
    with pytest.raises(InputError, match="no skeleton for segment 6"):
        read_precomputed_skeletons(tmp_path / "s", ids=[6])
    # a triangle: 3 vertices, 3 edges
    from neuroglancer.skeleton import Skeleton, SkeletonSource

    src = SkeletonSource(neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[1, 1, 1]))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "1").write_bytes(Skeleton([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1], [1, 2], [2, 0]])
                                       .encode(src))
    (tmp_path / "c" / "info").write_text(json.dumps({"@type": "neuroglancer_skeletons"}))
    with pytest.raises(InputError, match="cycle"):
        read_precomputed_skeletons(tmp_path / "c")
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "info").write_text(json.dumps({"scales": [], "skeletons": "../s"}))
    with pytest.raises(InputError, match="outside"):
        read_precomputed_skeletons(tmp_path / "v")
    with pytest.raises(InputError, match="in nm"):
        read_precomputed_skeletons(tmp_path / "s", space=ar.Space("em", "um"))


# -- annotations ----------------------------------------------------------------------------------------------

def _synapses(data_dir, segid=IDS[0]):
    return pd.read_csv(data_dir / "neurons" / "hemibrain_em" / "synapses" / f"{segid}.csv")


def test_point_annotations_written_by_neuroglancer(data_dir, tmp_path):
    from neuroglancer.write_annotations import AnnotationWriter

    syn = _synapses(data_dir)
    cs = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[VOXEL_NM] * 3)
    w = AnnotationWriter(cs, "point", properties=[
        neuroglancer.AnnotationPropertySpec(id="confidence", type="float32"),
        neuroglancer.AnnotationPropertySpec(id="kind", type="uint8", enum_values=[0, 1], enum_labels=["pre", "post"])])
    for r in syn.itertuples():
        w.add_point([r.x, r.y, r.z], id=int(r.connector_id), confidence=r.confidence, kind=int(r.type == "post"))
    w.write(str(tmp_path / "syn"))
    t = read_precomputed_points(tmp_path / "syn", space="hemibrain")
    assert t.space == ar.Space("hemibrain", "nm") and len(t) == len(syn)
    np.testing.assert_array_equal(t.df["id"], syn["connector_id"])
    np.testing.assert_allclose(t.points, syn[["x", "y", "z"]].to_numpy(np.float32) * VOXEL_NM, rtol=1e-6)
    np.testing.assert_allclose(t.df["confidence"], syn["confidence"].astype(np.float32))
    assert list(t.df["kind"]) == list(syn["type"])
    with pytest.raises(InputError, match="read them with read_precomputed_points"):
        read_precomputed_lines(tmp_path / "syn")


def test_points_packed_from_the_spec(tmp_path):
    """A spatial-index-only dataset packed byte by byte as the format documents it (um dimensions)."""
    d = tmp_path / "cells"
    (d / "spatial0").mkdir(parents=True)
    pts = np.array([[1.5, 2.0, 3.0], [10.0, 20.0, 30.0], [4.0, 5.0, 6.25]], np.float32)
    score = np.array([7, 65000, 3], np.uint16)
    ids = np.array([11, 5, 900], np.uint64)
    rec = np.dtype([("g", "<f4", 3), ("score", "<u2"), ("pad", "V2")])   # properties padded to 4 bytes
    arr = np.zeros(3, rec)
    arr["g"], arr["score"] = pts, score
    (d / "spatial0" / "0_0_0").write_bytes(struct.pack("<Q", 3) + arr.tobytes() + ids.astype("<u8").tobytes())
    (d / "info").write_text(json.dumps({
        "@type": "neuroglancer_annotations_v1", "dimensions": {"x": [1, "um"], "y": [1, "um"], "z": [1, "um"]},
        "lower_bound": [0, 0, 0], "upper_bound": [40, 40, 40], "annotation_type": "POINT",
        "properties": [{"id": "score", "type": "uint16"}], "relationships": [], "by_id": {"key": "by_id"},
        "spatial": [{"key": "spatial0", "grid_shape": [1, 1, 1], "chunk_size": [40, 40, 40], "limit": 10}]}))
    t = read_precomputed_points("precomputed://file://" + str(d), space="lm")
    order = np.argsort(ids)
    np.testing.assert_array_equal(t.df["id"], ids[order])
    np.testing.assert_allclose(t.points, pts[order].astype(np.float64) * 1000)
    np.testing.assert_array_equal(t.df["score"], score[order])


def _decode_spatial(folder, rank_geom, props):
    """Every annotation of a single-chunk spatial index, decoded from the documented layout."""
    info = json.loads((folder / "info").read_text())
    lvl = info["spatial"][0]
    assert lvl["grid_shape"] == [1, 1, 1]
    buf = (folder / lvl["key"] / "0_0_0").read_bytes()
    n = struct.unpack("<Q", buf[:8])[0]
    fields = [("g", "<f4", rank_geom)] + props
    size = np.dtype(fields).itemsize
    fields += [("pad", "V%d" % (-size % 4))] if size % 4 else []
    rec = np.frombuffer(buf, np.dtype(fields), count=n, offset=8)
    got_ids = np.frombuffer(buf, "<u8", count=n, offset=8 + rec.nbytes)
    assert 8 + rec.nbytes + got_ids.nbytes == len(buf)
    return info, rec, got_ids


def test_written_points_decode_by_the_spec(data_dir, tmp_path):
    syn = _synapses(data_dir).iloc[:300]
    df = pd.DataFrame({"id": syn["connector_id"].to_numpy(np.uint64), "x": syn["x"] * VOXEL_NM,
                       "y": syn["y"] * VOXEL_NM, "z": syn["z"] * VOXEL_NM, "confidence": syn["confidence"],
                       "node_id": syn["node_id"]})
    table = ar.tracings.PointTable(df, "hemibrain", "nm")
    out = write_precomputed_points(table, tmp_path / "pts")
    info, rec, ids = _decode_spatial(out, 3, [("confidence", "<f4"), ("node_id", "<u2")])
    assert info["annotation_type"] == "POINT" and info["dimensions"]["x"] == [1e-9, "m"]
    order = np.argsort(ids)
    np.testing.assert_array_equal(ids[order], np.sort(df["id"].to_numpy()))
    srt = df.sort_values("id")
    np.testing.assert_allclose(rec["g"][order], srt[["x", "y", "z"]].to_numpy(np.float32))
    np.testing.assert_array_equal(rec["node_id"][order], srt["node_id"])
    back = read_precomputed_points(out, space="hemibrain")
    np.testing.assert_allclose(back.points, srt[["x", "y", "z"]].to_numpy(np.float32), rtol=1e-7)
    with pytest.raises(ar.errors.OutputExistsError):
        write_precomputed_points(table, out)


def test_synapse_lines_round_trip(data_dir, tmp_path):
    """Synapses as lines from their skeleton node to the synapse site: both ends move with transform_table."""
    ids, _, xyz, _, _ = _swc(data_dir, IDS[0])
    syn = _synapses(data_dir).iloc[:200]
    row = {int(i): r for r, i in enumerate(ids)}
    node = xyz[[row[int(n)] for n in syn["node_id"]]] * VOXEL_NM
    a = ar.tracings.PointTable(pd.DataFrame({"id": np.arange(200, dtype=np.uint64), "x": node[:, 0],
                                             "y": node[:, 1], "z": node[:, 2],
                                             "confidence": syn["confidence"].to_numpy()}), "hemibrain", "nm")
    b = a.with_points(syn[["x", "y", "z"]].to_numpy(float) * VOXEL_NM, a.space)
    out = write_precomputed_lines(a, b, tmp_path / "lines")
    info, rec, got_ids = _decode_spatial(out, 6, [("confidence", "<f4")])
    assert info["annotation_type"] == "LINE"
    order = np.argsort(got_ids)
    np.testing.assert_allclose(rec["g"][order][:, :3], a.points.astype(np.float32))
    np.testing.assert_allclose(rec["g"][order][:, 3:], b.points.astype(np.float32))
    pa, pb = read_precomputed_lines(out, space="hemibrain")
    np.testing.assert_allclose(pa.points, a.points.astype(np.float32), rtol=1e-7)
    np.testing.assert_allclose(pb.points, b.points.astype(np.float32), rtol=1e-7)
    np.testing.assert_array_equal(pa.df["id"], pb.df["id"])
    um = ar.Affine.from_units(ar.Space("hemibrain", "nm"), ar.Space("hemibrain_um", "um"))
    moved = ar.tracings.transform_table(pb, um)
    np.testing.assert_allclose(moved.points, pb.points / 1000)
    with pytest.raises(InputError, match="beyond 32-bit"):
        write_precomputed_points(ar.tracings.PointTable(a.df.assign(big=np.int64(2**40)), a.space), tmp_path / "big")


def test_sharded_skeletons_written_by_cloudvolume(data_dir, tmp_path):
    """Sharded skeletons (as H01 and MICrONS publish them), shard files synthesised by cloud-volume."""
    import cloudvolume
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification, synthesize_shard_files

    info = cloudvolume.CloudVolume.create_new_info(1, "segmentation", "uint64", "raw", [8, 8, 8], [0, 0, 0],
                                                   [16, 16, 16], chunk_size=[16, 16, 16])
    info["skeletons"] = "skeletons"
    url = "file://" + str(tmp_path / "seg")
    cloudvolume.CloudVolume(url, info=info, progress=False).commit_info()
    sh = ShardingSpecification(type="neuroglancer_uint64_sharded_v1", preshift_bits=0, hash="murmurhash3_x86_128",
                               minishard_bits=2, shard_bits=1, minishard_index_encoding="gzip", data_encoding="gzip")
    (tmp_path / "seg" / "skeletons").mkdir()
    (tmp_path / "seg" / "skeletons" / "info").write_text(json.dumps({
        "@type": "neuroglancer_skeletons", "sharding": sh.to_dict(),
        "vertex_attributes": [{"id": "radius", "data_type": "float32", "num_components": 1},
                              {"id": "vertex_types", "data_type": "uint8", "num_components": 1}]}, default=int))
    skels = {}
    for segid in IDS:
        ids, types, xyz, radius, parents = _swc(data_dir, segid)
        row = {int(i): r for r, i in enumerate(ids)}
        edges = np.array([[r, row[int(p)]] for r, p in enumerate(parents) if p >= 0], np.uint32)
        skels[segid] = cloudvolume.Skeleton((xyz * VOXEL_NM).astype(np.float32), edges,
                                            radii=(radius * VOXEL_NM).astype(np.float32),
                                            vertex_types=types.astype(np.uint8), segid=segid, space="physical")
    files = synthesize_shard_files(sh, {k: s.to_precomputed() for k, s in skels.items()})
    CloudFiles(url + "/skeletons").puts(list(files.items()), compress=None, raw=True)
    ns = read_precomputed_skeletons("precomputed://" + url, space="hemibrain")   # ids listed from the shards
    assert sorted(ns.names) == sorted(str(i) for i in IDS)
    for segid, s in skels.items():
        n = ns[str(segid)]
        np.testing.assert_allclose(n.points, s.vertices, rtol=1e-7)
        np.testing.assert_allclose(n.radius, s.radius, rtol=1e-7)
        np.testing.assert_array_equal(n.nodes["type"], s.vertex_types)
        ids, _, xyz, _, parents = _swc(data_dir, segid)
        assert n.cable_length == pytest.approx(_cable(ids, xyz, parents) * VOXEL_NM, rel=1e-5)


def test_synapses_with_their_segments(data_dir, tmp_path):
    """Synapse lines with pre / post segment relationships (the MICrONS / H01 layout), written by neuroglancer:
    the segments live only in the by_id index, and come back as columns."""
    from neuroglancer.write_annotations import AnnotationWriter

    syn = _synapses(data_dir).iloc[:120]
    cs = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[VOXEL_NM] * 3)
    w = AnnotationWriter(cs, "line", relationships=["pre_segment", "post_segment"])
    post = [[IDS[1]] if i % 3 else [IDS[1], 5 + i] for i in range(len(syn))]
    for i, r in enumerate(syn.itertuples()):
        w.add_line([r.x, r.y, r.z], [r.x + 10, r.y, r.z], id=int(r.connector_id), pre_segment=[IDS[0]],
                   post_segment=post[i])
    w.write(str(tmp_path / "syn"))
    a, b = read_precomputed_lines(tmp_path / "syn", space="hemibrain")
    np.testing.assert_array_equal(a.df["id"], syn["connector_id"])
    assert (a.df["pre_segment"] == IDS[0]).all() and a.df["pre_segment"].dtype == np.uint64
    assert list(a.df["post_segment"]) == [tuple(p) for p in post]
    np.testing.assert_allclose(b.points - a.points, [[10 * VOXEL_NM, 0, 0]] * len(syn))
    quick, _ = read_precomputed_lines(tmp_path / "syn", space="hemibrain", relationships=False)
    assert "pre_segment" not in quick.df.columns


def test_written_relationships_index_synapses_by_segment(data_dir, tmp_path):
    syn = _synapses(data_dir).iloc[:50]
    xyz = syn[["x", "y", "z"]].to_numpy(float) * VOXEL_NM
    df = pd.DataFrame({"id": syn["connector_id"].to_numpy(np.uint64), "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                       "pre_segment": np.full(50, IDS[0], np.uint64),
                       "post_segment": [(IDS[1], 2**63 + i) if i % 2 else IDS[1] for i in range(50)]})
    a = ar.tracings.PointTable(df, "hemibrain", "nm")
    out = write_precomputed_lines(a, a.with_points(xyz + 40, a.space), tmp_path / "syn",
                                  relationships=["pre_segment", "post_segment"])
    pre, _ = read_precomputed_lines(out, space="hemibrain")
    np.testing.assert_array_equal(pre.df["pre_segment"], df["pre_segment"])
    assert [tuple(t) if isinstance(t, tuple) else (t,) for t in pre.df["post_segment"]] == \
        [t if isinstance(t, tuple) else (t,) for t in df["post_segment"]]
    # neuroglancer's reader finds them by segment, through the relationship index
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    r = AnnotationReader(out.absolute().as_uri() + "/")
    assert len(r.relationships["pre_segment"][IDS[0]]) == 50
    assert len(r.relationships["post_segment"][2**63 + 1]) == 1
