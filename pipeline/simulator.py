"""The built-in simulator: a seeded world of users, items and scenarios that writes the contract.

The generative model (every number below is a :class:`SimulatorConfig` field):

* **Items** have a latent interest vector ``v_i`` (dimension D) built from their category,
  their author and their own noise, so ``category_id`` and ``author_id`` carry part of the
  signal; a popularity weight (log-normal, with a slow per-item seasonal drift); a click
  bias (partly correlated with popularity); and a duration (log-normal with KuaiRand's
  impression median and 90th percentile, or the real KuaiRand durations with side tables).
* **Users** have a latent vector ``u_t`` that turns slowly over the days (interest drift),
  a click bias, an activity weight (how many impressions they get) and an activity
  segment (activity quantile; KuaiRand's ``user_active_degree`` with side tables).
* **Scenarios** share user intent (the same affinity ``a = <u_t, v_i> / sqrt(D)`` drives
  all) but differ in exposure (a popularity exponent and a per-category skew) and in
  click behaviour (a bias and a temperature); their share of the day drifts slowly.
* **Click** ~ Bernoulli(sigmoid(base + bias_s + (scale * a + b_u + b_i) / T_s)).
* **Watch time** is observed on every impression (a short-video feed plays what it
  shows, clicked or not): ``watch = ratio * duration`` with the ratio drawn from a
  four-mode mixture -- early skip (Beta near 0), partial (Beta on (0, 1)), complete
  (log-normal around 1) and replay (1 + Gamma) -- whose mode weights depend on the
  duration bucket, on the affinity and on the click, like KuaiRand's watch-ratio
  histogram (``../shared/data/README.md``).

Each row also records ``oracle_p_click`` (the true click probability) and
``oracle_watch_ms`` (the true expected watch time given user, item and scenario, the click
integrated out) for evaluation; no training code reads them.

Everything about day ``d`` is drawn from a generator seeded by ``(seed, d)``, and the world
state of day ``d`` is a closed-form function of ``d`` (no running state), so a day's rows
never depend on which other days were generated, nor in which call.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from protorec.pipeline.contract import ValidationReport, check_columns, split_valid, write_day

#: Columns that hold the simulator's ground truth; only evaluation may read them.
ORACLE_COLUMNS = ("oracle_p_click", "oracle_watch_ms")

#: Watch-ratio modes, in the order of every per-mode config list.
WATCH_MODES = ("skip", "partial", "complete", "replay")

#: KuaiRand ``user_active_degree`` values -> segment (0 = most active); other values -> 3.
KUAIRAND_SEGMENTS = {"full_active": 0, "high_active": 1, "middle_active": 2}
KUAIRAND_NUM_SEGMENTS = 4

USER_TABLE = "user_features_pure.csv"
VIDEO_TABLE = "video_features_basic_pure.csv"

_EPOCH = dt.date(1970, 1, 1)
_DAY_MS = 86_400_000
# Independent generator streams: (seed, stream[, day]).
_WORLD_STREAM, _DAY_STREAM = 0, 1


@dataclass
class ScenarioBehaviour:
    """How one scenario exposes items and how its users click.

    Args:
        share: the scenario's base share of the day's impressions (normalised over all).
        click_bias: added to the click logit.
        click_temperature: divides the user-item part of the click logit (< 1: sharper).
        popularity_exponent: exposure is proportional to ``popularity ** exponent``
            (> 1: head-heavy, < 1: flatter).
        category_skew: standard deviation of the scenario's per-category exposure
            log-weights (0: no category preference).
    """

    share: float
    click_bias: float = 0.0
    click_temperature: float = 1.0
    popularity_exponent: float = 1.0
    category_skew: float = 0.0

    def __post_init__(self) -> None:
        if not self.share > 0:
            raise ValueError("scenario share must be > 0")
        if not self.click_temperature > 0:
            raise ValueError("scenario click_temperature must be > 0")
        if self.popularity_exponent < 0:
            raise ValueError("scenario popularity_exponent must be >= 0")
        if self.category_skew < 0:
            raise ValueError("scenario category_skew must be >= 0")


def _default_scenarios() -> list[ScenarioBehaviour]:
    # feed, featured, channel, live, search: different exposure and click habits.
    return [
        ScenarioBehaviour(share=0.45),
        ScenarioBehaviour(0.20, click_bias=0.4, click_temperature=0.8, popularity_exponent=1.4),
        ScenarioBehaviour(0.15, click_bias=-0.3, click_temperature=1.2, category_skew=1.5),
        ScenarioBehaviour(0.10, click_bias=-0.8, popularity_exponent=1.8, category_skew=0.5),
        ScenarioBehaviour(0.10, click_bias=0.8, click_temperature=0.7, popularity_exponent=0.4),
    ]


@dataclass
class WatchConfig:
    """The watch-ratio mixture: per-bucket mode weights and the shape of each mode.

    Mode order everywhere: skip, partial, complete, replay. Mode weights are
    ``softmax(mode_logits[bucket] + affinity_slope * a + click_shift * click)``.

    Args:
        bucket_edges_s: duration bucket edges in seconds, increasing (C - 1 edges give C
            buckets).
        mode_logits: C rows of 4 mode logits, one row per duration bucket.
        affinity_slope: 4 slopes on the user-item affinity (higher affinity, fewer skips).
        click_shift: 4 logit shifts applied when the impression was clicked.
        skip_beta: Beta(a, b) of the early-skip ratio.
        partial_beta: Beta(a, b) of the partial-watch ratio.
        complete_sigma: log-normal sigma of the complete-watch ratio around 1.
        replay_gamma: Gamma(shape, scale) of the ratio beyond 1 on a replay.
    """

    bucket_edges_s: list[float] = field(default_factory=lambda: [15.0, 30.0, 60.0])
    mode_logits: list[list[float]] = field(
        default_factory=lambda: [
            [-1.0, 0.8, 0.0, 0.2],
            [-0.5, 0.8, 0.1, -0.1],
            [0.2, 0.8, 0.0, -0.7],
            [1.2, 1.0, -0.2, -1.7],
        ]
    )
    affinity_slope: list[float] = field(default_factory=lambda: [-0.8, -0.2, 0.3, 0.6])
    click_shift: list[float] = field(default_factory=lambda: [-1.0, 0.0, 1.0, 1.0])
    skip_beta: list[float] = field(default_factory=lambda: [1.0, 25.0])
    partial_beta: list[float] = field(default_factory=lambda: [1.5, 2.0])
    complete_sigma: float = 0.08
    replay_gamma: list[float] = field(default_factory=lambda: [1.2, 0.6])

    def __post_init__(self) -> None:
        edges = self.bucket_edges_s
        if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"watch.bucket_edges_s must be positive and increasing: {edges}")
        n = len(WATCH_MODES)
        if len(self.mode_logits) != len(edges) + 1:
            raise ValueError(
                f"watch.mode_logits needs {len(edges) + 1} rows (one per duration bucket), "
                f"got {len(self.mode_logits)}"
            )
        for b, row in enumerate(self.mode_logits):
            if len(row) != n:
                raise ValueError(f"watch.mode_logits[{b}] needs {n} values {WATCH_MODES}")
        for name in ("affinity_slope", "click_shift"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"watch.{name} needs {n} values {WATCH_MODES}")
        for name in ("skip_beta", "partial_beta", "replay_gamma"):
            params = getattr(self, name)
            if len(params) != 2 or min(params) <= 0:
                raise ValueError(f"watch.{name} needs two values > 0, got {params}")
        if not self.complete_sigma > 0:
            raise ValueError("watch.complete_sigma must be > 0")

    def mode_means(self) -> np.ndarray:
        """Mean watch ratio of each mode, shape (4,).

        >>> WatchConfig(skip_beta=[1.0, 3.0], replay_gamma=[2.0, 0.5]).mode_means()[[0, 3]]
        array([0.25, 2.  ])
        """
        (sa, sb), (pa_, pb), (rk, rs) = self.skip_beta, self.partial_beta, self.replay_gamma
        return np.array(
            [sa / (sa + sb), pa_ / (pa_ + pb), math.exp(self.complete_sigma**2 / 2), 1 + rk * rs]
        )


@dataclass
class SimulatorConfig:
    """Sizes, behaviour and drift of the simulated world (see the module docstring).

    Args:
        num_users: users; ``user_id`` lies in [0, num_users).
        num_items: items; ``item_id`` lies in [0, num_items).
        num_authors: authors; ``author_id`` lies in [0, num_authors).
        num_categories: categories; ``category_id`` lies in [0, num_categories).
        num_user_segments: activity segments; ``user_segment`` lies in [0, this). Must be
            4 with side tables (KuaiRand's activity levels, grouped).
        rows_per_day: impressions per day.
        seed: seed of the world and of every day's draws.
        latent_dim: D, width of the user and item interest vectors.
        category_share: share of an item vector's variance that comes from its category.
        author_share: share that comes from its author (the rest is the item's own).
        affinity_scale: weight of the affinity ``<u, v> / sqrt(D)`` (about N(0, 1)) in the
            click logit.
        user_bias_std: standard deviation of the users' click biases.
        item_bias_std: standard deviation of the items' click biases.
        popularity_bias_corr: correlation of an item's click bias with its log popularity.
        base_click_logit: click logit of an average user-item pair before scenario terms.
        user_activity_sigma: log-normal sigma of the users' activity weights.
        item_popularity_sigma: log-normal sigma of the items' popularity weights.
        duration_median_s: median item duration (synthetic durations).
        duration_p90_s: 90th percentile of the item durations (synthetic durations).
        interest_drift_per_day: angle, in radians, that every user's interest vector turns
            per day (towards a second seeded vector, each user with its own phase).
        popularity_drift_amplitude: amplitude of each item's seasonal log-popularity swing.
        popularity_drift_period_days: its period.
        scenario_mix_drift_amplitude: amplitude of each scenario's seasonal log-share swing.
        scenario_mix_drift_period_days: its period.
        scenarios: one behaviour per scenario, in the order of ``data.scenarios``.
        watch: the watch-ratio mixture.
    """

    num_users: int = 5_000
    num_items: int = 2_000
    num_authors: int = 400
    num_categories: int = 30
    num_user_segments: int = 4
    rows_per_day: int = 200_000
    seed: int = 0
    latent_dim: int = 8
    category_share: float = 0.3
    author_share: float = 0.3
    affinity_scale: float = 1.2
    user_bias_std: float = 0.5
    item_bias_std: float = 0.5
    popularity_bias_corr: float = 0.3
    base_click_logit: float = -1.0
    user_activity_sigma: float = 1.0
    item_popularity_sigma: float = 1.2
    duration_median_s: float = 16.8
    duration_p90_s: float = 113.6
    interest_drift_per_day: float = 0.05
    popularity_drift_amplitude: float = 0.3
    popularity_drift_period_days: float = 14.0
    scenario_mix_drift_amplitude: float = 0.2
    scenario_mix_drift_period_days: float = 30.0
    scenarios: list[ScenarioBehaviour] = field(default_factory=_default_scenarios)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def __post_init__(self) -> None:
        for name in (
            "num_users",
            "num_items",
            "num_authors",
            "num_categories",
            "num_user_segments",
            "rows_per_day",
            "latent_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"simulator.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_user_segments > self.num_users:
            raise ValueError("simulator.num_user_segments must be <= num_users")
        if self.seed < 0:
            raise ValueError("simulator.seed must be >= 0")
        if self.category_share < 0 or self.author_share < 0:
            raise ValueError("simulator.category_share and author_share must be >= 0")
        if self.category_share + self.author_share > 1:
            raise ValueError("simulator.category_share + author_share must be <= 1")
        if not -1 <= self.popularity_bias_corr <= 1:
            raise ValueError("simulator.popularity_bias_corr must be in [-1, 1]")
        for name in (
            "affinity_scale",
            "user_bias_std",
            "item_bias_std",
            "user_activity_sigma",
            "item_popularity_sigma",
            "interest_drift_per_day",
            "popularity_drift_amplitude",
            "scenario_mix_drift_amplitude",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"simulator.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.duration_median_s < self.duration_p90_s:
            raise ValueError("simulator needs 0 < duration_median_s < duration_p90_s")
        if self.popularity_drift_period_days <= 0 or self.scenario_mix_drift_period_days <= 0:
            raise ValueError("simulator drift periods must be > 0 days")
        if not self.scenarios:
            raise ValueError("simulator.scenarios must list at least one scenario")


@dataclass
class DayState:
    """The world on one day: what drifts, in closed form of the day.

    Shapes (U users, M items, S scenarios, D latent_dim):
        user_vectors: (U, D) float32 interest vectors.
        item_log_popularity: (M,) float64.
        scenario_mix: (S,) float64, sums to 1.
    """

    user_vectors: np.ndarray
    item_log_popularity: np.ndarray
    scenario_mix: np.ndarray


def _epoch_day(day: dt.date) -> int:
    return (day - _EPOCH).days


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: indices into ``cdf`` (increasing, last value exactly 1) for u in [0, 1)."""
    return np.searchsorted(cdf, u, side="right")


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights)
    return c / c[-1]


def _read_csv(path: Path, columns: list[str]) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(
            f"side table {path} not found (--side-tables points at {path.parent})"
        )
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns))


class Simulator:
    """A seeded world of users, items and scenarios; :meth:`day` draws one day's impressions.

    Args:
        config: the world's sizes, behaviour and drift.
        scenarios: the scenario codes written in ``scenario`` (``data.scenarios``), one per
            entry of ``config.scenarios``.
        side_tables: a folder with KuaiRand's ``user_features_pure.csv`` and
            ``video_features_basic_pure.csv``: user ``u`` is KuaiRand user ``u`` (its
            segment from ``user_active_degree``), item ``i`` has video ``i``'s real
            duration. Items whose duration is missing there get a duration drawn from the
            others; :attr:`imputed_durations` counts them.

    Shapes:
        ``day(date)`` -> a table of N = rows_per_day rows (contract columns, feature
        columns ``user_segment``, ``author_id``, ``category_id``, ``user_activity``,
        ``item_popularity``, and :data:`ORACLE_COLUMNS`), sorted by ``ts_ms``.

    >>> small = SimulatorConfig(num_users=50, num_items=40, rows_per_day=300)
    >>> sim = Simulator(small, [0, 1, 2, 3, 4])
    >>> t = sim.day(dt.date(2026, 1, 1))
    >>> t.num_rows, t.column("scenario").type, sorted(set(t.column("scenario").to_pylist()))
    (300, DataType(int32), [0, 1, 2, 3, 4])
    """

    def __init__(
        self,
        config: SimulatorConfig,
        scenarios: Sequence[int],
        side_tables: str | Path | None = None,
    ) -> None:
        if len(scenarios) != len(config.scenarios):
            raise ValueError(
                f"simulator.scenarios has {len(config.scenarios)} entries but data.scenarios "
                f"lists {len(scenarios)} codes {list(scenarios)}: give one behaviour per code"
            )
        self.config = config
        self.codes = np.asarray(scenarios, dtype=np.int32)
        self.imputed_durations = 0
        c = config
        rng = np.random.default_rng([c.seed, _WORLD_STREAM])
        d = c.latent_dim

        # Item vectors: category + author + own noise, each N(0, 1) per dimension.
        cat_vec = rng.standard_normal((c.num_categories, d))
        author_cat = rng.integers(c.num_categories, size=c.num_authors)
        author_vec = rng.standard_normal((c.num_authors, d))
        self.item_author = rng.integers(c.num_authors, size=c.num_items)
        self.item_category = author_cat[self.item_author]
        own = 1.0 - c.category_share - c.author_share
        self.item_vectors = (
            math.sqrt(c.category_share) * cat_vec[self.item_category]
            + math.sqrt(c.author_share) * author_vec[self.item_author]
            + math.sqrt(own) * rng.standard_normal((c.num_items, d))
        ).astype(np.float32)
        pop_z = rng.standard_normal(c.num_items)
        self.item_log_popularity = c.item_popularity_sigma * pop_z
        self.item_pop_phase = rng.uniform(0, 2 * math.pi, c.num_items)
        corr = c.popularity_bias_corr
        self.item_bias = c.item_bias_std * (
            corr * pop_z + math.sqrt(1 - corr**2) * rng.standard_normal(c.num_items)
        )
        # Log-normal durations with the configured median and 90th percentile.
        sigma = math.log(c.duration_p90_s / c.duration_median_s) / 1.2815515655446004
        dur_s = c.duration_median_s * np.exp(sigma * rng.standard_normal(c.num_items))
        self.item_duration_ms = np.maximum(np.rint(dur_s * 1000.0), 1.0)

        # Users: interests turn from u0 towards u1 at a per-user phase.
        self.user_u0 = rng.standard_normal((c.num_users, d)).astype(np.float32)
        self.user_u1 = rng.standard_normal((c.num_users, d)).astype(np.float32)
        self.user_phase = rng.uniform(0, 2 * math.pi, c.num_users)
        self.user_bias = c.user_bias_std * rng.standard_normal(c.num_users)
        activity = np.sort(np.exp(c.user_activity_sigma * rng.standard_normal(c.num_users)))[::-1]
        # Most active first: rank r gets segment r * segments // users (equal-size quantiles).
        by_rank = rng.permutation(c.num_users)
        segment_of_rank = np.arange(c.num_users) * c.num_user_segments // c.num_users

        # Scenarios: per-category exposure skew and seasonal share phases.
        skew = np.array([s.category_skew for s in c.scenarios])
        self.scenario_category_logw = skew[:, None] * rng.standard_normal(
            (len(c.scenarios), c.num_categories)
        )
        self.scenario_mix_phase = rng.uniform(0, 2 * math.pi, len(c.scenarios))

        if side_tables is not None:
            by_rank, segment_of_rank = self._load_side_tables(Path(side_tables), rng)
        self.user_activity = np.empty(c.num_users)
        self.user_activity[by_rank] = activity / activity.sum()
        self.user_segment = np.empty(c.num_users, dtype=np.int64)
        self.user_segment[by_rank] = segment_of_rank
        self.user_cdf = _cdf(self.user_activity)

        beh = c.scenarios
        self.log_share = np.log([s.share for s in beh])
        self.pop_exponent = np.array([s.popularity_exponent for s in beh])
        self.click_bias = np.array([s.click_bias for s in beh])
        self.click_temperature = np.array([s.click_temperature for s in beh])
        w = c.watch
        self.bucket_edges_ms = np.asarray(w.bucket_edges_s) * 1000.0
        self.mode_logits = np.asarray(w.mode_logits)
        self.affinity_slope = np.asarray(w.affinity_slope)
        self.click_shift = np.asarray(w.click_shift)
        self.mode_means = w.mode_means()

    def _load_side_tables(
        self, folder: Path, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Real users (segments) and real durations; returns users by activity rank."""
        c = self.config
        if c.num_user_segments != KUAIRAND_NUM_SEGMENTS:
            raise ValueError(
                f"simulator.num_user_segments must be {KUAIRAND_NUM_SEGMENTS} with side tables "
                f"(KuaiRand activity levels), got {c.num_user_segments}"
            )
        users = _read_csv(folder / USER_TABLE, ["user_id", "user_active_degree"])
        uid = users.column("user_id").to_numpy()
        if c.num_users > len(uid) or not np.array_equal(
            np.sort(uid)[: c.num_users], np.arange(c.num_users)
        ):
            raise ValueError(
                f"simulator.num_users = {c.num_users}, but {folder / USER_TABLE} does not hold "
                f"user ids 0..{c.num_users - 1} (it has {len(uid)} users)"
            )
        keep = uid < c.num_users
        degree = np.asarray(users.column("user_active_degree").to_pylist(), dtype=object)[keep]
        segment = np.empty(c.num_users, dtype=np.int64)
        segment[uid[keep]] = [KUAIRAND_SEGMENTS.get(v, KUAIRAND_NUM_SEGMENTS - 1) for v in degree]
        # Activity weights follow the real segments: sort users by segment, ties at random.
        by_rank = rng.permutation(c.num_users)
        by_rank = by_rank[np.argsort(segment[by_rank], kind="stable")]

        videos = _read_csv(folder / VIDEO_TABLE, ["video_id", "video_duration"])
        vid = videos.column("video_id").to_numpy()
        if c.num_items > len(vid) or not np.array_equal(
            np.sort(vid)[: c.num_items], np.arange(c.num_items)
        ):
            raise ValueError(
                f"simulator.num_items = {c.num_items}, but {folder / VIDEO_TABLE} does not hold "
                f"video ids 0..{c.num_items - 1} (it has {len(vid)} videos)"
            )
        dur = np.full(c.num_items, np.nan)
        keep = vid < c.num_items
        dur[vid[keep]] = videos.column("video_duration").to_numpy(zero_copy_only=False)[keep]
        missing = ~(dur > 0)
        if missing.all():
            raise ValueError(f"{folder / VIDEO_TABLE}: no usable video_duration among the items")
        self.imputed_durations = int(missing.sum())
        dur[missing] = rng.choice(dur[~missing], size=self.imputed_durations)
        self.item_duration_ms = dur
        return by_rank, segment[by_rank]

    def state(self, day: dt.date) -> DayState:
        """The drifting part of the world on ``day`` (a closed form of the day number)."""
        c = self.config
        t = _epoch_day(day)
        theta = (c.interest_drift_per_day * t + self.user_phase).astype(np.float32)[:, None]
        users = np.cos(theta) * self.user_u0 + np.sin(theta) * self.user_u1
        pop = self.item_log_popularity + c.popularity_drift_amplitude * np.sin(
            2 * math.pi * t / c.popularity_drift_period_days + self.item_pop_phase
        )
        mix = _softmax(
            self.log_share
            + c.scenario_mix_drift_amplitude
            * np.sin(2 * math.pi * t / c.scenario_mix_drift_period_days + self.scenario_mix_phase)
        )
        return DayState(users, pop, mix)

    def exposure(self, state: DayState) -> np.ndarray:
        """Each scenario's item exposure distribution, shape (S, M), rows summing to 1."""
        logw = (
            self.pop_exponent[:, None] * state.item_log_popularity[None, :]
            + self.scenario_category_logw[:, self.item_category]
        )
        return _softmax(logw)

    def day(self, day: dt.date) -> pa.Table:
        """One day's impressions (see the class docstring for the columns)."""
        c = self.config
        n = c.rows_per_day
        state = self.state(day)
        exposure = self.exposure(state)
        rng = np.random.default_rng([c.seed, _DAY_STREAM, _epoch_day(day)])

        scen = _sample_cdf(_cdf(state.scenario_mix), rng.random(n))
        user = _sample_cdf(self.user_cdf, rng.random(n))
        item = np.empty(n, dtype=np.int64)
        u = rng.random(n)
        for s in range(len(self.codes)):
            rows = scen == s
            item[rows] = _sample_cdf(_cdf(exposure[s]), u[rows])
        # Rows are exchangeable, so handing sorted times out in row order sorts the log.
        lo = _epoch_day(day) * _DAY_MS
        ts = lo + np.sort(rng.integers(0, _DAY_MS, size=n))

        d = c.latent_dim
        affinity = np.einsum("nd,nd->n", state.user_vectors[user], self.item_vectors[item])
        affinity = affinity.astype(np.float64) / math.sqrt(d)
        logit = (
            c.base_click_logit
            + self.click_bias[scen]
            + (c.affinity_scale * affinity + self.user_bias[user] + self.item_bias[item])
            / self.click_temperature[scen]
        )
        p_click = 1.0 / (1.0 + np.exp(-logit))
        click = rng.random(n) < p_click

        duration = self.item_duration_ms[item]
        bucket = np.searchsorted(self.bucket_edges_ms, duration, side="right")
        mode_logit = self.mode_logits[bucket] + affinity[:, None] * self.affinity_slope
        w_noclick = _softmax(mode_logit)
        w_click = _softmax(mode_logit + self.click_shift)
        expected_ratio = p_click * (w_click @ self.mode_means) + (1 - p_click) * (
            w_noclick @ self.mode_means
        )
        weights = np.where(click[:, None], w_click, w_noclick)
        # The last mode takes whatever the first three cumulative weights leave.
        mode = (rng.random(n)[:, None] >= np.cumsum(weights[:, :-1], axis=1)).sum(axis=1)
        ratio = self._draw_ratios(mode, rng)
        watch = np.rint(ratio * duration)

        columns = {
            "user_id": user,
            "item_id": item,
            "scenario": self.codes[scen],
            "ts_ms": ts,
            "click": click.astype(np.int8),
            "watch_ms": watch,
            "duration_ms": duration,
            "user_segment": self.user_segment[user],
            "author_id": self.item_author[item],
            "category_id": self.item_category[item],
            # Expected impressions per day: the activity and popularity stats a log would give.
            "user_activity": n * self.user_activity[user],
            "item_popularity": n * (state.scenario_mix @ exposure)[item],
            "oracle_p_click": p_click,
            "oracle_watch_ms": expected_ratio * duration,
        }
        return pa.table(columns)

    def _draw_ratios(self, mode: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        w = self.config.watch
        ratio = np.empty(mode.shape[0])
        draws = (
            lambda k: rng.beta(w.skip_beta[0], w.skip_beta[1], size=k),
            lambda k: rng.beta(w.partial_beta[0], w.partial_beta[1], size=k),
            lambda k: np.exp(w.complete_sigma * rng.standard_normal(k)),
            lambda k: 1.0 + rng.gamma(w.replay_gamma[0], w.replay_gamma[1], size=k),
        )
        for m, draw in enumerate(draws):
            rows = mode == m
            ratio[rows] = draw(int(rows.sum()))
        return ratio


def simulate(
    out: str | Path,
    start: dt.date,
    days: int,
    config: SimulatorConfig,
    scenarios: Sequence[int],
    side_tables: str | Path | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Write ``days`` days of simulated contract data from ``start`` under ``out``.

    Each day is generated, validated (:func:`check_columns`, :func:`split_valid`) and
    published atomically (:func:`write_day`) before the next is drawn, so memory does not
    grow with ``days``. A one-line summary per day goes under the progress bar.

    Args:
        out: the contract data set folder (``date=YYYY-MM-DD/`` partitions).
        start: first day.
        days: number of days (>= 1).
        config: the world.
        scenarios: the scenario codes (``data.scenarios``).
        side_tables: KuaiRand side-table folder, or None for a fully synthetic world.
        progress: show the progress bar and the per-day lines.

    Returns:
        the validation counts summed over the days.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    sim = Simulator(config, scenarios, side_tables)
    if sim.imputed_durations and progress:
        tqdm.write(f"{sim.imputed_durations} items had no real duration: drew one from the others")
    total = ValidationReport()
    bar = tqdm(range(days), desc="simulate", unit="day", disable=not progress)
    for k in bar:
        day = start + dt.timedelta(days=k)
        table = check_columns(sim.day(day), f"simulator day {day}")
        kept, bad, report = split_valid(table, list(scenarios), day)
        write_day(out, day, kept, bad)
        total.add(report)
        if progress:
            clicks = kept.column("click").to_numpy().mean() if kept.num_rows else 0.0
            watch = kept.column("watch_ms").to_numpy().mean() / 1000 if kept.num_rows else 0.0
            tqdm.write(
                f"{day}: {report.rows_kept:,} rows, click rate {clicks:.3f}, "
                f"mean watch {watch:.1f} s, {report.rows_quarantined:,} quarantined"
            )
        del table, kept, bad  # free this day before drawing the next: one day in memory
    return total
