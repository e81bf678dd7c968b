"""Pointer Network tasks (Vinyals et al. 2015): convex hull, planar TSP, sorting — inputs and exact labels.

Points are uniform in the unit square. Labels come from tools we did not write
where possible: the convex hull from ``scipy.spatial.ConvexHull`` (Qhull);
TSP tours exactly by Held-Karp dynamic programming for n <= 12 (vectorised
over subsets), and by nearest neighbour + 2-opt for larger n (a heuristic, as
the paper's A1-A3); sorting by ``numpy.argsort``. Each label is a list of input
indices in a canonical order: the hull counter-clockwise from its smallest
index; a tour from city 0 in the direction whose second city has the smaller
index.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import ConvexHull

TASKS = ("convex_hull", "tsp", "sort")
HELD_KARP_MAX = 12


def uniform_points(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (batch, n, 2))


def convex_hull(points: np.ndarray) -> list[int]:
    """Hull vertex indices, counter-clockwise, starting from the smallest index."""
    vertices = [int(v) for v in ConvexHull(points).vertices]  # counter-clockwise for 2-D input
    k = vertices.index(min(vertices))
    return vertices[k:] + vertices[:k]


def polygon_area(points: np.ndarray, order) -> float:
    """Shoelace area of the polygon visiting ``points[order]``."""
    p = points[list(order)]
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _segments_cross(a, b, c, d) -> bool:
    def orient(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    return orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0


def hull_coverage(points: np.ndarray, predicted) -> float:
    """Area of the predicted polygon over the true hull's area (the paper's "area coverage"); 0 when the
    prediction is not a simple polygon of at least three distinct points."""
    predicted = list(predicted)
    if len(predicted) < 3 or len(set(predicted)) != len(predicted):
        return 0.0
    m = len(predicted)
    edges = [(points[predicted[i]], points[predicted[(i + 1) % m]]) for i in range(m)]
    for i, j in itertools.combinations(range(m), 2):
        if j - i in (1, m - 1):
            continue  # neighbouring edges share a vertex
        if _segments_cross(*edges[i], *edges[j]):
            return 0.0
    return polygon_area(points, predicted) / polygon_area(points, convex_hull(points))


def tour_length(points: np.ndarray, tour) -> float:
    p = points[list(tour)]
    return float(np.sum(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1)))


def canonical_tour(tour) -> list[int]:
    tour = [int(t) for t in tour]
    k = tour.index(0)
    tour = tour[k:] + tour[:k]
    if len(tour) > 2 and tour[-1] < tour[1]:
        tour = [0] + tour[1:][::-1]
    return tour


def held_karp(points: np.ndarray) -> list[int]:
    """The optimal tour (exact dynamic programming over subsets), for n <= HELD_KARP_MAX."""
    n = len(points)
    if n > HELD_KARP_MAX:
        raise ValueError(f"Held-Karp here is for n <= {HELD_KARP_MAX}, got n={n}")
    if n <= 3:
        return list(range(n))
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    m = n - 1  # city 0 is the start; subsets over cities 1..n-1
    size = 1 << m
    cost = np.full((size, m), np.inf)
    parent = np.full((size, m), -1, np.int64)
    for j in range(m):
        cost[1 << j, j] = dist[0, j + 1]
    for mask in range(1, size):
        row = cost[mask]
        if not np.isfinite(row).any():
            continue
        for k in range(m):
            if mask & (1 << k):
                continue
            cand = row + dist[1:, k + 1]
            j = int(np.argmin(cand))
            new = mask | (1 << k)
            if cand[j] < cost[new, k]:
                cost[new, k], parent[new, k] = cand[j], j
    full = size - 1
    last = int(np.argmin(cost[full] + dist[1:, 0]))
    tour, mask = [], full
    while last >= 0:
        tour.append(last + 1)
        prev = int(parent[mask, last])
        mask ^= 1 << last
        last = prev
    return canonical_tour([0] + tour[::-1])


def two_opt(points: np.ndarray, tour=None) -> list[int]:
    """Nearest-neighbour tour improved by 2-opt until no move shortens it (a heuristic for large n)."""
    n = len(points)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    if tour is None:
        tour, left = [0], set(range(1, n))
        while left:
            nxt = min(left, key=lambda j: dist[tour[-1], j])
            tour.append(nxt)
            left.remove(nxt)
    tour = list(tour)
    improved = True
    while improved:
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                a, b, c, d = tour[i - 1], tour[i], tour[j], tour[(j + 1) % n]
                if dist[a, c] + dist[b, d] < dist[a, b] + dist[c, d] - 1e-12:
                    tour[i:j + 1] = tour[i:j + 1][::-1]
                    improved = True
    return canonical_tour(tour)


def tsp(points: np.ndarray) -> list[int]:
    return held_karp(points) if len(points) <= HELD_KARP_MAX else two_opt(points)


def sort(values: np.ndarray) -> list[int]:
    """Indices that sort ``values`` (``[n]`` or ``[n, 1]``) ascending."""
    return [int(i) for i in np.argsort(np.asarray(values).reshape(len(values)), kind="stable")]
