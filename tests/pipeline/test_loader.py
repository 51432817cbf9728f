import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from protorec.pipeline.config import ConfigError, from_dict
from protorec.pipeline.contract import check_columns, write_day
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.loader import (
    ContractLoader,
    LoaderStats,
    _Arrays,
    hash_ids,
    table_to_batch,
)

DAY = dt.date(2026, 3, 1)
SCENARIOS = [5, 2, 9]


def _config(batch_size=16, shuffle=True, seed=0):
    return from_dict(
        ProtorecConfig,
        {
            "data": {"dataset": "unused", "scenarios": SCENARIOS},
            "features": {
                "sparse": [
                    {"name": "item", "column": "item_id", "num_embeddings": 11, "embedding_dim": 4},
                    {"name": "user", "column": "user_id", "num_embeddings": 7, "hashed": True},
                ],
                "dense": [
                    {
                        "name": "log_dur",
                        "column": "duration_ms",
                        "transform": "log1p",
                        "shift": 1.0,
                        "scale": 2.0,
                        "fill": -5.0,
                    },
                    {"name": "act", "column": "activity", "fill": 0.5},
                ],
            },
            "loader": {"batch_size": batch_size, "shuffle": shuffle, "seed": seed},
        },
    )


def _day_ms(day):
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _rows(n, first_id, day, rng):
    """``n`` contract rows whose user_id is a unique row id, plus feature and oracle columns."""
    return pa.table(
        {
            "user_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "item_id": rng.integers(-3, 14, n),
            "scenario": rng.choice(SCENARIOS, n).astype(np.int32),
            "ts_ms": _day_ms(day) + rng.integers(0, 86_400_000, n),
            "click": rng.integers(0, 2, n).astype(np.int8),
            "watch_ms": rng.uniform(0, 1e4, n),
            "duration_ms": rng.uniform(1e3, 1e5, n),
            "activity": pa.array(
                np.where(rng.random(n) < 0.1, None, rng.random(n)).tolist(), pa.float64()
            ),
            # ground truth a training loader must never read: strings, so reading it
            # into the float pipeline would fail loudly
            "oracle_p_click": pa.array(["secret"] * n),
        }
    )


def _dataset(tmp_path, sizes, seed=0):
    """A contract data set of consecutive days with ``sizes`` rows; unique row ids."""
    rng = np.random.default_rng(seed)
    first = 0
    for i, n in enumerate(sizes):
        day = DAY + dt.timedelta(days=i)
        table = check_columns(_rows(n, first, day, rng), "test")
        write_day(tmp_path, day, table, table.slice(0, 0))
        first += n
    return tmp_path, [DAY + dt.timedelta(days=i) for i in range(len(sizes))]


def _ids(loader):
    return [b.user_id.numpy().copy() for b in loader]


def _rows_of_every_rank(cfg, days, ds, world_size, **loader_args):
    """The sorted row ids (user_id) every rank's loader yields, together."""
    return np.sort(
        np.concatenate(
            [
                b
                for r in range(world_size)
                for b in _ids(
                    ContractLoader(cfg, days, ds, rank=r, world_size=world_size, **loader_args)
                )
            ]
        )
    )


def test_table_to_batch_converts_and_counts():
    cfg = _config()
    nan = float("nan")
    table = pa.table(
        {
            "user_id": pa.array([10, -4, 1 << 40, 3], pa.int64()),
            "item_id": pa.array([0, 9, 10, None], pa.int64()),  # 10 is OOV (last row)
            "scenario": pa.array([9, 5, 2, 9], pa.int32()),
            "ts_ms": [_day_ms(DAY), _day_ms(DAY) + 1, _day_ms(DAY + dt.timedelta(1)), 5],
            "click": pa.array([1, 0, 0, 1], pa.int8()),
            "watch_ms": [1.0, None, 3.0, 0.0],
            "duration_ms": [0.0, math.e - 1, None, 1e4],
            "activity": [0.25, nan, None, -1.0],
        }
    )
    stats = LoaderStats()
    b = table_to_batch(table, cfg, stats=stats)
    assert b.batch_size == 4 and b.dense.shape == (4, 2) and b.dense.dtype == torch.float32
    assert b.sparse.keys() == ["item", "user"]
    assert b.sparse.lengths().tolist() == [1] * 8
    assert b.sparse["item"].values().tolist() == [0, 9, 10, 10]
    users = b.sparse["user"].values()
    assert users.tolist() == hash_ids(np.array([10, -4, 1 << 40, 3]), 7).tolist()
    assert stats.oov == {"item": 2} and stats.rows_read == 4  # hashed ids are never OOV
    # log1p then (x - 1) / 2; the null duration becomes fill, counted
    assert b.dense[:, 0].tolist() == pytest.approx([-0.5, 0.0, -5.0, (math.log1p(1e4) - 1) / 2])
    assert b.dense[:, 1].tolist() == pytest.approx([0.25, 0.5, 0.5, -1.0])
    assert stats.filled == {"log_dur": 1, "act": 2}
    assert b.scenario.tolist() == [2, 0, 1, 2] and b.scenario.dtype == torch.int64
    assert b.click.tolist() == [1.0, 0.0, 0.0, 1.0] and b.click.dtype == torch.float32
    assert b.watch_ms.isnan().tolist() == [False, True, False, False]
    assert b.duration_ms.isnan().tolist() == [False, False, True, False]
    assert b.user_id.tolist() == [10, -4, 1 << 40, 3]
    day = (DAY - dt.date(1970, 1, 1)).days
    assert b.day.tolist() == [day, day, day + 1, 0]


def test_hash_is_splitmix64():
    # Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c): the output
    # function applied to k * 0x9E3779B97F4A7C15 for k = 1, 2, 3.
    ref = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    golden = 0x9E3779B97F4A7C15
    x = np.array([(k * golden) % 2**64 for k in range(3)], dtype=np.uint64).view(np.int64)
    for m in (2**63, 1000, 7):
        assert hash_ids(x, m).tolist() == [r % m for r in ref]
    ids = np.random.default_rng(0).integers(-(2**62), 2**62, 10_000)
    h = hash_ids(ids, 7)
    assert h.min() >= 0 and h.max() < 7 and len(np.unique(h)) == 7


def test_sparse_output_feeds_an_embedding_bag_collection(tmp_path):
    cfg = _config(batch_size=8)
    ds, days = _dataset(tmp_path, [20])
    batch = next(iter(ContractLoader(cfg, days, ds)))
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f.name,
                embedding_dim=f.embedding_dim,
                num_embeddings=f.num_embeddings,
                feature_names=[f.name],
            )
            for f in cfg.features.sparse
        ]
    )
    out = ebc(batch.sparse)
    assert out.values().shape == (batch.batch_size, 4 + 16)
    assert batch.sparse.values().max() < 11


def test_unknown_scenario_names_day_and_code(tmp_path):
    cfg = _config()
    ds, days = _dataset(tmp_path, [10])
    table = pq.read_table(tmp_path / f"date={DAY}" / "part-0.parquet")
    bad = table.set_column(2, "scenario", pa.array([5] * 9 + [77], pa.int32()))
    write_day(ds, DAY, bad, bad.slice(0, 0))
    with pytest.raises(ValueError, match=rf"day {DAY}.*scenario code\(s\) \[77\]"):
        list(ContractLoader(cfg, days, ds))


def test_negative_value_under_log1p_is_an_error():
    table = pa.table(
        {
            "user_id": [1],
            "item_id": [1],
            "scenario": pa.array([5], pa.int32()),
            "click": pa.array([0], pa.int8()),
            "watch_ms": [1.0],
            "duration_ms": [-2.0],
            "activity": [1.0],
        }
    )
    with pytest.raises(ValueError, match="'log_dur': 1 negative values in column 'duration_ms'"):
        table_to_batch(table, _config(), day=DAY)


@pytest.mark.parametrize("world_size", [1, 3])
def test_every_row_once_and_equal_batch_counts(tmp_path, world_size):
    batch_size = 16
    ds, days = _dataset(tmp_path, [100, 61])  # 161 rows: not a multiple of 3 * 16
    cfg = _config(batch_size=batch_size)
    loaders = [
        ContractLoader(cfg, days, ds, rank=r, world_size=world_size) for r in range(world_size)
    ]
    per_rank = [_ids(ld) for ld in loaders]
    expected = math.ceil(161 / (world_size * batch_size))
    for ld, batches in zip(loaders, per_rank):
        assert len(ld) == len(batches) == expected
        assert all(1 <= len(b) <= batch_size for b in batches)
    seen = np.concatenate([b for batches in per_rank for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(161))
    totals = [ld.stats.all_reduce() for ld in loaders]
    assert sum(t.rows_read for t in totals) == 161


def test_shuffle_is_seeded_by_epoch_and_mixes_days(tmp_path):
    ds, days = _dataset(tmp_path, [80, 80])
    cfg = _config(batch_size=32)
    order = {e: np.concatenate(_ids(ContractLoader(cfg, days, ds, epoch=e))) for e in (0, 1)}
    again = np.concatenate(_ids(ContractLoader(cfg, days, ds, epoch=0)))
    np.testing.assert_array_equal(order[0], again)
    assert not np.array_equal(order[0], order[1])
    np.testing.assert_array_equal(np.sort(order[0]), np.sort(order[1]))
    first = order[0][:32]  # the first batch holds rows of both days
    assert (first < 80).any() and (first >= 80).any()


def test_no_shuffle_keeps_file_order_and_interleaves_ranks(tmp_path):
    ds, days = _dataset(tmp_path, [50, 50])
    cfg = _config(batch_size=8, shuffle=False)
    one = [
        b.tolist()
        for b in _ids(
            ContractLoader(_config(batch_size=16, shuffle=False), days, ds, rank=0, world_size=1)
        )
    ]
    assert sum(one, []) == list(range(100))
    two = [_ids(ContractLoader(cfg, days, ds, rank=r, world_size=2)) for r in (0, 1)]
    # step t of 2 ranks at batch 8 holds the rows of step t of 1 rank at batch 16
    assert len(one) == len(two[0]) == len(two[1])
    for t, rows in enumerate(one):
        assert sorted(two[0][t].tolist() + two[1][t].tolist()) == rows
        assert two[0][t].max() < two[1][t].min()
    b = next(iter(ContractLoader(cfg, days, ds, rank=0, world_size=2)))
    assert b.day.tolist() == [(DAY - dt.date(1970, 1, 1)).days] * b.batch_size


def test_only_configured_columns_are_read(tmp_path, monkeypatch):
    ds, days = _dataset(tmp_path, [40])
    seen = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        seen.append(set(columns))
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    ld = ContractLoader(_config(), days, ds)
    assert sum(b.batch_size for b in ld) == 40
    assert seen == [
        {"user_id", "scenario", "click", "watch_ms", "duration_ms", "item_id", "activity"}
    ]
    # a read of every column would hit the string column: prove it is really there
    assert "oracle_p_click" in pq.read_schema(tmp_path / f"date={DAY}" / "part-0.parquet").names


@pytest.mark.parametrize("shuffle", [True, False])
def test_start_batch_resumes_the_tail_of_the_pass(tmp_path, shuffle):
    ds, days = _dataset(tmp_path, [70, 33])
    cfg = _config(batch_size=10, shuffle=shuffle)
    full = _ids(ContractLoader(cfg, days, ds, rank=1, world_size=2, epoch=3))
    resumed = ContractLoader(cfg, days, ds, rank=1, world_size=2)
    resumed.set_epoch(3, start_batch=4)
    tail = _ids(resumed)
    assert len(full) == len(resumed) == 6 and len(tail) == 2
    for a, b in zip(full[4:], tail):
        np.testing.assert_array_equal(a, b)
    assert resumed.stats.rows_read == sum(len(b) for b in tail)
    resumed.set_epoch(3, start_batch=6)
    assert _ids(resumed) == []


def test_pass_level_counts(tmp_path):
    ds, days = _dataset(tmp_path, [60])
    ld = ContractLoader(_config(batch_size=7), days, ds)
    batches = list(ld)
    table = pq.read_table(tmp_path / f"date={DAY}" / "part-0.parquet")
    item = np.asarray(table.column("item_id"))
    assert ld.stats.oov["item"] == int(((item < 0) | (item >= 10)).sum())
    assert ld.stats.filled["act"] == table.column("activity").null_count
    assert ld.stats.rows_read == 60 == sum(b.batch_size for b in batches)


def test_progress_bar_only_on_rank_zero(tmp_path, capsys):
    ds, days = _dataset(tmp_path, [40])
    for rank in (1, 0):
        list(
            ContractLoader(_config(batch_size=4), days, ds, rank=rank, world_size=2, progress=True)
        )
        err = capsys.readouterr().err
        assert ("batches" in err and "load" in err) == (rank == 0)


def test_clear_errors(tmp_path):
    ds, days = _dataset(tmp_path, [5])
    with pytest.raises(FileNotFoundError, match="no Parquet files for day 2026-03-02"):
        ContractLoader(_config(), "2026-03-01..2026-03-02", ds)
    with pytest.raises(ValueError, match="5 rows cannot be cut into 2 ranks x 3"):
        ContractLoader(_config(batch_size=1), days, ds, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        ContractLoader(_config(), days, ds, rank=2, world_size=2)
    with pytest.raises(ValueError, match="start_batch 2 is not in"):
        ContractLoader(_config(), days, ds, start_batch=2)


@pytest.mark.parametrize("shuffle", [True, False])
def test_train_and_holdout_split_the_rows_whatever_the_world_size(tmp_path, shuffle):
    ds, days = _dataset(tmp_path, [300, 200])
    cfg = _config(batch_size=16, shuffle=shuffle)

    def rows(split, world_size):
        return _rows_of_every_rank(cfg, days, ds, world_size, split=split, holdout_fraction=0.2)

    train, holdout = rows("train", 1), rows("holdout", 1)
    assert 60 <= len(holdout) <= 140  # about 20% of 500
    assert len(np.intersect1d(train, holdout)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, holdout])), np.arange(500))
    np.testing.assert_array_equal(rows("holdout", 2), holdout)
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        ContractLoader(cfg, days, ds, split="holdout", holdout_fraction=0.0)


def _grouped_dataset(tmp_path, sizes, group_rows=23, seed=0):
    """Like :func:`_dataset`, but each day is two files of many small row groups."""
    rng = np.random.default_rng(seed)
    first = 0
    for i, n in enumerate(sizes):
        day = DAY + dt.timedelta(days=i)
        table = check_columns(_rows(n, first, day, rng), "test")
        folder = tmp_path / f"date={day}"
        folder.mkdir()
        pq.write_table(table.slice(0, n // 2), folder / "a.parquet", row_group_size=group_rows)
        pq.write_table(table.slice(n // 2), folder / "b.parquet", row_group_size=group_rows)
        first += n
    return tmp_path, [DAY + dt.timedelta(days=i) for i in range(len(sizes))]


def _streaming_config(batch_size, shuffle=True, buffer=50):
    cfg = _config(batch_size=batch_size, shuffle=shuffle)
    cfg.loader.shuffle_buffer = buffer
    return cfg


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("world_size", [1, 3])
def test_streaming_pass_holds_one_window_and_reads_every_row_once(
    tmp_path, monkeypatch, shuffle, world_size
):
    ds, days = _grouped_dataset(tmp_path, [180, 121])  # 301 rows, 14 row groups
    cfg = _streaming_config(batch_size=8, shuffle=shuffle)
    held = []
    original = _Arrays.empty

    def spy(n, config):
        held.append(n)
        return original(n, config)

    monkeypatch.setattr(_Arrays, "empty", staticmethod(spy))
    loaders = [
        ContractLoader(cfg, days, ds, rank=r, world_size=world_size) for r in range(world_size)
    ]
    per_rank = [_ids(ld) for ld in loaders]
    expected = math.ceil(301 / (world_size * 8))
    for ld, batches in zip(loaders, per_rank):
        assert len(ld) == len(batches) == expected
        assert all(1 <= len(b) <= 8 for b in batches)
    seen = np.concatenate([b for batches in per_rank for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(301))
    # a rank never holds more than its share of one window plus a batch's carry
    assert max(held) <= 50 // world_size + 1 + 8
    if shuffle:  # row groups are drawn across the pass: its first half mixes both days
        first = np.concatenate(per_rank[0][: expected // 2])
        assert (first < 180).any() and (first >= 180).any()
        assert np.ptp(first) >= len(first)  # not one run of rows in file order
    else:
        assert [x for b in per_rank[0] for x in b.tolist()] == sorted(
            x for b in per_rank[0] for x in b.tolist()
        )


def test_streaming_keeps_step_rows_across_world_sizes_seeds_and_resumes(tmp_path):
    ds, days = _grouped_dataset(tmp_path, [150, 90])
    one = _ids(ContractLoader(_streaming_config(16), days, ds, rank=0, world_size=1, epoch=1))
    two = [
        _ids(ContractLoader(_streaming_config(8), days, ds, rank=r, world_size=2, epoch=1))
        for r in (0, 1)
    ]
    assert len(one) == len(two[0]) == len(two[1]) == 15
    for t, rows in enumerate(one):
        np.testing.assert_array_equal(
            np.sort(np.concatenate([two[0][t], two[1][t]])), np.sort(rows)
        )
    again = _ids(ContractLoader(_streaming_config(16), days, ds, epoch=1))
    other = _ids(ContractLoader(_streaming_config(16), days, ds, epoch=2))
    assert all(np.array_equal(a, b) for a, b in zip(one, again))
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))
    # whole-pass shuffle differs from windowed shuffle only through the buffer size
    whole = _ids(ContractLoader(_streaming_config(16, buffer=240), days, ds, epoch=1))
    assert not all(np.array_equal(a, b) for a, b in zip(one, whole))
    for k in (4, 7, 15):
        resumed = ContractLoader(_streaming_config(8), days, ds, rank=1, world_size=2, epoch=1)
        resumed.set_epoch(1, start_batch=k)
        tail = _ids(resumed)
        assert len(tail) == 15 - k
        for a, b in zip(two[1][k:], tail):
            np.testing.assert_array_equal(a, b)
        assert resumed.stats.rows_read == sum(len(b) for b in tail)


def test_streaming_split_and_valid_rows(tmp_path):
    ds, days = _grouped_dataset(tmp_path, [200, 100])
    valid = np.random.default_rng(3).random(300) > 0.1

    def rows(split, buffer, world_size=2):
        cfg = _streaming_config(8, buffer=buffer)
        return _rows_of_every_rank(
            cfg, days, ds, world_size, split=split, holdout_fraction=0.3, valid=valid
        )

    for split in ("train", "holdout"):
        np.testing.assert_array_equal(rows(split, 40), rows(split, 10_000, world_size=1))
    train, holdout = rows("train", 40), rows("holdout", 40)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, holdout])), np.flatnonzero(valid))
    with pytest.raises(ValueError, match="valid has 299 entries for 300 rows"):
        ContractLoader(_config(), days, ds, valid=valid[:-1])
    path = tmp_path / "bad.yaml"
    path.write_text(
        "data: {dataset: d, scenarios: [0]}\n"
        "features: {sparse: [{name: u, column: user_id, num_embeddings: 3}]}\n"
        "loader: {shuffle_buffer: 0}\n"
    )
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: loader: loader\.shuffle_buffer must be >= 1"
    ):
        load_config(str(path))
