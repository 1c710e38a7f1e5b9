"""``vl2spike map build``: image folder or bag -> place map folder (FAISS index + JSON).

A bag whose pose topic is ``sensor_msgs/NavSatFix`` gives places east/north/up metres from its
first fix, recorded as the map's ``geo_origin`` (matches can then be reported as lat/lon).

The map folder is replaced atomically (``--overwrite``): a crash leaves the old map or the new
one (see :mod:`vl2spike_ros.vpr.placemap`).
"""
from __future__ import annotations

from dataclasses import dataclass

from vl2spike_ros.cli.cmd_replay import add_max_pixels_option


@dataclass(frozen=True)
class MapBuildOptions:
    """Options of ``vl2spike map build`` besides source, output folder and weights."""

    factory: str = "Flat"
    topic: str | None = None
    pose_topic: str | None = None
    every: int = 1
    overwrite: bool = False
    max_pixels: int | None = None  # None: vl2spike_ros.io.decode.DEFAULT_MAX_PIXELS


def register(subparsers) -> None:
    p = subparsers.add_parser("map", help="build or inspect place maps")
    sub = p.add_subparsers(dest="map_cmd", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="describe a folder/bag and write a map folder")
    b.add_argument("source", help="image folder (natural order) or ROS 2 bag")
    b.add_argument("--out", required=True, help="map folder to write")
    b.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    b.add_argument("--factory", default="Flat",
                   help="FAISS factory string (Flat = exact; e.g. HNSW32, IVF1024,PQ32)")
    b.add_argument("--topic", default=None, help="image topic (bags)")
    b.add_argument("--pose-topic", default=None,
                   help="pose topic (bags; default: the only one). NavSatFix: places in metres "
                        "from the first fix, recorded as the map's geo origin")
    b.add_argument("--every", type=int, default=1, help="use every N-th frame")
    b.add_argument("--json", default=None, metavar="PATH", help="write a summary JSON")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an existing map in --out (atomically: old or new, never a mix)")
    add_max_pixels_option(b)
    b.set_defaults(func=_build)
    i = sub.add_parser("info", help="print a map's metadata")
    i.add_argument("map_dir", help="map folder (vl2spike map build)")
    i.add_argument("--json", default=None, metavar="PATH",
                   help="also write the printed metadata to this JSON file")
    i.set_defaults(func=_info)


def build_map_from_source(source: str, out: str, weights: str | None = None,
                          options: MapBuildOptions | None = None) -> dict:
    """Build and save a map; return a summary dict.

    An existing map in ``out`` raises ``FileExistsError`` unless ``options.overwrite``.
    """
    import time
    from pathlib import Path

    from vl2spike_ros.vpr.placemap import META_FILE

    from vl2spike_ros.vpr.pipeline import build_map
    from vl2spike_ros.vpr.place import load_place_descriptor
    from vl2spike_ros.data.sources import load_source
    from vl2spike_ros.io.decode import DEFAULT_MAX_PIXELS

    o = options or MapBuildOptions()
    if o.every < 1:
        raise ValueError(f"--every must be >= 1, got {o.every}")
    if (Path(out) / META_FILE).exists() and not o.overwrite:
        raise FileExistsError(f"{out} holds a map already (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    place = load_place_descriptor(weights)
    seq = load_source(source, size=place.settings.img_size, topic=o.topic,
                      pose_topic=o.pose_topic, every=o.every,
                      max_pixels=DEFAULT_MAX_PIXELS if o.max_pixels is None else o.max_pixels)
    pm = build_map(place, seq.images, seq.metas, o.factory)
    if seq.geo_origin is not None:  # NavSatFix poses: east/north metres from the first fix
        pm.set_geo_origin(*seq.geo_origin)
    pm.save(out)
    res = {"map": str(out), "source": str(source), "n_places": len(pm), "factory": o.factory,
           "model": pm.model_meta, "with_poses": seq.xy is not None,
           "seconds": round(time.perf_counter() - t0, 3)}
    if pm.geo_origin is not None:
        res["geo_origin"] = pm.geo_origin_json()
    return res


def _build(ns) -> int:
    from vl2spike_ros.atomic import write_json_atomic

    res = build_map_from_source(ns.source, ns.out, ns.weights, MapBuildOptions(
        ns.factory, ns.topic, ns.pose_topic, ns.every, ns.overwrite, ns.max_pixels))
    if ns.json:
        write_json_atomic(ns.json, res)
    print(f"map {res['map']}: {res['n_places']} places ({res['factory']}, "
          f"{res['model']['variant']} {res['model']['weights_hash']}) in {res['seconds']} s")
    return 0


def _info(ns) -> int:
    import json

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.vpr.placemap import PlaceMap

    pm = PlaceMap.load(ns.map_dir)
    info = {"map": ns.map_dir, "n_places": len(pm), "dim": pm.dim, "factory": pm.factory,
            "model": pm.model_meta}
    if pm.geo_origin is not None:
        info["geo_origin"] = pm.geo_origin_json()
    if ns.json:
        write_json_atomic(ns.json, info)
    print(json.dumps(info, indent=2))
    return 0
