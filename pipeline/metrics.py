"""Evaluation metrics of click and watch-time predictions (docs/design.md, "Outputs").

Pure functions on numpy arrays (float64 inside), then :func:`compute_metrics`, which
assembles the JSON-ready figures of one model's predictions overall and per scenario, and
:func:`metrics_markdown`, which renders them as a table.

Why not ``torchrec.metrics``: its metrics are windowed, stateful accumulators over batches,
and none computes these definitions exactly.

- ``torchrec.metrics.auc.compute_auc`` sorts the scores with ``argsort`` and integrates
  row by row, so a tie's credit depends on the rows' order (not 1/2), and it returns 0.5
  when a class is missing. On scores without ties it equals :func:`auc` (tested).
- ``torchrec.metrics.gauc`` averages sessions unweighted and skips sessions whose
  predictions are all equal; we weight by group size and keep them (AUC 1/2).
- ``torchrec.metrics.xauc`` is O(n^2) per batch, counts pairs with tied truths as
  matches, and counts prediction ties as 0; :func:`xauc` is the docs/design.md definition in
  O(n log n).
- ``torchrec.metrics.ndcg`` has no cut-off ``k`` and builds a (sessions x rows) mask.

So the pair counting is written here (:func:`_pair_counts`), once, for AUC, GAUC, XAUC and
XGAUC alike: AUC is XAUC with a binary truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GroupedMetric",
    "auc",
    "compute_metrics",
    "gauc",
    "logloss",
    "mae",
    "metrics_markdown",
    "ndcg_at_k",
    "rmse",
    "xauc",
    "xgauc",
]


@dataclass(frozen=True)
class GroupedMetric:
    """A metric averaged over groups, with how many groups it used and skipped.

    Args:
        value: the average; NaN when no group qualifies.
        groups: number of groups that entered the average.
        skipped: number of groups left out because the metric is undefined on them.
    """

    value: float
    groups: int
    skipped: int


# ---------------------------------------------------------------------------------------
# Input checks: a metric never drops a row silently, so bad input is an error.


def _float_array(name: str, x, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rows, expected {n}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf)")
    return arr


def _binary_labels(name: str, x, n: int | None = None) -> np.ndarray:
    arr = _float_array(name, x, n)
    bad = int(((arr != 0.0) & (arr != 1.0)).sum())
    if bad:
        raise ValueError(f"{name} must be 0/1, got {bad} other values")
    return arr


def _group_array(name: str, x, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"{name} must be 1-D with {n} rows, got shape {arr.shape}")
    return arr


def _group_ids(*keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids 0..G-1 of the distinct tuples of ``keys`` (all 1-D, same length)."""
    n = keys[0].size
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    order = np.lexsort(keys[::-1])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for key in keys:
        k = key[order]
        new[1:] |= k[1:] != k[:-1]
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, int(new.sum())


# ---------------------------------------------------------------------------------------
# Pair counting.


def _pair_counts(
    truth: np.ndarray, pred: np.ndarray, gid: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group, count the pairs with different truths by how the prediction orders them.

    For each group g, over unordered pairs (i, j) of its rows with ``truth[i] < truth[j]``:
    ``concordant[g]`` counts ``pred[i] < pred[j]``, ``tied[g]`` counts ``pred[i] ==
    pred[j]`` and ``discordant[g]`` counts ``pred[i] > pred[j]``.

    Written by hand because no installed library counts pairs per group in O(n log n)
    (``scipy.stats.kendalltau`` does one group per call). The method is a wavelet-style
    merge sort over the bits of each row's truth rank within its group: a pair with
    ``truth[i] < truth[j]`` is counted exactly once, at the highest bit where the two
    ranks differ (``i`` has 0, ``j`` has 1) and above which they agree. Rows are kept
    sorted by (group, rank prefix, pred); at each bit every 1-row counts the 0-rows of its
    segment with a smaller, equal and larger prediction by prefix sums, then each segment
    is stably split 0-rows first. Each of the log2(max group size) levels is O(n).

    Shapes:
        truth, pred: (n,) float64; gid: (n,) int64 in [0, G)  ->  three (G,) float64
        (integer counts, exact below 2**53).
    """
    n = truth.size
    counts = [np.zeros(n_groups) for _ in range(3)]
    if n < 2:
        return counts[0], counts[1], counts[2]
    pred_rank = np.unique(pred, return_inverse=True)[1].reshape(-1)

    # Dense rank of the truth within each group.
    by_truth = np.lexsort((truth, gid))
    g_sorted, t_sorted = gid[by_truth], truth[by_truth]
    group_start = np.ones(n, dtype=bool)
    group_start[1:] = g_sorted[1:] != g_sorted[:-1]
    value_start = group_start.copy()
    value_start[1:] |= t_sorted[1:] != t_sorted[:-1]
    dense = np.cumsum(value_start) - 1
    rank = np.empty(n, dtype=np.int64)
    rank[by_truth] = dense - dense[group_start][g_sorted]

    positions = np.arange(n)
    order = np.lexsort((pred_rank, gid))
    for bit in range(int(rank.max()).bit_length() - 1, -1, -1):
        g, r, p = gid[order], rank[order], pred_rank[order]
        prefix = r >> (bit + 1)
        one = ((r >> bit) & 1).astype(bool)
        seg_start = np.ones(n, dtype=bool)
        seg_start[1:] = (g[1:] != g[:-1]) | (prefix[1:] != prefix[:-1])
        tie_start = seg_start.copy()
        tie_start[1:] |= p[1:] != p[:-1]

        zeros = np.concatenate(([0], np.cumsum(~one)))  # zeros[i]: 0-rows before position i
        seg_first = np.flatnonzero(seg_start)
        seg_id = np.cumsum(seg_start) - 1
        seg_zeros = zeros[np.append(seg_first[1:], n)] - zeros[seg_first]
        tie_first = np.flatnonzero(tie_start)
        tie_id = np.cumsum(tie_start) - 1
        tie_lo = zeros[tie_first][tie_id]
        tie_hi = zeros[np.append(tie_first[1:], n)][tie_id]
        lo = zeros[seg_first][seg_id]

        less = (tie_lo - lo)[one]
        tied = (tie_hi - tie_lo)[one]
        more = seg_zeros[seg_id][one] - less - tied
        for acc, c in zip(counts, (less, tied, more)):
            acc += np.bincount(g[one], weights=c, minlength=n_groups)

        # Stable split of each segment: its 0-rows first, then its 1-rows.
        start = seg_first[seg_id]
        zeros_before = zeros[:-1] - lo
        new_pos = np.where(
            one,
            start + seg_zeros[seg_id] + (positions - start - zeros_before),
            start + zeros_before,
        )
        new_order = np.empty_like(order)
        new_order[new_pos] = order
        order = new_order
    return counts[0], counts[1], counts[2]


def _share_concordant(
    truth: np.ndarray, pred: np.ndarray, gid: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: (share of concordant pairs with ties 1/2, number of pairs); NaN if none."""
    concordant, tied, discordant = _pair_counts(truth, pred, gid, n_groups)
    pairs = concordant + tied + discordant
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (concordant + 0.5 * tied) / pairs
    return share, pairs


def _weighted_group_mean(truth: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> GroupedMetric:
    gid, n_groups = _group_ids(groups)
    share, pairs = _share_concordant(truth, pred, gid, n_groups)
    used = pairs > 0
    size = np.bincount(gid, minlength=n_groups).astype(np.float64)
    value = float(np.sum(share[used] * size[used]) / size[used].sum()) if used.any() else math.nan
    return GroupedMetric(value, int(used.sum()), int(n_groups - used.sum()))


# ---------------------------------------------------------------------------------------
# Click metrics.


def auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative).

    Exactly: over all (positive, negative) pairs, the share where the positive scores
    higher, a tie in scores counting 1/2 (the Mann-Whitney U statistic / (P * N)).

    Args:
        labels: 0/1 click labels.
        scores: any real scores (probabilities or logits; only their order matters).

    Returns:
        AUC in [0, 1]; NaN when a class is missing (no pair).

    Shapes:
        labels, scores: (B,)  ->  float

    Example:
        >>> auc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8])  # pairs: 1, 1/2, 1, 1 of 4
        0.875
    """
    y = _binary_labels("labels", labels)
    s = _float_array("scores", scores, y.size)
    share, _ = _share_concordant(y, s, np.zeros(y.size, dtype=np.int64), 1)
    return float(share[0])


def gauc(labels, scores, groups) -> GroupedMetric:
    """Group AUC: :func:`auc` within each group, averaged with weights = group row count.

    Exactly: ``sum_g n_g * AUC_g / sum_g n_g`` over the groups g that hold both classes,
    where n_g is the number of rows of group g (all of them, positives and negatives).
    Groups with one class only have no AUC: they are left out and counted as skipped.
    Ties in scores count 1/2 inside each group, as in :func:`auc`.

    Args:
        labels: 0/1 click labels.
        scores: real scores.
        groups: group key per row (any sortable dtype, e.g. user id).

    Returns:
        :class:`GroupedMetric`; value NaN when no group holds both classes.

    Shapes:
        labels, scores, groups: (B,)  ->  GroupedMetric

    Example:
        >>> gauc([0, 1, 1, 0, 1], [0.2, 0.9, 0.1, 0.5, 0.3], groups=[7, 7, 8, 8, 9])
        GroupedMetric(value=0.5, groups=2, skipped=1)
    """
    y = _binary_labels("labels", labels)
    s = _float_array("scores", scores, y.size)
    return _weighted_group_mean(y, s, _group_array("groups", groups, y.size))


def ndcg_at_k(labels, scores, groups, k: int = 10) -> GroupedMetric:
    """Mean NDCG@k over groups (e.g. one list per user, day and scenario).

    Exactly, for each group: rank its rows by score, descending; DCG@k = sum over the
    first k ranks i = 1..k of ``label_i / log2(i + 1)`` (gain = the binary label);
    IDCG@k is the DCG@k of the ideal order (all positives first); NDCG@k = DCG@k / IDCG@k.
    The result is the unweighted mean over groups with at least one positive; groups
    without a positive have no IDCG and are skipped and counted.

    Tie rule (deterministic, independent of row order): among equal scores, negatives rank
    before positives, so ties never earn credit and a constant score gets the worst NDCG.

    Args:
        labels: 0/1 click labels.
        scores: real scores.
        groups: list key per row (any sortable dtype; build one key from several columns).
        k: cut-off, >= 1.

    Returns:
        :class:`GroupedMetric`; value NaN when no group has a positive.

    Shapes:
        labels, scores, groups: (B,)  ->  GroupedMetric

    Example:
        >>> r = ndcg_at_k([0, 1, 1, 0], [0.9, 0.8, 0.3, 0.1], groups=[1, 1, 1, 1], k=2)
        >>> round(r.value, 6)  # DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
        0.386853
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"ndcg_at_k: k must be an integer >= 1, got {k!r}")
    y = _binary_labels("labels", labels)
    s = _float_array("scores", scores, y.size)
    gid, n_groups = _group_ids(_group_array("groups", groups, y.size))
    if n_groups == 0:
        return GroupedMetric(math.nan, 0, 0)
    order = np.lexsort((y, -s, gid))
    g = gid[order]
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    rank = np.arange(g.size) - np.flatnonzero(first)[np.cumsum(first) - 1]  # 0-based
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    top = rank < k
    dcg = np.bincount(g[top], weights=y[order][top] * discount[rank[top]], minlength=n_groups)
    positives = np.bincount(gid, weights=y, minlength=n_groups).astype(np.int64)
    ideal = np.concatenate(([0.0], np.cumsum(discount)))[np.minimum(positives, k)]
    used = positives > 0
    value = float(np.mean(dcg[used] / ideal[used])) if used.any() else math.nan
    return GroupedMetric(value, int(used.sum()), int(n_groups - used.sum()))


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy: ``-mean(y log p + (1 - y) log(1 - p))``.

    Probabilities are clamped to [eps, 1 - eps] inside the logarithm (part of the
    definition: a confident miss costs ``-log(eps)``, not infinity).

    Args:
        labels: 0/1 click labels.
        probs: predicted click probabilities in [0, 1].
        eps: clamp, in (0, 0.5).

    Returns:
        mean log loss in nats; NaN on empty input.

    Shapes:
        labels, probs: (B,)  ->  float

    Example:
        >>> round(logloss([1, 0], [0.5, 0.5]), 6)  # log 2
        0.693147
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"logloss: eps must be in (0, 0.5), got {eps}")
    y = _binary_labels("labels", labels)
    p = _float_array("probs", probs, y.size)
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError(f"probs must lie in [0, 1], got {int(((p < 0) | (p > 1)).sum())} outside")
    if y.size == 0:
        return math.nan
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


# ---------------------------------------------------------------------------------------
# Watch-time metrics.


def mae(truth, pred) -> float:
    """Mean absolute error ``mean |pred - truth|``; NaN on empty input.

    Shapes:
        truth, pred: (B,)  ->  float

    Example:
        >>> mae([1.0, 2.0, 4.0], [2.0, 2.0, 1.0])
        1.3333333333333333
    """
    t = _float_array("truth", truth)
    p = _float_array("pred", pred, t.size)
    return float(np.mean(np.abs(p - t))) if t.size else math.nan


def rmse(truth, pred) -> float:
    """Root mean squared error ``sqrt(mean (pred - truth)^2)``; NaN on empty input.

    Shapes:
        truth, pred: (B,)  ->  float

    Example:
        >>> rmse([0.0, 0.0], [3.0, 4.0])  # sqrt((9 + 16) / 2)
        3.5355339059327378
    """
    t = _float_array("truth", truth)
    p = _float_array("pred", pred, t.size)
    return float(np.sqrt(np.mean((p - t) ** 2))) if t.size else math.nan


def xauc(truth, pred) -> float:
    """XAUC of watch-time predictions (docs/design.md), exact, in O(n log n).

    Exactly: over all unordered pairs of rows with different true watch times, the share
    that the prediction orders the same way as the truth; a tie in predictions counts 1/2.
    Pairs with equal truths are not counted. Not sampled.

    Args:
        truth: true watch times.
        pred: predicted watch times (any monotone transform gives the same XAUC).

    Returns:
        XAUC in [0, 1]; NaN when fewer than 2 distinct truths (no pair).

    Shapes:
        truth, pred: (B,)  ->  float

    Example:
        >>> xauc([1.0, 2.0, 2.0, 3.0], [10.0, 30.0, 20.0, 20.0])  # 3 + 1/2 of 5 pairs
        0.7
    """
    t = _float_array("truth", truth)
    p = _float_array("pred", pred, t.size)
    share, _ = _share_concordant(t, p, np.zeros(t.size, dtype=np.int64), 1)
    return float(share[0])


def xgauc(truth, pred, groups) -> GroupedMetric:
    """XGAUC: :func:`xauc` within each group (user), weighted by the group's row count.

    Exactly: ``sum_g n_g * XAUC_g / sum_g n_g`` over the groups g with at least 2
    distinct true watch times, n_g = all rows of group g; the other groups have no pair
    and are skipped and counted. Prediction ties count 1/2 as in :func:`xauc`.

    Args:
        truth: true watch times.
        pred: predicted watch times.
        groups: group key per row (user id).

    Returns:
        :class:`GroupedMetric`; value NaN when no group qualifies.

    Shapes:
        truth, pred, groups: (B,)  ->  GroupedMetric

    Example:
        >>> xgauc([1.0, 2.0, 5.0, 5.0], [1.0, 0.0, 3.0, 4.0], groups=[1, 1, 2, 2])
        GroupedMetric(value=0.0, groups=1, skipped=1)
    """
    t = _float_array("truth", truth)
    p = _float_array("pred", pred, t.size)
    return _weighted_group_mean(t, p, _group_array("groups", groups, t.size))


# ---------------------------------------------------------------------------------------
# One model's full figures.


def _json_float(x: float) -> float | None:
    """JSON has no NaN: an undefined figure is None."""
    return float(x) if math.isfinite(x) else None


def _click_block(click, p_click, user, list_key, ndcg_k: int) -> dict:
    g = gauc(click, p_click, user)
    r = ndcg_at_k(click, p_click, list_key, k=ndcg_k)
    return {
        "samples": int(click.size),
        "label_rate": _json_float(click.mean()) if click.size else None,
        "auc": _json_float(auc(click, p_click)),
        "gauc": _json_float(g.value),
        "gauc_groups": g.groups,
        "gauc_groups_skipped": g.skipped,
        f"ndcg@{ndcg_k}": _json_float(r.value),
        "ndcg_groups": r.groups,
        "ndcg_groups_skipped": r.skipped,
        "logloss": _json_float(logloss(click, p_click)),
    }


def _watch_block(watch, pred, user) -> dict:
    seen = ~np.isnan(watch)
    t, p = watch[seen], pred[seen]
    g = xgauc(t, p, user[seen])
    return {
        "watch_samples": int(seen.sum()),
        "watch_unobserved": int((~seen).sum()),
        "mae": _json_float(mae(t, p)),
        "rmse": _json_float(rmse(t, p)),
        "xauc": _json_float(xauc(t, p)),
        "xgauc": _json_float(g.value),
        "xgauc_groups": g.groups,
        "xgauc_groups_skipped": g.skipped,
    }


def compute_metrics(
    click,
    p_click,
    scenario,
    user_id,
    day,
    watch_ms=None,
    pred_watch_ms=None,
    scenario_names: Sequence[str] | None = None,
    ndcg_k: int = 10,
) -> dict:
    """All evaluation figures of one model's predictions, overall and per scenario.

    Click figures (every row): samples, label_rate, AUC, GAUC (groups = users; per
    scenario, a user's rows in that scenario), NDCG@k (lists = user x day x scenario),
    logloss, each grouped metric with its number of groups used and skipped.
    Watch figures (when ``watch_ms`` is given): MAE, RMSE, XAUC, XGAUC (groups = users) on
    the rows where ``watch_ms`` is observed (not NaN); ``watch_unobserved`` counts the rest.
    ``worst_scenario_auc`` is the lowest defined per-scenario AUC, ``worst_scenario`` its
    name. The dict is JSON-serialisable: an undefined figure (a class or a pair missing,
    no rows) is ``None``, never NaN. A scenario named in ``scenario_names`` without rows
    is listed with ``samples`` 0.

    Args:
        click: 0/1 click labels.
        p_click: predicted click probabilities in [0, 1].
        scenario: scenario index per row, in [0, S).
        user_id: user key per row.
        day: day key per row (e.g. days since epoch).
        watch_ms: true watch time, NaN where not observed; None for click-only data.
        pred_watch_ms: predicted watch time; required with ``watch_ms`` and finite where
            ``watch_ms`` is observed.
        scenario_names: display name of each scenario index; by default the index.
        ndcg_k: NDCG cut-off (docs/design.md: 10).

    Returns:
        ``{"overall": {...}, "per_scenario": {name: {...}}, "worst_scenario_auc": float |
        None, "worst_scenario": str | None}``.

    Shapes:
        every array: (B,)  ->  dict

    Example:
        >>> m = compute_metrics([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4], scenario=[0, 0, 1, 1],
        ...                     user_id=[1, 1, 2, 2], day=[0, 0, 0, 0],
        ...                     scenario_names=["feed", "live"])
        >>> m["overall"]["auc"], m["per_scenario"]["live"]["auc"], m["worst_scenario"]
        (1.0, 1.0, 'feed')
    """
    y = _binary_labels("click", click)
    n = y.size
    p = _float_array("p_click", p_click, n)
    s = _group_array("scenario", scenario, n).astype(np.int64)
    u = _group_array("user_id", user_id, n)
    d = _group_array("day", day, n)
    if n and s.min() < 0:
        raise ValueError(f"scenario must be an index >= 0, got {int(s.min())}")
    if scenario_names is not None and n and s.max() >= len(scenario_names):
        raise ValueError(
            f"scenario index {int(s.max())} has no name in scenario_names "
            f"({len(scenario_names)} names)"
        )
    watch = pred = None
    if watch_ms is not None:
        if pred_watch_ms is None:
            raise ValueError("watch_ms is given but pred_watch_ms is not")
        watch = np.asarray(watch_ms, dtype=np.float64)
        if watch.shape != (n,):
            raise ValueError(f"watch_ms must have shape ({n},), got {watch.shape}")
        seen = ~np.isnan(watch)
        _float_array("watch_ms (observed rows)", watch[seen])
        pred = np.asarray(pred_watch_ms, dtype=np.float64)
        if pred.shape != (n,):
            raise ValueError(f"pred_watch_ms must have shape ({n},), got {pred.shape}")
        _float_array("pred_watch_ms (where watch_ms is observed)", pred[seen])

    list_key = _group_ids(u, d, s)[0]

    def block(rows: np.ndarray | slice) -> dict:
        out = _click_block(y[rows], p[rows], u[rows], list_key[rows], ndcg_k)
        if watch is not None and pred is not None:
            out.update(_watch_block(watch[rows], pred[rows], u[rows]))
        return out

    indices = range(len(scenario_names)) if scenario_names is not None else np.unique(s)
    per_scenario = {}
    for index in indices:
        name = scenario_names[index] if scenario_names is not None else str(int(index))
        per_scenario[name] = block(s == index)
    defined = {name: b["auc"] for name, b in per_scenario.items() if b["auc"] is not None}
    worst = min(defined, key=lambda name: defined[name]) if defined else None
    return {
        "overall": block(slice(None)),
        "per_scenario": per_scenario,
        "worst_scenario_auc": defined[worst] if worst is not None else None,
        "worst_scenario": worst,
    }


#: Columns of :func:`metrics_markdown`: (key in a block, header, format).
_COLUMNS = (
    ("samples", "samples", "{:d}"),
    ("label_rate", "label rate", "{:.4f}"),
    ("auc", "AUC", "{:.4f}"),
    ("gauc", "GAUC", "{:.4f}"),
    ("ndcg@", "NDCG@", "{:.4f}"),  # the key carries k; matched by prefix
    ("logloss", "logloss", "{:.4f}"),
    ("watch_samples", "watch rows", "{:d}"),
    ("mae", "MAE", "{:.1f}"),
    ("rmse", "RMSE", "{:.1f}"),
    ("xauc", "XAUC", "{:.4f}"),
    ("xgauc", "XGAUC", "{:.4f}"),
)


def metrics_markdown(metrics: dict) -> str:
    """Render :func:`compute_metrics`'s dict as a Markdown table, one row per scope.

    Rows: ``overall``, then each scenario; columns: the figures present in ``overall``
    (watch-time columns only when computed). An undefined figure shows as ``n/a``. A last
    line gives the worst-scenario AUC.

    Shapes:
        metrics: the dict of :func:`compute_metrics`  ->  str (Markdown)

    Example:
        >>> m = compute_metrics([0, 1], [0.3, 0.6], scenario=[0, 0], user_id=[1, 1], day=[0, 0])
        >>> print(metrics_markdown(m).splitlines()[2])
        | overall | 2 | 0.5000 | 1.0000 | 1.0000 | 1.0000 | 0.4338 |
    """
    overall = metrics["overall"]
    columns = []
    for key, header, fmt in _COLUMNS:
        if key.endswith("@"):
            matches = [k for k in overall if k.startswith(key)]
            columns += [(k, header + k[len(key) :], fmt) for k in matches]
        elif key in overall:
            columns.append((key, header, fmt))

    def cell(value, fmt: str) -> str:
        return "n/a" if value is None else fmt.format(value)

    lines = [
        "| scope | " + " | ".join(h for _, h, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    scopes = [("overall", overall), *metrics["per_scenario"].items()]
    for name, block in scopes:
        lines.append(f"| {name} | " + " | ".join(cell(block[k], f) for k, _, f in columns) + " |")
    worst = metrics["worst_scenario_auc"]
    lines.append("")
    lines.append(
        f"worst-scenario AUC: {cell(worst, '{:.4f}')}"
        + (f" ({metrics['worst_scenario']})" if worst is not None else "")
    )
    return "\n".join(lines)
