"""Managed ids: raw 64-bit ids get rows of their own, new ids are admitted, stale ones evicted."""

import datetime as dt
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from protorec.models.managed_ids import FREE, ManagedIds
from protorec.pipeline.config import from_dict, to_dict
from protorec.pipeline.contract import partition_dir, write_day
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.experiment import train_and_evaluate
from protorec.pipeline.ingest import ingest
from protorec.pipeline.ingest_parquet import parquet_files
from protorec.pipeline.job_config import CONFIG_DIR, ProtorecConfig, load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.refresh import refresh_id_maps
from protorec.pipeline.trainer import shard_model

BIG = 2**40  # raw ids far above any table size


def test_update_admits_most_frequent_first_counts_overflow_and_evicts():
    m = ManagedIds(4, evict_after_days=1)  # 3 id rows
    first = m.update(np.array([BIG + 5] * 3 + [BIG + 9] * 2 + [BIG + 1, BIG + 2]), day=10)
    assert (first.admitted, first.overflow, first.rows_used) == (3, 1, 3)
    rows, unknown = m.lookup(np.array([BIG + 5, BIG + 9, BIG + 1, BIG + 2]))
    # the two most frequent, then the smaller of the tied ids; BIG + 2 has no row
    assert rows.tolist() == [0, 1, 2, 3] and unknown.tolist() == [False, False, False, True]
    # next day BIG + 9 is seen again, the others are not: they are evicted, BIG + 7 admitted
    second = m.update(np.array([BIG + 9, BIG + 7]), day=11)
    assert (second.evicted, second.admitted, second.rows_used) == (2, 1, 2)
    rows, unknown = m.lookup(np.array([BIG + 9, BIG + 7, BIG + 5]))
    assert rows[0] == 1 and not unknown[1] and unknown[2]
    assert set(second.reset_rows.tolist()) == {0, 2}  # the two freed rows; one re-used
    assert (m.raw == FREE).sum() == 1


def test_map_survives_a_state_dict_round_trip():
    m = ManagedIds(10)
    m.update(np.array([BIG, BIG + 3]), day=0)
    again = ManagedIds(10)
    again.lookup(np.array([BIG]))  # an index built before the load must not be reused
    again.load_state_dict(m.state_dict())
    probe = np.array([BIG + 3])
    assert again.lookup(probe)[0].tolist() == m.lookup(probe)[0].tolist()


def _managed(config: ProtorecConfig, **extra) -> ProtorecConfig:
    raw = to_dict(config)
    for f in raw["features"]["sparse"]:
        if f["name"] in ("user", "item"):
            f.update(managed=True, **extra)
    return from_dict(ProtorecConfig, raw)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The simulator's days, and the same rows with user and item ids made sparse 64-bit."""
    root = tmp_path_factory.mktemp("managed")
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 20_000
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "simulate",
            "--config",
            str(root / "config.yaml"),
            "--out",
            str(root / "plain"),
            "--start",
            "2026-01-01",
            "--days",
            "3",
            "--quiet",
        ],
        check=True,
    )
    days = [dt.date(2026, 1, d) for d in (1, 2, 3)]
    for day in days:
        table = pq.read_table(partition_dir(root / "plain", day))
        for column, factor in (("user_id", 1_000_003), ("item_id", 7_919)):
            ids = table.column(column).to_numpy() * factor + BIG
            table = table.set_column(
                table.schema.get_field_index(column), column, [ids.astype(np.int64)]
            )
        write_day(root / "raw", day, table, table.slice(0, 0))
    return root


@pytest.fixture
def ctx():
    context = init_distributed("cpu")
    yield context
    shutdown_distributed()


#: The plain run's metrics, trained once for the module's tests.
_PLAIN: dict = {}


def _plain_run(datasets, ctx) -> dict:
    """The simulator's own days: joined, ids 0..N, tables sized by the largest id."""
    if not _PLAIN:
        config = load_config(str(datasets / "config.yaml"))
        _PLAIN.update(
            train_and_evaluate(
                config,
                datasets / "plain",
                "2026-01-01..2026-01-02",
                "2026-01-03",
                ctx,
                progress=False,
            )
        )
    return _PLAIN


def test_raw_ids_learn_as_well_as_remapped_ids(datasets, ctx):
    config = load_config(str(datasets / "config.yaml"))
    plain = _plain_run(datasets, ctx)
    managed = train_and_evaluate(
        _managed(config),
        datasets / "raw",
        "2026-01-01..2026-01-02",
        "2026-01-03",
        ctx,
        progress=False,
    )
    ids = managed["train"]["ids"]
    assert ids["user"]["overflow"] == 0 and ids["user"]["admitted"] == ids["user"]["seen"]
    # each raw id has its own row: the same model up to a permutation of rows
    assert managed["overall"]["auc"] >= plain["overall"]["auc"] - 0.01
    assert plain["overall"]["auc"] > 0.6


def test_daily_refresh_admits_new_ids_and_redraws_freed_rows(datasets, ctx):
    config = _managed(load_config(str(datasets / "config.yaml")), evict_after_days=1)
    torch.manual_seed(0)
    sharded = shard_model(build_model(config, "meta"), ctx, config.train, 64)
    sharded.optimizer.init_state()
    day1, day2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    first = refresh_id_maps(
        sharded, config.features, DayReader(datasets / "raw", [day1]), None, day1, seed=0
    )
    users = sharded.module.managed_id_maps()["user"]
    day1_ids = set(users.raw[users.raw != FREE].tolist())
    assert first["user"]["rows_used"] == len(day1_ids) > 0
    key = "sparse_arch.embedding_bags.user.weight"

    def table():
        return torch.cat([s.tensor for s in sharded.dmp.state_dict()[key].local_shards()]).clone()

    with torch.no_grad():  # as if trained: every row moved away from its initial value
        for s in sharded.dmp.state_dict()[key].local_shards():
            s.tensor.fill_(7.0)
    before = table()
    second = refresh_id_maps(
        sharded, config.features, DayReader(datasets / "raw", [day2]), None, day2, seed=0
    )
    day2_ids = set(
        pq.read_table(partition_dir(datasets / "raw", day2)).column("user_id").to_numpy().tolist()
    )
    now = set(users.raw[users.raw != FREE].tolist())
    assert now == day2_ids  # a day's unseen ids evicted, its new ids admitted
    assert second["user"]["admitted"] == len(day2_ids - day1_ids)
    assert second["user"]["evicted"] == len(day1_ids - day2_ids)
    kept = users.lookup(np.array(sorted(day1_ids & day2_ids)))[0]
    changed = users.lookup(np.array(sorted(day2_ids - day1_ids)))[0]
    after = table()
    assert torch.equal(after[kept], before[kept])  # known ids keep what they learnt
    assert not torch.isclose(after[changed], before[changed]).any()  # new ids start fresh
    # the loader reads today's rows through the updated map: no id of the day is OOV
    loader = ContractLoader(
        config,
        [day2],
        datasets / "raw",
        rank=0,
        world_size=1,
        id_maps=sharded.module.managed_id_maps(),
        progress=False,
    )
    for _ in loader:
        pass
    assert loader.stats.oov["user"] == 0 and loader.stats.oov["item"] == 0


def test_own_logs_side_tables_and_raw_ids_train_end_to_end(datasets, ctx):
    """A new user's data trains through ``ingest parquet`` and managed ids, no hand join.

    Parquet logs with sparse 64-bit ids, users and items side tables apart: ingest joins
    them, managed tables give the raw ids rows, and the run reaches the AUC of the
    hand-joined run with max-id-sized tables (within 0.01).
    """
    logs = datasets / "own_logs"
    logs.mkdir()
    row_columns = ["user_id", "item_id", "scenario", "ts_ms", "click", "watch_ms"]
    row_columns += ["duration_ms", "item_popularity"]  # popularity changes by day: a row's too
    users, items = [], []
    for i, day in enumerate(dt.date(2026, 1, d) for d in (1, 2, 3)):
        table = pq.read_table(partition_dir(datasets / "raw", day))
        pq.write_table(table.select(row_columns), logs / f"events-{i}.parquet")
        users.append(table.select(["user_id", "user_segment", "user_activity"]))
        items.append(table.select(["item_id", "author_id", "category_id"]))
    for name, parts, key in (("users", users, "user_id"), ("items", items, "item_id")):
        table = pa.concat_tables(parts)
        _, first = np.unique(table.column(key).to_numpy(), return_index=True)
        pq.write_table(table.take(pa.array(first)), datasets / f"{name}.parquet")
    raw = to_dict(_managed(load_config(str(datasets / "config.yaml"))))
    raw["data"]["dataset"] = str(datasets / "own")
    raw["ingest"] = {
        "parquet": {
            "extra_columns": [{"source": "item_popularity", "kind": "number"}],
            "side_tables": [
                {
                    "path": str(datasets / "users.parquet"),
                    "row_key": "user_id",
                    "columns": [
                        {"source": "user_segment", "kind": "id"},
                        {"source": "user_activity", "kind": "number"},
                    ],
                },
                {
                    "path": str(datasets / "items.parquet"),
                    "row_key": "item_id",
                    "columns": [
                        {"source": "author_id", "kind": "id"},
                        {"source": "category_id", "kind": "id"},
                    ],
                },
            ],
        }
    }
    config = from_dict(ProtorecConfig, raw)
    files, _ = parquet_files([logs], config.ingest.parquet)
    summary = ingest(files, config.data, config.ingest, source="parquet")
    assert sum(d.rows_kept for d in summary.days.values()) == 60_000
    assert set(summary.side_rows_missing.values()) == {0}
    own = train_and_evaluate(
        config, datasets / "own", "2026-01-01..2026-01-02", "2026-01-03", ctx, progress=False
    )
    # every training id has a row; side features all joined (nothing filled, nothing OOV)
    assert own["train"]["ids"]["item"]["overflow"] == 0
    assert own["loader"]["train"]["filled"] == {
        "log_duration": 0,
        "user_activity": 0,
        "item_popularity": 0,
    }
    assert own["loader"]["train"]["oov"]["author"] == own["loader"]["train"]["oov"]["user"] == 0
    plain = _plain_run(datasets, ctx)
    assert own["overall"]["samples"] == plain["overall"]["samples"]
    assert own["overall"]["auc"] >= plain["overall"]["auc"] - 0.01
