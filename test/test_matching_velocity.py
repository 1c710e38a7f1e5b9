"""Sequence matching over a range of velocities (maps built at a stride, speed changes)."""
import numpy as np
import pytest

from vl2spike_ros.vpr.matching import (SequenceMatcher, parse_velocities, sequence_scores,
                                       velocity_offsets)


def _constant_velocity_reference(sim: np.ndarray, length: int) -> np.ndarray:
    """Compute the velocity-1 scores as before velocities existed (diagonal mean)."""
    sim = np.asarray(sim, dtype=np.float32)
    acc, cnt = sim.copy(), np.ones(sim.shape, dtype=np.float32)
    for lag in range(1, min(length, *sim.shape)):
        acc[lag:, lag:] += sim[:-lag, :-lag]
        cnt[lag:, lag:] += 1.0
    return acc / cnt


@pytest.mark.parametrize("shape", [(30, 20), (4, 40), (25, 3)])
@pytest.mark.parametrize("length", [1, 2, 5, 50])
def test_velocity_one_is_bit_identical_to_constant_velocity(shape, length):
    sim = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(sequence_scores(sim, length),
                                  _constant_velocity_reference(sim, length))
    np.testing.assert_array_equal(sequence_scores(sim, length, parse_velocities("1")),
                                  _constant_velocity_reference(sim, length))


@pytest.mark.parametrize("velocities", ["1", "0.5:2:7", "0.3,3.5", "2"])
def test_streaming_equals_batch_for_every_velocity_set(velocities):
    sim = np.random.default_rng(2).normal(size=(40, 25)).astype(np.float32)
    vel = parse_velocities(velocities)
    m = SequenceMatcher(5, vel)
    rows = np.stack([m.update(r) for r in sim])
    np.testing.assert_array_equal(rows, sequence_scores(sim, 5, vel))


def test_parse_velocities_formats_and_errors():
    assert parse_velocities("1") == (1.0,)
    assert parse_velocities("2,0.5,1,1") == (0.5, 1.0, 2.0)
    assert parse_velocities("0.5:2:7") == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert parse_velocities((1, 0.5)) == (0.5, 1.0) and parse_velocities(1.5) == (1.5,)
    for bad in ("", "fast", "0", "-1", "11", "2:1:3", "0.5:2:0", "nan", "1:2"):
        with pytest.raises(ValueError, match="sequence velocities"):
            parse_velocities(bad)
    with pytest.raises(ValueError, match="1 to 32 values"):
        parse_velocities("0.1:10:40")
    assert velocity_offsets(0.5, 5) == (0, 1, 1, 2, 2)  # halves round up
    assert velocity_offsets(1.0, 4) == (0, 1, 2, 3)


def _stride_route(stride: int, n_places: int = 120, dim: int = 32, noise: float = 2.5,
                  seed: int = 0):
    """Map of ``n_places`` places; queries every frame of a run that is ``stride`` x denser.

    Query frame i shows place ``round(i / stride)`` under heavy noise (aliasing).
    """
    rng = np.random.default_rng(seed)
    places = rng.normal(size=(n_places, dim))
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    truth = np.floor(np.arange((n_places - 1) * stride + 1) / stride + 0.5).astype(int)
    queries = places[truth] + noise * rng.normal(size=(len(truth), dim)) / np.sqrt(dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return (queries @ places.T).astype(np.float32), truth


def _r1(sim: np.ndarray, truth: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(np.argmax(sim, axis=1) - truth) <= 1))


def test_map_built_at_stride_two_needs_the_velocity_range():
    sim, truth = _stride_route(2)
    single = _r1(sim, truth)
    old = _r1(sequence_scores(sim, 5), truth)                                  # velocity 1
    new = _r1(sequence_scores(sim, 5, parse_velocities("0.5:2:7")), truth)     # range
    exact = _r1(sequence_scores(sim, 5, (0.5,)), truth)                        # known stride
    assert old < single + 5          # constant velocity 1 follows the wrong diagonal
    assert new > old + 20 and new > single + 15
    assert exact >= new - 5


def test_velocity_range_costs_little_at_equal_speed():
    sim, truth = _stride_route(1)
    old = _r1(sequence_scores(sim, 5), truth)
    new = _r1(sequence_scores(sim, 5, parse_velocities("0.5:2:7")), truth)
    assert old > _r1(sim, truth) + 10
    assert new > old - 15
