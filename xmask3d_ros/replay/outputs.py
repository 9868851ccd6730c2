"""Replay outputs, each written atomically (temporary name in the same folder, then rename).

- ``map.ply``: final map, one vertex per voxel: x y z (map frame, m), red green blue, label
  (query label index, 65535 = unknown), score (the label's probability, NaN = no semantics).
  Binary little-endian; header comments name the labels and the frame.
- ``semantic_map.mcap/``: a rosbag2 (MCAP) with ``/semantic_cloud`` (sensor_msgs/PointCloud2,
  fields x y z rgb label score) and ``/query_result`` (std_msgs/String holding the answer as JSON),
  plus the input bag's ``/tf`` and ``/tf_static`` messages of the replayed range, copied with their
  topics, types, log times, bytes and recorded QoS (so it plays beside the input bag in RViz).
- ``overlays/overlay_NN_<stamp>.png``: keyframe images with the map's labels alpha-blended over
  the pixels whose back-projected depth falls on a labelled map voxel, and a legend.
- ``topdown.png``: the map seen from above, coloured by label, with a legend.
- ``metrics.json`` / ``metrics.md``: with ground truth: the nearest map voxel per GT point gives
  its predicted label; per-class IoU and mIoU over the query labels that the GT contains.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.files import atomic_write
from xmask3d_ros.pipeline import UNKNOWN_LABEL, QueryAnswer
from xmask3d_ros.pipeline.palette import PALETTE, label_colors

__all__ = [
    "PALETTE",
    "label_colors",
    "map_coverage",
    "map_metrics",
    "pointcloud2_msg",
    "write_metrics",
    "label_pixels",
    "overlay_image",
    "write_output_bag",
    "write_overlays",
    "write_ply",
    "write_voxels_ply",
    "write_topdown_png",
]

def write_voxels_ply(path: str | Path, positions: npt.ArrayLike, rgb: npt.ArrayLike,
                     labels: npt.ArrayLike, scores: npt.ArrayLike, label_names: Sequence[str] = (),
                     frame_id: str = "") -> Path:
    """Binary little-endian PLY, one vertex per voxel: x y z, red green blue, label, score.

    The header's comments name each label index (``comment label 3 chair``) and the frame, so
    the file explains itself in CloudCompare or MeshLab.
    """
    from plyfile import PlyData, PlyElement

    pos = np.asarray(positions, np.float32).reshape(-1, 3)
    v = np.empty(pos.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                      ("green", "u1"), ("blue", "u1"), ("label", "<u2"),
                                      ("score", "<f4")])
    v["x"], v["y"], v["z"] = pos.T
    v["red"], v["green"], v["blue"] = np.asarray(rgb, np.uint8).reshape(-1, 3).T
    v["label"], v["score"] = labels, scores
    comments = [f"frame {frame_id}"] if frame_id else []
    comments += [f"label {i} {name}" for i, name in enumerate(label_names)]
    comments.append(f"label {UNKNOWN_LABEL} unknown")
    ply = PlyData([PlyElement.describe(v, "vertex")], comments=comments)
    return atomic_write(Path(path), lambda p: ply.write(str(p)))


def write_ply(path: str | Path, answer: QueryAnswer, colors: npt.NDArray[np.uint8] | None = None) -> Path:
    """The answer's voxels as PLY (colours: ``colors`` or the label palette)."""
    rgb = label_colors(answer.voxel_label) if colors is None else colors
    return write_voxels_ply(path, answer.positions, rgb, answer.voxel_label, answer.voxel_score,
                            answer.labels, answer.frame_id)


def answer_json(answer: QueryAnswer) -> dict[str, Any]:
    """The answer's summary (labels, counts, objects) as plain JSON data."""
    return {
        "stamp_ns": answer.stamp_ns, "frame_id": answer.frame_id, "min_score": answer.min_score,
        "dropped_labels": list(answer.dropped_labels),
        "results": [{
            "label": r.label, "label_index": r.label_index, "num_voxels": r.num_voxels,
            "max_score": None if np.isnan(r.max_score) else r.max_score,
            "objects": [{"score": o.score, "centroid": list(map(float, o.centroid)),
                         "bbox_min": list(map(float, o.bbox_min)), "bbox_max": list(map(float, o.bbox_max))}
                        for o in r.objects],
        } for r in answer.results],
    }


def pointcloud2_msg(ts: Any, answer: QueryAnswer) -> Any:
    """sensor_msgs/PointCloud2: x y z float32, rgb float32 (packed), label uint16, score float32."""
    from xmask3d_ros.replay.messages import header_msg

    n = answer.positions.shape[0]
    dt = np.dtype({"names": ["x", "y", "z", "rgb", "label", "score"],
                   "formats": ["<f4", "<f4", "<f4", "<u4", "<u2", "<f4"],
                   "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})
    rgb = label_colors(answer.voxel_label).astype(np.uint32)
    rec = np.zeros(n, dtype=dt)
    rec["x"], rec["y"], rec["z"] = answer.positions.T
    rec["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    rec["label"], rec["score"] = answer.voxel_label, answer.voxel_score
    PF = ts.types["sensor_msgs/msg/PointField"]
    fields = [PF(name=name, offset=off, datatype=typ, count=1) for name, off, typ in
              (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 4), ("score", 20, 7))]
    return ts.types["sensor_msgs/msg/PointCloud2"](
        header=header_msg(ts, max(int(answer.stamp_ns), 0), answer.frame_id), height=1, width=n,
        fields=fields, is_bigendian=False, point_step=24, row_step=24 * n,
        data=rec.view(np.uint8).reshape(-1), is_dense=True,
    )


def write_output_bag(path: str | Path, answer: QueryAnswer, *, tf_messages: Sequence[Any] = (),
                     tf_qos: dict[str, list[Any]] | None = None) -> Path:
    """rosbag2 MCAP folder with ``/semantic_cloud`` and ``/query_result`` at the answer stamp.

    ``tf_messages`` (``BagMessage`` of the reader: topic, msgtype, log_time_ns, raw CDR bytes or
    the message) are copied with their topic, type and log time; ``tf_qos`` gives each topic's
    recorded QoS profiles (``/tf_static`` is transient-local, which players need to latch it).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp.rmdir()  # the Writer creates the folder itself
    stamp = max(int(answer.stamp_ns), 0)
    try:
        with Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP) as w:
            c_cloud = w.add_connection("/semantic_cloud", "sensor_msgs/msg/PointCloud2", typestore=ts)
            c_query = w.add_connection("/query_result", "std_msgs/msg/String", typestore=ts)
            w.write(c_cloud, stamp, ts.serialize_cdr(pointcloud2_msg(ts, answer), c_cloud.msgtype))
            text = ts.types["std_msgs/msg/String"](data=json.dumps(answer_json(answer)))
            w.write(c_query, stamp, ts.serialize_cdr(text, c_query.msgtype))
            conns: dict[str, Any] = {}
            for m in tf_messages:
                conn = conns.get(m.topic)
                if conn is None:
                    qos = list((tf_qos or {}).get(m.topic, []))
                    conn = conns[m.topic] = w.add_connection(m.topic, m.msgtype, typestore=ts,
                                                             offered_qos_profiles=qos)
                data = m.raw if m.raw is not None else ts.serialize_cdr(m.msg, m.msgtype)
                w.write(conn, int(m.log_time_ns), data)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_topdown_png(path: str | Path, positions: npt.NDArray[np.floating], labels: npt.NDArray[np.integer],
                      names: Sequence[str], *, title: str = "semantic map (top-down)",
                      clip_height_m: float = 1.8) -> Path:
    """Top-down view coloured by label, with a legend.

    Points more than ``clip_height_m`` above the floor (the 2nd percentile of z) are left out, as
    a floor plan cuts the ceiling away; labelled points are drawn after unknown ones and higher
    points after lower ones, so each pixel shows the highest labelled surface below the cut.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    pos = np.asarray(positions, dtype=np.float64)
    lab = np.asarray(labels).astype(np.int64)
    if pos.size:
        keep = pos[:, 2] <= np.percentile(pos[:, 2], 2.0) + clip_height_m
        pos, lab = pos[keep], lab[keep]
    order = np.lexsort((pos[:, 2], lab != UNKNOWN_LABEL)) if pos.size else np.empty(0, np.int64)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.scatter(pos[order, 0], pos[order, 1], c=label_colors(lab[order]) / 255.0, s=4, marker="s",
               linewidths=0)
    present = sorted(set(lab.tolist()))
    handles = [Patch(color=label_colors(np.array([i]))[0] / 255.0,
                     label=names[i] if 0 <= i < len(names) else "unknown") for i in present]
    if handles:
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title)
    fig.tight_layout()

    def save(p: Path) -> None:
        fig.savefig(p, format="png")

    try:
        return atomic_write(Path(path), save)
    finally:
        plt.close(fig)


def map_metrics(answer: QueryAnswer, labels: Sequence[str], gt_points: npt.NDArray[np.floating],
                gt_names: Sequence[str], *, max_distance_m: float = float("inf"),
                novel: Sequence[str] = (), seen_within_m: float | None = None) -> Any:
    """IoU of the map against labelled GT points: each takes the label of its nearest map voxel
    (missed when farther than ``max_distance_m`` or unknown). Classes: the query labels present
    in ``gt_names``; ``novel`` of them form the novel mean, the others the base mean.
    ``seen_within_m``: only GT points with a map voxel that close count (what the camera saw;
    the model's own evaluation likewise scores only points some view sees)."""
    from scipy.spatial import cKDTree

    from xmask3d_ros.metrics.confusion import ConfusionMatrix

    labels = list(labels)
    index = {n: i for i, n in enumerate(labels)}
    gt = np.array([index.get(n, -1) for n in gt_names], dtype=np.int64)
    pred = np.full(gt.shape, -1, dtype=np.int64)
    if answer.positions.shape[0]:
        dist, nn = cKDTree(answer.positions).query(np.asarray(gt_points, np.float64), k=1)
        lab = answer.voxel_label[nn].astype(np.int64)
        ok = (dist <= max_distance_m) & (lab != UNKNOWN_LABEL)
        pred[ok] = lab[ok]
        if seen_within_m is not None:
            gt[dist > seen_within_m] = -1
    elif seen_within_m is not None:
        gt[:] = -1
    present = sorted(set(gt[gt >= 0].tolist()))
    cm = ConfusionMatrix.for_indices(len(labels), present)
    cm.update(gt, pred)
    nov = [index[n] for n in novel if index.get(n) in present]
    base = [i for i in present if i not in nov] if nov else []
    return cm.iou(base=base, novel=nov, names=labels)


def map_coverage(positions: npt.NDArray[np.floating], gt_points: npt.NDArray[np.floating],
                 radius_m: float) -> float:
    """Fraction of GT points with a map voxel within ``radius_m`` (how much of the scene was seen)."""
    from scipy.spatial import cKDTree

    if positions.shape[0] == 0 or len(gt_points) == 0:
        return 0.0
    dist, _ = cKDTree(positions).query(np.asarray(gt_points, np.float64), k=1)
    return float(np.mean(dist <= radius_m))


def write_metrics(out_dir: str | Path, result: Any, extra: dict[str, Any] | None = None,
                  note: str = "") -> tuple[Path, Path]:
    """``metrics.json`` and ``metrics.md`` (the table, then ``note``) in ``out_dir`` (atomic)."""
    from xmask3d_ros.metrics.report import markdown_table

    out = Path(out_dir)
    data = {**result.as_dict(), **(extra or {})}
    j = atomic_write(out / "metrics.json", lambda p: p.write_text(json.dumps(data, indent=2), encoding="utf-8"))
    text = markdown_table(result, "Replay metrics") + (f"\n{note}\n" if note else "")
    m = atomic_write(out / "metrics.md", lambda p: p.write_text(text, encoding="utf-8"))
    return j, m


def label_pixels(posed: Any, positions: npt.NDArray[np.floating], labels: npt.NDArray[np.integer],
                 voxel_size_m: float) -> npt.NDArray[np.int64]:
    """(H, W) label index of each pixel of ``posed`` (a PosedFrame): its depth back-projected into
    the map frame takes the label of the nearest map voxel centre within ``voxel_size_m``; -1 where
    no depth or no voxel is that close (``UNKNOWN_LABEL`` for unknown voxels)."""
    from scipy.spatial import cKDTree

    frame = posed.frame
    out = np.full(frame.depth_m.shape, -1, dtype=np.int64)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[0] == 0:
        return out
    pts, pix = frame.camera.backproject(frame.depth_m)
    if pts.shape[0] == 0:
        return out
    dist, nn = cKDTree(pos).query(posed.T_map_cam.apply(pts), k=1,
                                  distance_upper_bound=float(voxel_size_m))
    ok = np.isfinite(dist)
    out.reshape(-1)[pix[ok]] = np.asarray(labels).astype(np.int64)[nn[ok]]
    return out


def overlay_image(rgb: npt.NDArray[np.uint8], pixel_labels: npt.NDArray[np.integer], *,
                  alpha: float = 0.5) -> npt.NDArray[np.uint8]:
    """``rgb`` with the palette colour of each labelled pixel (>= 0) alpha-blended over it:
    ``round((1 - alpha) * rgb + alpha * colour)``; pixels labelled -1 are left as they are."""
    img = np.asarray(rgb, dtype=np.uint8)
    lab = np.asarray(pixel_labels)
    if lab.shape != img.shape[:2]:
        raise ValueError(f"labels are {lab.shape}, image is {img.shape[:2]}")
    out = img.copy()
    sel = lab >= 0
    if sel.any():
        col = label_colors(lab[sel]).astype(np.float32)
        blended = (1.0 - alpha) * img[sel].astype(np.float32) + alpha * col
        out[sel] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _draw_legend(img: npt.NDArray[np.uint8], present: Sequence[int], names: Sequence[str]) -> Any:
    """Legend (swatch + name per label, the most frequent first) in the top-left corner, on a
    translucent dark box; labels that do not fit are summarised as '+N more'. Returns the PIL
    image and the box (x0, y0, x1, y1)."""
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(img).convert("RGBA")
    if not present:
        return pil.convert("RGB"), (0, 0, 0, 0)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(pil)
    line_h = max(10, int(probe.textbbox((0, 0), "Ag", font=font)[3]) + 3)
    fits = max(1, (img.shape[0] - 8) // line_h)
    rows = list(present)
    text = [names[i] if 0 <= i < len(names) else "unknown" for i in rows]
    if len(rows) > fits:
        rows, text = rows[: fits - 1], text[: fits - 1] + [f"+{len(rows) - fits + 1} more"]
    sw = line_h - 3
    width = 4 + sw + 4 + max(int(probe.textlength(t, font=font)) for t in text) + 4
    box = (2, 2, 2 + width, 2 + 4 + line_h * len(text))
    layer = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle(box, fill=(0, 0, 0, 150))
    colours = label_colors(np.array(rows, dtype=np.int64)) if rows else np.empty((0, 3), np.uint8)
    for k, t in enumerate(text):
        y = box[1] + 3 + k * line_h
        if k < len(rows):
            c = tuple(int(v) for v in colours[k])
            draw.rectangle((box[0] + 4, y, box[0] + 4 + sw, y + sw), fill=(*c, 255))
        draw.text((box[0] + 8 + sw, y - 1), t, fill=(255, 255, 255, 255), font=font)
    return Image.alpha_composite(pil, layer).convert("RGB"), box


def write_overlays(out_dir: str | Path, frames: Sequence[Any], answer: QueryAnswer, names: Sequence[str],
                   voxel_size_m: float, *, alpha: float = 0.5) -> list[Path]:
    """One PNG per posed frame in ``out_dir`` (``overlay_NN_<stamp>.png``, the image's size): the
    map's labels blended over the image (:func:`label_pixels`, :func:`overlay_image`) and a legend
    of the labels seen in it. Returns the paths."""
    paths = []
    for k, posed in enumerate(frames):
        lab = label_pixels(posed, answer.positions, answer.voxel_label, voxel_size_m)
        img = overlay_image(posed.frame.rgb, lab, alpha=alpha)
        found, counts = np.unique(lab[lab >= 0], return_counts=True)
        present = [int(found[i]) for i in np.argsort(-counts, kind="stable")]
        pil, _ = _draw_legend(img, present, names)
        name = f"overlay_{k:02d}_{int(posed.stamp_ns)}.png"
        paths.append(atomic_write(Path(out_dir) / name, lambda p, im=pil: im.save(p, format="PNG")))
    return paths
