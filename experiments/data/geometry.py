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
    """The optimal tour of ``points [n, 2]`` (exact dynamic programming over subsets), for n <= HELD_KARP_MAX."""
    return held_karp_batch(np.asarray(points)[None])[0]


def _layers(m: int) -> list[np.ndarray]:
    """Subsets of ``m`` cities as bit masks, grouped by size 2..m (each layer's DP reads only the one before)."""
    masks = np.arange(1 << m)
    sizes = np.array([bin(x).count("1") for x in masks])
    return [masks[sizes == k] for k in range(2, m + 1)]


def held_karp_batch(points: np.ndarray, chunk: int = 512) -> list[list[int]]:
    """Optimal tours of ``points [B, n, 2]`` (all instances the same n <= HELD_KARP_MAX), vectorised over
    instances and over the subsets of one size. City 0 is the start; ``cost[b, S, j]`` is the shortest path
    from 0 through the cities of subset S (of cities 1..n-1) ending at j in S."""
    points = np.asarray(points, np.float64)
    b, n = points.shape[:2]
    if n > HELD_KARP_MAX:
        raise ValueError(f"Held-Karp here is for n <= {HELD_KARP_MAX}, got n={n}")
    if n <= 3:
        return [list(range(n)) for _ in range(b)]
    if b > chunk:
        return [t for s in range(0, b, chunk) for t in held_karp_batch(points[s:s + chunk], chunk)]
    dist = np.linalg.norm(points[:, :, None] - points[:, None], axis=-1)  # [B, n, n]
    m = n - 1
    inner = dist[:, 1:, 1:]  # [B, k, j] between cities 1..n-1
    bits = 1 << np.arange(m)
    cost = np.full((b, 1 << m, m), np.inf)
    parent = np.full((b, 1 << m, m), -1, np.int8)
    cost[:, bits, np.arange(m)] = dist[:, 0, 1:]
    for masks in _layers(m):
        prev = masks[:, None] ^ bits[None]  # [L, j]: the subset before j was added (j must be in the mask)
        # cand[b, l, j, k] = cost[b, prev[l, j], k] + dist(k, j); k outside prev is inf in cost
        cand = cost[:, prev, :] + np.swapaxes(inner, 1, 2)[:, None]
        best = np.argmin(cand, axis=-1)
        value = np.take_along_axis(cand, best[..., None], -1)[..., 0]
        inside = (masks[:, None] & bits[None]) != 0
        cost[:, masks] = np.where(inside[None], value, np.inf)
        parent[:, masks] = np.where(inside[None], best, -1)
    full = (1 << m) - 1
    last = np.argmin(cost[:, full] + dist[:, 1:, 0], axis=-1)  # [B]
    rows, mask = np.arange(b), np.full(b, full)
    order = np.zeros((b, m), np.int64)
    for i in range(m - 1, -1, -1):
        order[:, i] = last + 1
        prev = parent[rows, mask, last].astype(np.int64)
        mask = mask ^ (1 << last)
        last = prev
    return [canonical_tour([0, *row]) for row in order.tolist()]


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


def tsp_batch(points: np.ndarray) -> list[list[int]]:
    """Tours of ``points [B, n, 2]``: exact (batched Held-Karp) for n <= HELD_KARP_MAX, else 2-opt per instance."""
    if points.shape[1] <= HELD_KARP_MAX:
        return held_karp_batch(points)
    return [two_opt(p) for p in np.asarray(points, np.float64)]


def sort(values: np.ndarray) -> list[int]:
    """Indices that sort ``values`` (``[n]`` or ``[n, 1]``) ascending."""
    return [int(i) for i in np.argsort(np.asarray(values).reshape(len(values)), kind="stable")]
