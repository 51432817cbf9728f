"""Evaluation metrics against brute-force references, hand-worked cases and properties."""

import json
import math
from collections import defaultdict

import numpy as np
import pyarrow.csv as pv
import pytest
import torch
from scipy import stats
from torchrec.metrics.auc import compute_auc

from protorec.pipeline.metrics import (
    GroupedMetric,
    auc,
    compute_metrics,
    gauc,
    logloss,
    mae,
    metrics_markdown,
    ndcg_at_k,
    rmse,
    xauc,
    xgauc,
)

# ---------------------------------------------------------------------------------------
# Plain-Python references, O(n^2) / per group, written from the definitions.


def ref_xauc(truth, pred):
    """Share of pairs with different truths ordered alike by pred; pred ties 1/2."""
    good = pairs = 0.0
    n = len(truth)
    for i in range(n):
        for j in range(i + 1, n):
            if truth[i] == truth[j]:
                continue
            pairs += 1
            if pred[i] == pred[j]:
                good += 0.5
            elif (pred[i] < pred[j]) == (truth[i] < truth[j]):
                good += 1
    return good / pairs if pairs else math.nan


def ref_auc(labels, scores):
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    if not pos or not neg:
        return math.nan
    credit = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return credit / (len(pos) * len(neg))


def split_by_group(groups, *columns):
    out = defaultdict(lambda: tuple([] for _ in columns))
    for row, g in enumerate(groups):
        for col, values in zip(out[g], columns):
            col.append(values[row])
    return out


def ref_weighted(metric, truth, pred, groups):
    """Group-size-weighted mean of metric over groups where it is defined, and skips."""
    total = weight = 0.0
    skipped = 0
    for t, p in split_by_group(groups, truth, pred).values():
        value = metric(t, p)
        if math.isnan(value):
            skipped += 1
        else:
            total += len(t) * value
            weight += len(t)
    return (total / weight if weight else math.nan), skipped


def ref_ndcg(labels, scores, groups, k):
    """Mean NDCG@k over groups with a positive; ranks by score desc, negatives first in ties."""
    values, skipped = [], 0
    for y, s in split_by_group(groups, labels, scores).values():
        if sum(y) == 0:
            skipped += 1
            continue
        ranked = [label for _, label in sorted(zip(s, y), key=lambda r: (-r[0], r[1]))]
        dcg = sum(label / math.log2(i + 2) for i, label in enumerate(ranked[:k]))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, int(sum(y)))))
        values.append(dcg / idcg)
    return (sum(values) / len(values) if values else math.nan), skipped


def tied_data(seed, n=80):
    """Random rows with many ties in labels, truths, scores and groups."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    scores = rng.integers(0, 6, n) / 5.0
    truth = rng.integers(0, 40, n).astype(float)  # up to 40 distinct: several rank bits
    pred = rng.integers(0, 8, n).astype(float)
    groups = rng.integers(0, 9, n)
    return labels, scores, truth, pred, groups


SEEDS = range(6)

# ---------------------------------------------------------------------------------------
# Against the references on tied random data.


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_and_xauc_match_brute_force(seed):
    labels, scores, truth, pred, _ = tied_data(seed)
    assert auc(labels, scores) == pytest.approx(ref_auc(labels, scores), abs=1e-12)
    assert xauc(truth, pred) == pytest.approx(ref_xauc(truth, pred), abs=1e-12)
    # AUC is XAUC with a binary truth.
    assert auc(labels, scores) == pytest.approx(ref_xauc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_grouped_metrics_match_per_group_references(seed):
    labels, scores, truth, pred, groups = tied_data(seed)
    got = gauc(labels, scores, groups)
    want, skipped = ref_weighted(ref_auc, labels, scores, groups)
    assert got.value == pytest.approx(want, abs=1e-12)
    assert (got.skipped, got.groups + got.skipped) == (skipped, len(set(groups)))

    got = xgauc(truth, pred, groups)
    want, skipped = ref_weighted(ref_xauc, truth, pred, groups)
    assert got.value == pytest.approx(want, abs=1e-12)
    assert got.skipped == skipped

    for k in (1, 3, 10, 100):
        got = ndcg_at_k(labels, scores, groups, k=k)
        want, skipped = ref_ndcg(labels, scores, groups, k)
        assert got.value == pytest.approx(want, abs=1e-12)
        assert (got.skipped, got.groups + got.skipped) == (skipped, len(set(groups)))


def test_xauc_many_rank_bits_against_numpy_pairs():
    """Thousands of distinct truths (12 bits) and big groups, against an O(n^2) count."""
    rng = np.random.default_rng(0)
    n = 1500
    truth = np.round(rng.gamma(1.0, 1000.0, n))
    pred = np.round(truth + rng.normal(0, 800, n), -2)  # ties in pred
    groups = rng.integers(0, 3, n)

    def pairwise(t, p):
        dt = np.sign(t[:, None] - t[None, :])
        dp = np.sign(p[:, None] - p[None, :])
        pairs = dt != 0
        credit = ((dt == dp) & pairs).sum() + 0.5 * ((dp == 0) & pairs).sum()
        return credit / pairs.sum()

    assert xauc(truth, pred) == pytest.approx(pairwise(truth, pred), abs=1e-12)
    sizes = np.bincount(groups)
    want = sum(sizes[g] * pairwise(truth[groups == g], pred[groups == g]) for g in range(3))
    assert xgauc(truth, pred, groups).value == pytest.approx(want / n, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Hand-worked cases.


def test_hand_worked_four_rows():
    # labels 1,0,1,0 with scores 0.9,0.5,0.5,0.1: positive/negative pairs
    # (0.9,0.5)=1, (0.9,0.1)=1, (0.5,0.5)=1/2, (0.5,0.1)=1  ->  AUC = 3.5/4.
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == 0.875
    # NDCG@2 on that list: ties put the negative first, so the ranks are
    # 1: pos(0.9), 2: neg(0.5), 3: pos(0.5)  ->  DCG@2 = 1, IDCG@2 = 1 + 1/log2(3).
    got = ndcg_at_k([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1], [0, 0, 0, 0], k=2)
    assert got.value == pytest.approx(1 / (1 + 1 / math.log2(3)), abs=1e-15)
    # XAUC: truths 1,2,2,3 and predictions 1,3,2,2; pairs with different truths:
    # (1,2): 1<3 yes, (1,2'): 1<2 yes, (1,3): 1<2 yes, (2,3): 3>2 no, (2',3): 2=2 half.
    assert xauc([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(3.5 / 5, abs=1e-15)
    # logloss of p = 0.8 on a click and 0.25 on a non-click: -(ln 0.8 + ln 0.75) / 2.
    assert logloss([1, 0], [0.8, 0.25]) == pytest.approx(-(math.log(0.8) + math.log(0.75)) / 2)
    assert mae([0, 0, 0, 0], [1, -1, 2, 0]) == 1.0
    assert rmse([0, 0, 0, 0], [1, -1, 2, 0]) == pytest.approx(math.sqrt(6 / 4))


def test_gauc_weights_groups_by_row_count():
    # group a: 3 rows, AUC 1 (pos 0.9 over negs 0.1, 0.2); group b: 2 rows, AUC 0;
    # group c: one class only, skipped. Weighted: (3*1 + 2*0) / 5.
    got = gauc(
        [1, 0, 0, 1, 0, 1, 1],
        [0.9, 0.1, 0.2, 0.1, 0.8, 0.5, 0.6],
        ["a", "a", "a", "b", "b", "c", "c"],
    )
    assert got == GroupedMetric(value=0.6, groups=2, skipped=1)


# ---------------------------------------------------------------------------------------
# Properties.


def test_auc_perfect_reversed_constant_and_undefined():
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])
    assert auc(labels, scores) == 1.0
    assert auc(labels, -scores) == 0.0
    assert auc(labels, np.full(6, 0.4)) == 0.5
    assert math.isnan(auc(np.ones(6), scores))
    assert math.isnan(auc([], []))


@pytest.mark.parametrize("seed", SEEDS)
def test_xauc_invariant_to_monotone_transform_of_pred(seed):
    _, _, truth, pred, groups = tied_data(seed)
    base = xauc(truth, pred)
    for transform in (np.exp, lambda x: 3 * x - 7, lambda x: x**3, np.arctan):
        assert xauc(truth, transform(pred)) == pytest.approx(base, abs=1e-12)
        assert xgauc(truth, transform(pred), groups) == xgauc(truth, pred, groups)
    # Reversing the prediction's order mirrors XAUC around 1/2.
    assert xauc(truth, -pred) == pytest.approx(1 - base, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_gauc_with_one_group_equals_auc(seed):
    labels, scores, *_ = tied_data(seed)
    got = gauc(labels, scores, np.zeros(len(labels)))
    assert got.value == pytest.approx(auc(labels, scores), abs=1e-15)
    assert (got.groups, got.skipped) == (1, 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_do_not_depend_on_row_order(seed):
    labels, scores, truth, pred, groups = tied_data(seed)
    perm = np.random.default_rng(seed + 100).permutation(len(labels))
    assert auc(labels[perm], scores[perm]) == auc(labels, scores)
    assert xauc(truth[perm], pred[perm]) == xauc(truth, pred)
    for fn, a, b in ((gauc, labels, scores), (xgauc, truth, pred), (ndcg_at_k, labels, scores)):
        got, want = fn(a[perm], b[perm], groups[perm]), fn(a, b, groups)
        assert got.value == pytest.approx(want.value, abs=1e-12)
        assert (got.groups, got.skipped) == (want.groups, want.skipped)


def test_ndcg_ties_never_earn_credit_and_perfect_order_scores_one():
    labels = [0, 1, 0, 1, 0]
    # Constant scores rank both positives last: DCG@5 = 1/log2(5) + 1/log2(6).
    idcg = 1 + 1 / math.log2(3)
    got = ndcg_at_k(labels, [0.5] * 5, [1] * 5, k=5)
    assert got.value == pytest.approx((1 / math.log2(5) + 1 / math.log2(6)) / idcg)
    assert ndcg_at_k(labels, labels, [1] * 5, k=2).value == 1.0
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(labels, labels, [1] * 5, k=0)


def test_xauc_undefined_without_two_distinct_truths():
    assert math.isnan(xauc([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
    got = xgauc([3.0, 3.0, 1.0], [1.0, 2.0, 3.0], [1, 1, 2])
    assert math.isnan(got.value) and (got.groups, got.skipped) == (0, 2)


def test_logloss_clamps_confident_misses_to_eps():
    eps = 1e-7
    assert logloss([1, 0], [0.0, 1.0], eps=eps) == pytest.approx(-math.log(eps))
    assert logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - eps))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auc([0, 2], [0.1, 0.2]), "labels must be 0/1"),
        (lambda: auc([0, 1], [0.1, math.nan]), "scores has 1 non-finite"),
        (lambda: auc([0, 1], [0.1]), "scores has 1 rows, expected 2"),
        (lambda: logloss([0, 1], [0.1, 1.5]), r"probs must lie in \[0, 1\]"),
        (lambda: xgauc([1.0, 2.0], [1.0, 2.0], [1]), "groups must be 1-D with 2 rows"),
    ],
)
def test_bad_input_is_an_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------
# Against torchrec and scipy.


def test_auc_matches_torchrec_compute_auc_without_ties():
    """Torchrec integrates row by row, so it agrees with ours exactly when no score ties."""
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.2).astype(np.float64)
    scores = rng.random(500)
    ours = auc(labels, scores)
    theirs = compute_auc(
        1,
        [torch.from_numpy(scores)[None]],
        [torch.from_numpy(labels)[None]],
        [torch.ones(1, 500, dtype=torch.float64)],
    )
    assert ours == pytest.approx(float(theirs[0]), abs=1e-12)


def real_kuairand(shared_data):
    path = shared_data / "kuairand" / "kuairand27k_likehate_kcore15.tsv"
    table = pv.read_csv(path, parse_options=pv.ParseOptions(delimiter="\t"))
    return {c: table[c].to_numpy() for c in ("user_id", "is_click", "play_time_ms", "duration_ms")}


def kendall_xauc(truth, pred):
    """XAUC from scipy's Kendall tau-b.

    C - D = tau_b * sqrt(n_t * n_p) and XAUC = 1/2 + (C - D) / (2 n_t), with n_t, n_p the
    numbers of pairs untied in truth and in pred.
    """
    n = len(truth)

    def untied(x):
        counts = np.unique(x, return_counts=True)[1].astype(float)
        return n * (n - 1) / 2 - np.sum(counts * (counts - 1) / 2)

    n_t, n_p = untied(truth), untied(pred)
    tau = stats.kendalltau(truth, pred, variant="b").statistic
    return 0.5 + tau * math.sqrt(n_t * n_p) / (2 * n_t)


def test_real_kuairand_watch_time_against_scipy(shared_data):
    """Duration as a predictor on the real KuaiRand rows, against scipy.

    Heavy ties (18% of durations are 0): XAUC and XGAUC against Kendall's tau-b, AUC of
    duration for clicks against the Mann-Whitney U statistic (midranks: ties count 1/2).
    """
    rows = real_kuairand(shared_data)
    watch, duration = rows["play_time_ms"].astype(float), rows["duration_ms"].astype(float)
    assert xauc(watch, duration) == pytest.approx(kendall_xauc(watch, duration), abs=1e-9)

    users = rows["user_id"]
    total = weight = 0.0
    for u in np.unique(users)[:150]:  # a subset keeps the scipy loop fast
        m = users == u
        if np.unique(watch[m]).size > 1:
            total += m.sum() * kendall_xauc(watch[m], duration[m])
            weight += m.sum()
    subset = np.isin(users, np.unique(users)[:150])
    got = xgauc(watch[subset], duration[subset], users[subset])
    assert got.value == pytest.approx(total / weight, abs=1e-9)

    click = rows["is_click"].astype(float)
    u_stat = stats.mannwhitneyu(duration[click == 1], duration[click == 0]).statistic
    want = u_stat / ((click == 1).sum() * (click == 0).sum())
    assert auc(click, duration) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------
# The full metrics dict and its table.


def test_compute_metrics_assembles_the_figures_and_is_strict_json():
    rng = np.random.default_rng(3)
    n = 400
    click = (rng.random(n) < 0.3).astype(float)
    p = np.clip(0.3 + 0.3 * (click - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    scenario = rng.integers(0, 2, n)
    scenario[:5] = 2
    click[:5] = 0  # scenario 2: no click, so its AUC is undefined
    user, day = rng.integers(0, 30, n), rng.integers(19000, 19002, n)
    watch = rng.gamma(2.0, 5000.0, n)
    watch[rng.random(n) < 0.1] = np.nan
    pred_watch = np.where(np.isnan(watch), np.nan, watch * rng.uniform(0.5, 1.5, n))
    names = ["feed", "live", "search", "empty"]

    m = compute_metrics(click, p, scenario, user, day, watch, pred_watch, scenario_names=names)
    json.dumps(m, allow_nan=False)  # no NaN anywhere

    o = m["overall"]
    seen = ~np.isnan(watch)
    assert o["samples"] == n and o["label_rate"] == pytest.approx(click.mean())
    assert o["auc"] == auc(click, p)
    assert o["gauc"] == gauc(click, p, user).value
    lists = [f"{u}/{d}/{s}" for u, d, s in zip(user, day, scenario)]
    assert o["ndcg@10"] == pytest.approx(ndcg_at_k(click, p, lists).value, abs=1e-15)
    assert o["logloss"] == logloss(click, p)
    assert (o["watch_samples"], o["watch_unobserved"]) == (seen.sum(), n - seen.sum())
    assert o["xauc"] == xauc(watch[seen], pred_watch[seen])
    assert o["xgauc"] == xgauc(watch[seen], pred_watch[seen], user[seen]).value
    assert o["mae"] == mae(watch[seen], pred_watch[seen])

    live = m["per_scenario"]["live"]
    rows = scenario == 1
    assert live["samples"] == rows.sum()
    assert live["auc"] == auc(click[rows], p[rows])
    assert live["gauc"] == gauc(click[rows], p[rows], user[rows]).value
    assert m["per_scenario"]["search"]["auc"] is None  # undefined, not NaN
    assert m["per_scenario"]["empty"]["samples"] == 0
    defined = {k: b["auc"] for k, b in m["per_scenario"].items() if b["auc"] is not None}
    assert m["worst_scenario_auc"] == min(defined.values())
    assert m["worst_scenario"] == min(defined, key=defined.get)

    table = metrics_markdown(m).splitlines()
    assert table[0].startswith("| scope | samples |") and "XGAUC" in table[0]
    assert [line.split(" | ")[0] for line in table[2:6]] == [
        "| overall",
        "| feed",
        "| live",
        "| search",
    ]
    assert "n/a" in table[5]  # search: AUC undefined
    assert table[-1].startswith(f"worst-scenario AUC: {m['worst_scenario_auc']:.4f}")


def test_compute_metrics_refuses_missing_watch_predictions():
    args = ([0, 1], [0.2, 0.8], [0, 0], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="pred_watch_ms is not"):
        compute_metrics(*args, watch_ms=[1.0, 2.0])
    with pytest.raises(ValueError, match="pred_watch_ms .where watch_ms is observed. has 1"):
        compute_metrics(*args, watch_ms=[1.0, np.nan], pred_watch_ms=[np.nan, 1.0])
    with pytest.raises(ValueError, match="has no name"):
        compute_metrics(*args, scenario_names=[])
    # NaN prediction where the watch time is unobserved is fine: that row is not scored.
    m = compute_metrics(*args, watch_ms=[1.0, np.nan], pred_watch_ms=[2.0, np.nan])
    assert (m["overall"]["watch_unobserved"], m["overall"]["mae"]) == (1, 1.0)
