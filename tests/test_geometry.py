"""Pointer-network labels against brute force on tiny n."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from experiments.data import geometry as geo


def _brute_hull(points):
    """Directed edges (i, j) with every other point strictly to the left: the counter-clockwise hull."""
    n = len(points)
    nxt = {}
    for i, j in itertools.permutations(range(n), 2):
        d = points[j] - points[i]
        others = [k for k in range(n) if k not in (i, j)]
        if all(d[0] * (points[k][1] - points[i][1]) - d[1] * (points[k][0] - points[i][0]) > 0 for k in others):
            nxt[i] = j
    start = min(nxt)
    order = [start]
    while nxt[order[-1]] != start:
        order.append(nxt[order[-1]])
    return order


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10])
def test_convex_hull_matches_brute_force(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        p = geo.uniform_points(rng, 1, n)[0]
        assert geo.convex_hull(p) == _brute_hull(p)
        assert geo.hull_coverage(p, geo.convex_hull(p)) == pytest.approx(1.0)


def test_hull_coverage_rejects_bad_polygons():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float)
    assert geo.hull_coverage(square, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert geo.hull_coverage(square, [0, 1, 2]) == pytest.approx(0.5)
    assert geo.hull_coverage(square, [0, 2, 1, 3]) == 0.0  # self-intersecting
    assert geo.hull_coverage(square, [0, 1, 1]) == 0.0 and geo.hull_coverage(square, [0, 1]) == 0.0


@pytest.mark.parametrize("n", [4, 5, 6, 8])
def test_held_karp_is_optimal_against_all_permutations(n):
    rng = np.random.default_rng(10 + n)
    for _ in range(5):
        p = geo.uniform_points(rng, 1, n)[0]
        best = min(geo.tour_length(p, (0, *perm)) for perm in itertools.permutations(range(1, n)))
        tour = geo.held_karp(p)
        assert sorted(tour) == list(range(n)) and tour[0] == 0 and tour[1] < tour[-1]
        assert geo.tour_length(p, tour) == pytest.approx(best, rel=1e-9)


def test_held_karp_batch_is_optimal_per_instance_across_chunks():
    rng = np.random.default_rng(4)
    p = geo.uniform_points(rng, 7, 7)
    tours = geo.held_karp_batch(p, chunk=3)  # three chunks, the last one short
    assert len(tours) == 7 and geo.tsp_batch(p) == tours
    for pi, tour in zip(p, tours, strict=True):
        best = min(geo.tour_length(pi, (0, *perm)) for perm in itertools.permutations(range(1, 7)))
        assert sorted(tour) == list(range(7)) and tour[0] == 0 and tour[1] < tour[-1]
        assert geo.tour_length(pi, tour) == pytest.approx(best, rel=1e-9)
    assert geo.held_karp_batch(p[:, :3]) == [[0, 1, 2]] * 7


def test_two_opt_is_a_valid_tour_no_shorter_than_optimal():
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = geo.uniform_points(rng, 1, 9)[0]
        tour = geo.two_opt(p)
        assert sorted(tour) == list(range(9)) and tour[0] == 0
        assert geo.tour_length(p, tour) >= geo.tour_length(p, geo.held_karp(p)) - 1e-9
    big = geo.uniform_points(rng, 1, 30)[0]
    assert geo.tsp(big) == geo.two_opt(big)
    with pytest.raises(ValueError, match="Held-Karp"):
        geo.held_karp(big)


def test_sort_and_canonical_tour():
    assert geo.sort(np.array([0.3, 0.1, 0.2])) == [1, 2, 0]
    assert geo.canonical_tour([2, 0, 3, 1]) == [0, 2, 1, 3]  # the cycle 0-3-1-2, read the other way
