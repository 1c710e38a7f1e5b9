"""GNSS end to end: lat/lon <-> local metres, the map's geodetic origin, map build and replay."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from vl2spike_ros.io.poses import latlon_to_local, local_to_latlon
from vl2spike_ros.vpr.placemap import MapFormatError, PlaceMap

WGS84_A, WGS84_F = 6_378_137.0, 1 / 298.257223563
META = {"variant": "spikformer_vpr", "weights_hash": "abc", "descriptor_dim": 8,
        "input_size": [1, 32, 64]}


def _ecef(lat, lon):
    """Exact WGS84 Earth-centred coordinates ``[N, 3]`` of points on the ellipsoid."""
    la, lo = np.radians(lat), np.radians(lon)
    e2 = WGS84_F * (2 - WGS84_F)
    n = WGS84_A / np.sqrt(1 - e2 * np.sin(la) ** 2)
    return np.stack([n * np.cos(la) * np.cos(lo), n * np.cos(la) * np.sin(lo),
                     n * (1 - e2) * np.sin(la)], axis=-1)


def _disc(lat0, lon0, radius_m, n=400, seed=0):
    """``n`` random points (lat, lon) within about ``radius_m`` of the origin."""
    rng = np.random.default_rng(seed)
    r, t = radius_m * np.sqrt(rng.random(n)), rng.random(n) * 2 * np.pi
    lat = lat0 + np.degrees(r * np.sin(t) / 6_371_000.0)
    lon = lon0 + np.degrees(r * np.cos(t) / (6_371_000.0 * math.cos(math.radians(lat0))))
    return lat, lon


@pytest.mark.parametrize("origin", [(60.0, 10.0, 5.0), (-33.9, 151.2, 40.0), (0.0, 0.0, 0.0),
                                    (51.5, -0.1, 0.0), (-17.0, 179.99, 3.0)])
def test_latlon_round_trip_within_1e_6_degrees_over_km(origin):
    lat, lon = _disc(origin[0], origin[1], 5000.0)
    lon = (lon + 180.0) % 360.0 - 180.0  # the last origin's disc crosses the antimeridian
    alt = np.linspace(-20.0, 80.0, lat.size)
    enu = latlon_to_local(lat, lon, alt, origin)
    assert np.abs(enu[:, :2]).max() < 6000.0
    back = local_to_latlon(enu[:, 0], enu[:, 1], enu[:, 2], origin)
    np.testing.assert_allclose(back[:, 0], lat, atol=1e-6, rtol=0)
    dlon = (back[:, 1] - lon + 180.0) % 360.0 - 180.0
    assert np.abs(dlon).max() < 1e-6
    np.testing.assert_allclose(back[:, 2], alt, atol=1e-6)


@pytest.mark.parametrize("lat0,radius,bound", [(60.0, 5000.0, 1e-3), (45.0, 1000.0, 1e-4),
                                               (0.0, 10000.0, 2e-6)])
def test_local_distances_match_wgs84_within_the_documented_bound(lat0, radius, bound):
    """Relative error of distances in the local frame ~ D tan|lat0| / 2R (io.poses docstring)."""
    lat, lon = _disc(lat0, 10.0, radius, seed=1)
    enu = latlon_to_local(lat, lon, np.zeros_like(lat), (lat0, 10.0, 0.0))
    i, j = np.triu_indices(lat.size, 1)
    keep = slice(0, 20000)
    i, j = i[keep], j[keep]
    chord = np.linalg.norm(_ecef(lat[i], lon[i]) - _ecef(lat[j], lon[j]), axis=1)
    local = np.linalg.norm(enu[i, :2] - enu[j, :2], axis=1)
    rel = np.abs(local - chord) / np.maximum(chord, 1.0)
    assert rel.max() < bound, rel.max()


def test_origin_near_a_pole_is_refused():
    with pytest.raises(ValueError, match="within \\+-89"):
        latlon_to_local([89.5], [0.0], [0.0], (89.5, 0.0, 0.0))
    with pytest.raises(ValueError, match="origin latitude"):
        local_to_latlon([0.0], [0.0], [0.0], (float("nan"), 0.0, 0.0))


# --------------------------------------------------------------------------- map geo origin
def _unit(n, d=8):
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_map_saves_and_loads_its_geo_origin(tmp_path):
    pm = PlaceMap(8, META)
    pm.add(_unit(3))
    pm.save(tmp_path / "plain")
    assert PlaceMap.load(tmp_path / "plain").geo_origin is None  # older maps: no origin
    assert "geo_origin" not in json.loads((tmp_path / "plain" / "map.json").read_text())
    pm.set_geo_origin(60.5, -3.25, 12.0)
    pm.save(tmp_path / "geo")
    back = PlaceMap.load(tmp_path / "geo", expect_model_meta=META)
    assert back.geo_origin == (60.5, -3.25, 12.0)
    assert json.loads((tmp_path / "geo" / "map.json").read_text())["geo_origin"] == {
        "lat": 60.5, "lon": -3.25, "alt": 12.0}


@pytest.mark.parametrize("value,message", [
    ("60,10", "field 'geo_origin' must be an object"),
    ({"lat": 60.0, "lon": 10.0}, "must have exactly the keys lat, lon, alt, got lat, lon"),
    ({"lat": 60.0, "lon": 10.0, "alt": 0.0, "x": 1}, "exactly the keys"),
    ({"lat": 91.0, "lon": 10.0, "alt": 0.0}, r"'geo_origin.lat' must be a number in \[-90, 90\]"),
    ({"lat": 60.0, "lon": "10", "alt": 0.0}, "'geo_origin.lon' must be a number"),
    ({"lat": 60.0, "lon": 10.0, "alt": True}, "'geo_origin.alt' must be a number"),
    ({"lat": 60.0, "lon": 10.0, "alt": None}, "'geo_origin.alt' must be a number"),
])
def test_geo_origin_schema_gives_one_clear_line(tmp_path, value, message):
    pm = PlaceMap(8, META)
    pm.add(_unit(2))
    pm.set_geo_origin(60.0, 10.0, 0.0)
    pm.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "map.json").read_text())
    meta["geo_origin"] = value
    (tmp_path / "m" / "map.json").write_text(json.dumps(meta))
    with pytest.raises(MapFormatError, match=message) as ei:
        PlaceMap.load(tmp_path / "m")
    assert "\n" not in str(ei.value) and "map.json" in str(ei.value)
    with pytest.raises(MapFormatError, match="must be a number"):
        pm.set_geo_origin(float("nan"), 0.0)


# --------------------------------------------------------------------------- map build + replay
N = 12  # > 5 evidence frames + the +-2 neighbourhood: matches can be accepted
FIXES = [(59.9139 + 0.0004 * i, 10.7522 + 0.0003 * i, 20.0 + i) for i in range(N)]


@pytest.fixture(scope="module")
def gnss(tmp_path_factory):
    """Tiny weights, a bag with NavSatFix poses, and the map built from it."""
    import torch

    from vl2spike_ros.cli.cmd_map import build_map_from_source
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag
    from vl2spike_ros.models import calibrate_bn, create_model, save_model
    from vl2spike_ros.vpr.descriptors import preprocess

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("gnss")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 64), dtype=np.uint8) for _ in range(N)]
    torch.manual_seed(0)
    model = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=16)
    calibrate_bn(model, [preprocess(np.stack(frames), (32, 64), 1)])
    weights = save_model(model.eval(), tmp / "w.safetensors", {"vpr": {"descriptor": "pooled"}})
    opts = BagWriteOptions(pose_type="navsatfix", pose_topic="/fix", start_ns=10**18)
    write_image_bag(tmp / "bag", frames, opts, FIXES)
    write_image_bag(tmp / "qbag", frames[2:], opts, FIXES[2:])  # a run starting 2 places on
    info = build_map_from_source(str(tmp / "bag"), str(tmp / "map"), weights=str(weights))
    return {"tmp": tmp, "weights": weights, "info": info, "frames": frames}


def test_map_build_from_a_navsatfix_bag_records_the_origin(gnss):
    from vl2spike_ros.cli import main

    assert gnss["info"]["geo_origin"] == dict(zip(("lat", "lon", "alt"), FIXES[0]))
    pm = PlaceMap.load(gnss["tmp"] / "map")
    assert pm.geo_origin == FIXES[0]
    fixes = np.array(FIXES)
    want = latlon_to_local(fixes[:, 0], fixes[:, 1], fixes[:, 2], FIXES[0])  # the one conversion
    got = np.array([pm.place(i)["pose"][:3] for i in range(N)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[-1, 1] == pytest.approx(0.0004 * (N - 1) * 111_195, rel=5e-3)  # ~222 m north
    out = gnss["tmp"] / "info.json"
    assert main(["map", "info", str(gnss["tmp"] / "map"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["geo_origin"]["lat"] == FIXES[0][0]


def test_replay_reports_lat_lon_of_matches(gnss):
    """CSV: lat/lon/alt of each best place; JSON: origin, accepted matches; map-frame queries."""
    from vl2spike_ros.cli import main

    tmp = gnss["tmp"]
    csv_path, json_path = tmp / "matches.csv", tmp / "replay.json"
    rc = main(["replay", str(tmp / "qbag"), "--map", str(tmp / "map"), "--weights",
               str(gnss["weights"]), "--radius", "5", "--gt", "radius", "--threshold", "-1",
               "--margin", "0", "--csv", str(csv_path), "--json", str(json_path)])
    assert rc == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == N - 2 and {"lat", "lon", "alt"} <= set(rows[0])
    assert [int(r["best_id"]) for r in rows] == list(range(2, N))  # the same frames
    for r in rows:  # each frame's best place is reported with that place's own fix
        lat, lon, alt = FIXES[int(r["best_id"])]
        assert float(r["lat"]) == pytest.approx(lat, abs=1e-9)
        assert float(r["lon"]) == pytest.approx(lon, abs=1e-9)
        assert float(r["alt"]) == pytest.approx(alt, abs=1e-6)
    out = json.loads(json_path.read_text())
    assert out["geo_origin"] == dict(zip(("lat", "lon", "alt"), FIXES[0]))
    accepted = [r for r in rows if r["accepted"] == "True"]
    assert accepted and len(out["accepted_latlon"]) == len(accepted)
    for a in out["accepted_latlon"]:
        assert [a["lat"], a["lon"]] == pytest.approx(FIXES[a["best_id"]][:2], abs=1e-9)
    # the query bag's fixes are measured from the map's origin, not from its own first fix
    # (that would shift every query by two places, ~95 m, and fail the 5 m radius)
    assert out["metrics"]["ground_truth"] == "radius 5.0 m"
    assert out["metrics"]["recall"]["r1"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- node helpers
def test_node_geo_helpers_map_fixes_and_build_match_fixes():
    pytest.importorskip("sensor_msgs.msg")
    from sensor_msgs.msg import NavSatFix, NavSatStatus
    from std_msgs.msg import Header

    from vl2spike_ros.ros import geo
    from vl2spike_ros.ros.messages import covariance_scale

    def fix(lat, lon, alt=float("nan"), status=NavSatStatus.STATUS_FIX):
        msg = NavSatFix(latitude=lat, longitude=lon, altitude=alt)
        msg.status.status = status
        return msg

    assert geo.fix_of(fix(60.0, 10.0, status=NavSatStatus.STATUS_NO_FIX)) is None
    assert geo.fix_of(fix(float("nan"), 10.0)) is None
    first = geo.fix_of(fix(*FIXES[0][:2]))
    assert first == (FIXES[0][0], FIXES[0][1], 0.0)  # unknown altitude: 0
    pm = PlaceMap(8, META)
    pos, quat, frame = geo.mapping_pose(first, pm)  # no origin yet: the first fix sets it
    assert pm.geo_origin == first and pos == [0.0, 0.0, 0.0] and quat == [0, 0, 0, 1]
    assert frame == ""  # the node puts map_frame_id
    later = geo.fix_of(fix(*FIXES[3]))
    pos, _, _ = geo.mapping_pose(later, pm)
    np.testing.assert_allclose(pos, latlon_to_local([FIXES[3][0]], [FIXES[3][1]], [FIXES[3][2]],
                                                    first)[0])
    odom = ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0], "odom")
    assert geo.mapping_pose(odom, pm) == odom and pm.geo_origin == first
    msg = geo.make_fix_msg(Header(frame_id="camera"), first, pos, 0.5, 2.0)
    assert (msg.latitude, msg.longitude) == pytest.approx(FIXES[3][:2], abs=1e-9)
    assert msg.altitude == pytest.approx(FIXES[3][2])
    assert msg.header.frame_id == "camera" and msg.status.status == NavSatStatus.STATUS_FIX
    assert list(msg.position_covariance)[::4] == pytest.approx([2.0 * covariance_scale(0.5)] * 3)
    assert msg.position_covariance_type == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    assert geo.map_origin(None) is None
