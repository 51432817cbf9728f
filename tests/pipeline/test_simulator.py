import argparse
import dataclasses
import datetime as dt
import hashlib
import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from protorec.jobs import simulate as simulate_job
from protorec.pipeline.config import ConfigError
from protorec.pipeline.contract import CONTRACT_SCHEMA, check_columns, list_days, split_valid
from protorec.pipeline.job_config import load_config
from protorec.pipeline.simulator import (
    KUAIRAND_SEGMENTS,
    ORACLE_COLUMNS,
    Simulator,
    SimulatorConfig,
    WatchConfig,
    simulate,
)

ROOT = Path(__file__).resolve().parents[2]
CODES = [3, 5, 7, 8, 11]  # deliberately not 0..4: the rows must carry the config's codes
DAY = dt.date(2026, 3, 1)
SMALL = SimulatorConfig(
    num_users=400, num_items=300, num_authors=40, num_categories=6, rows_per_day=40_000
)


def _drift_free(cfg):
    return dataclasses.replace(
        cfg,
        interest_drift_per_day=0.0,
        popularity_drift_amplitude=0.0,
        scenario_mix_drift_amplitude=0.0,
    )


@pytest.fixture(scope="module")
def sim():
    return Simulator(SMALL, CODES)


@pytest.fixture(scope="module")
def table(sim):
    return sim.day(DAY)


def _col(table, name):
    return table.column(name).to_numpy()


def _auc(score, label):
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = label == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_schema_and_value_ranges(table):
    for f in CONTRACT_SCHEMA:
        assert table.schema.field(f.name).type == f.type, f.name
    assert set(ORACLE_COLUMNS) <= set(table.column_names)
    assert table.num_rows == SMALL.rows_per_day
    user, item = _col(table, "user_id"), _col(table, "item_id")
    assert user.min() >= 0 and user.max() < SMALL.num_users
    assert item.min() >= 0 and item.max() < SMALL.num_items
    assert set(_col(table, "scenario").tolist()) == set(CODES)
    ts = _col(table, "ts_ms")
    lo = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert ts.min() >= lo and ts.max() < lo + 86_400_000 and np.all(np.diff(ts) >= 0)
    assert set(_col(table, "click").tolist()) == {0, 1}
    watch, dur = _col(table, "watch_ms"), _col(table, "duration_ms")
    assert table.column("watch_ms").null_count == 0 and watch.min() >= 0
    assert dur.min() > 0
    p = _col(table, "oracle_p_click")
    assert p.min() > 0 and p.max() < 1 and _col(table, "oracle_watch_ms").min() > 0
    assert _col(table, "user_segment").max() < SMALL.num_user_segments
    assert _col(table, "author_id").max() < SMALL.num_authors
    assert _col(table, "category_id").max() < SMALL.num_categories
    # item attributes are properties of the item: one author, category, duration per item
    for name in ("author_id", "category_id", "duration_ms"):
        pairs = np.unique(np.stack([item, _col(table, name)]), axis=1)
        assert pairs.shape[1] == len(np.unique(item)), name


def test_every_row_passes_the_contract(table):
    kept, bad, report = split_valid(check_columns(table, "sim"), CODES, DAY)
    assert report.rows_kept == table.num_rows and bad.num_rows == 0


def _hashes(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*.parquet"))
    }


def test_same_seed_same_bytes_and_days_independent_of_the_call(tmp_path):
    cfg = dataclasses.replace(SMALL, rows_per_day=3_000)
    rep = simulate(tmp_path / "a", DAY, 3, cfg, CODES, progress=False)
    assert rep.rows_kept == 9_000 and rep.rows_quarantined == 0
    for k in range(3):
        simulate(tmp_path / "b", DAY + dt.timedelta(days=k), 1, cfg, CODES, progress=False)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert len(a) == 3 and a == b
    # a day does not depend on how many days came before it in the call
    simulate(tmp_path / "c", DAY - dt.timedelta(days=5), 8, cfg, CODES, progress=False)
    c = _hashes(tmp_path / "c")
    assert {k: c[k] for k in a} == a
    other = dataclasses.replace(cfg, seed=1)
    simulate(tmp_path / "d", DAY, 1, other, CODES, progress=False)
    first = "date=2026-03-01/part-0.parquet"
    assert _hashes(tmp_path / "d")[first] != a[first]


def test_memory_does_not_grow_with_days(tmp_path):
    cfg = dataclasses.replace(SMALL, rows_per_day=20_000)
    peaks = []
    for days in (1, 4):
        tracemalloc.start()
        simulate(tmp_path / str(days), DAY, days, cfg, CODES, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.05 * peaks[0]


def test_oracle_auc_in_band_and_clicks_calibrated(table):
    p, click = _col(table, "oracle_p_click"), _col(table, "click")
    assert 0.75 < _auc(p, click) < 0.9
    bins = np.array_split(np.argsort(p), 10)
    for rows in bins:
        mean_p = p[rows].mean()
        tol = 4 * math.sqrt(mean_p * (1 - mean_p) / len(rows))
        assert abs(click[rows].mean() - mean_p) < tol


def test_oracle_watch_is_the_expected_watch(table):
    ow, watch = _col(table, "oracle_watch_ms"), _col(table, "watch_ms")
    for rows in np.array_split(np.argsort(ow), 10):
        tol = 4 * watch[rows].std() / math.sqrt(len(rows))
        assert abs(watch[rows].mean() - ow[rows].mean()) < tol
    # watch time is predictable: the oracle explains a good part of it
    assert np.corrcoef(ow, watch)[0, 1] > 0.5


def test_watch_ratio_is_multimodal_per_duration_bucket(table):
    ratio = _col(table, "watch_ms") / _col(table, "duration_ms")

    def density(lo, hi, r=ratio):
        return ((r >= lo) & (r < hi)).mean() / (hi - lo)

    # early-skip peak near 0, completion peak at 1, replay tail above 1
    assert density(0.0, 0.05) > 3 * density(0.4, 0.6)
    assert density(0.95, 1.05) > 3 * max(density(0.6, 0.8), density(1.3, 1.5))
    assert (ratio > 1.1).mean() > 0.1
    dur = _col(table, "duration_ms")
    short, long_ = ratio[dur < 15_000], ratio[dur >= 60_000]
    assert (short > 1.05).mean() > (long_ > 1.05).mean() + 0.1
    assert (long_ < 0.05).mean() > (short < 0.05).mean() + 0.1


def test_watch_mode_means_match_draws():
    w = WatchConfig()
    sim = Simulator(dataclasses.replace(SMALL, rows_per_day=10), CODES)
    rng = np.random.default_rng(0)
    for m in range(4):
        draws = sim._draw_ratios(np.full(50_000, m), rng)
        assert abs(draws.mean() - w.mode_means()[m]) < 4 * draws.std() / math.sqrt(50_000)


def test_scenarios_differ_in_clicks_and_exposure_but_share_intent(sim, table):
    scen, click = _col(table, "scenario"), _col(table, "click")
    rates = [click[scen == c].mean() for c in CODES]
    assert max(rates) - min(rates) > 0.15
    expo = sim.exposure(sim.state(DAY))
    tv = [0.5 * np.abs(expo[0] - expo[s]).sum() for s in range(1, len(CODES))]
    assert min(tv) > 0.1
    item = _col(table, "item_id")
    top = np.argsort(expo[0])[-30:]  # feed's head gets most of feed, less of search
    share = [np.isin(item[scen == c], top).mean() for c in CODES]
    assert share[0] > share[4] + 0.1
    # shared intent: stripping each scenario's bias and temperature leaves one score per
    # (user, item), whichever scenario showed it
    p = _col(table, "oracle_p_click")
    bias = np.array([s.click_bias for s in SMALL.scenarios])
    temp = np.array([s.click_temperature for s in SMALL.scenarios])
    s_idx = np.searchsorted(CODES, scen)
    score = (np.log(p / (1 - p)) - SMALL.base_click_logit - bias[s_idx]) * temp[s_idx]
    key = _col(table, "user_id") * SMALL.num_items + item
    order = np.lexsort((s_idx, key))
    same_pair = key[order][1:] == key[order][:-1]
    other_scenario = s_idx[order][1:] != s_idx[order][:-1]
    both = same_pair & other_scenario
    assert both.sum() > 100
    np.testing.assert_allclose(score[order][1:][both], score[order][:-1][both], atol=1e-9)


def _shared_triples(t1, t2):
    def keyed(t):
        key = (_col(t, "user_id") * SMALL.num_items + _col(t, "item_id")) * 100 + _col(
            t, "scenario"
        )
        k, first = np.unique(key, return_index=True)
        return k, _col(t, "oracle_p_click")[first]

    k1, p1 = keyed(t1)
    k2, p2 = keyed(t2)
    _, i1, i2 = np.intersect1d(k1, k2, return_indices=True)
    return p1[i1], p2[i2]


def test_day_to_day_drift(sim, table):
    nxt = sim.day(DAY + dt.timedelta(days=1))
    s1, s2 = sim.state(DAY), sim.state(DAY + dt.timedelta(days=1))
    assert np.abs(s1.scenario_mix - s2.scenario_mix).max() > 1e-3
    assert np.abs(s1.item_log_popularity - s2.item_log_popularity).mean() > 1e-2
    p1, p2 = _shared_triples(table, nxt)
    assert len(p1) > 100 and np.abs(p1 - p2).mean() > 1e-3
    # without drift the same (user, item, scenario) has the same click probability
    still = Simulator(_drift_free(SMALL), CODES)
    q1, q2 = _shared_triples(still.day(DAY), still.day(DAY + dt.timedelta(days=1)))
    assert len(q1) > 100
    np.testing.assert_array_equal(q1, q2)


def test_oracle_columns_are_not_read_by_training_code():
    # Evaluation may read the oracle; the data path and the models must not.
    allowed = re.compile(r"^(pipeline/(simulator|metrics|evaluat\w*)\.py|jobs/\w*evaluat\w*\.py)$")
    training = re.compile(r"^(pipeline/(loader|batch|train\w*)\.py|models/.*|ot/.*)$")
    checked = []
    for folder in ("pipeline", "models", "ot", "jobs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if allowed.match(rel):
                continue
            if "oracle_" in path.read_text():
                assert not training.match(rel), f"{rel} mentions an oracle column"
            checked.append(rel)
    assert "pipeline/loader.py" in checked and "models/batch.py" in checked


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"simulator.scenarios has 5 entries.*3 codes"):
        Simulator(SMALL, [0, 1, 2])
    with pytest.raises(ValueError, match="mode_logits needs 4 rows"):
        WatchConfig(mode_logits=[[0.0] * 4] * 3)
    text = (ROOT / "configs" / "simulator.yaml").read_text()
    text = re.sub(r"num_users: \d+", "num_users: 0", text)
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml: simulator: simulator.num_users must be >= 1"):
        load_config(tmp_path / "c.yaml")


def test_shipped_config_features_are_columns_the_simulator_writes():
    cfg = load_config("simulator")
    sim = Simulator(dataclasses.replace(cfg.simulator, rows_per_day=2_000), cfg.data.scenarios)
    t = sim.day(DAY)
    for f in cfg.features.sparse:
        ids = _col(t, f.column)
        # in-vocabulary: the table's last row is for out-of-vocabulary ids only
        assert ids.min() >= 0 and ids.max() < f.num_embeddings - 1, f.name
    for f in cfg.features.dense:
        assert f.column in t.column_names and not np.isnan(_col(t, f.column)).any(), f.name
    assert not {f.column for f in cfg.features.sparse + cfg.features.dense} & set(ORACLE_COLUMNS)


def test_side_tables_use_real_users_and_durations(shared_data):
    import pyarrow.csv as pacsv

    folder = shared_data / "kuairand"
    cfg = dataclasses.replace(SMALL, num_users=2_000, num_items=1_500, rows_per_day=5_000)
    sim = Simulator(cfg, CODES, folder)
    users = pacsv.read_csv(folder / "user_features_pure.csv").select(
        ["user_id", "user_active_degree"]
    )
    uid = users.column("user_id").to_numpy()
    deg = users.column("user_active_degree").to_pylist()
    expected = {u: KUAIRAND_SEGMENTS.get(d, 3) for u, d in zip(uid, deg) if u < cfg.num_users}
    t = sim.day(DAY)
    for u, s in zip(_col(t, "user_id"), _col(t, "user_segment")):
        assert expected[u] == s
    videos = pacsv.read_csv(folder / "video_features_basic_pure.csv")
    vid = videos.column("video_id").to_numpy()
    vdur = videos.column("video_duration").to_numpy(zero_copy_only=False)
    real = dict(zip(vid[vid < cfg.num_items], vdur[vid < cfg.num_items]))
    assert sim.imputed_durations == sum(not d > 0 for d in real.values())
    for i, d in zip(_col(t, "item_id"), _col(t, "duration_ms")):
        assert real[i] == d or not real[i] > 0
    # the most active segment gets more impressions per user than the least active
    per_user = np.bincount(_col(t, "user_id"), minlength=cfg.num_users)
    seg = np.array([expected[u] for u in range(cfg.num_users)])
    assert per_user[seg == 0].mean() > per_user[seg == 3].mean()
    with pytest.raises(ValueError, match=r"user_features_pure\.csv does not hold user ids"):
        Simulator(dataclasses.replace(cfg, num_users=10**6), CODES, folder)


def test_protorec_simulate_command(tmp_path, capsys):
    text = (
        (ROOT / "configs" / "simulator.yaml")
        .read_text()
        .replace("rows_per_day: 200000", "rows_per_day: 2000")
    )
    (tmp_path / "c.yaml").write_text(text)
    parser = argparse.ArgumentParser()
    simulate_job.add_parser(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(["simulate", *argv])
        return args.func(args)

    out = tmp_path / "data"
    args = ["--out", str(out), "--start", "2026-01-30", "--days", "3"]
    assert run(*args, "--seed", "4", "--config", str(tmp_path / "c.yaml"), "--quiet") == 0
    assert list_days(out) == [dt.date(2026, 1, 30), dt.date(2026, 1, 31), dt.date(2026, 2, 1)]
    assert "6,000 rows kept, 0 quarantined" in capsys.readouterr().out
    day = pq.read_table(out / "date=2026-02-01" / "part-0.parquet")
    cfg = load_config(tmp_path / "c.yaml")
    seeded = dataclasses.replace(cfg.simulator, seed=4)
    assert day.equals(Simulator(seeded, cfg.data.scenarios).day(dt.date(2026, 2, 1)))
    assert run(*args, "--config", str(tmp_path / "nope.yaml")) == 2
    assert "cannot read config file" in capsys.readouterr().err
