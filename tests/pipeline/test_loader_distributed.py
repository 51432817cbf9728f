"""Exactly-once under ``torchrun`` with 2 gloo processes.

The test runs this file as the torchrun worker script (``__main__`` below): each rank
iterates several passes with the rank and world size taken from torch.distributed and
saves the unique row id (``user_id``) of every row it got, batch by batch.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 4, 1)
SIZES = [700, 331]  # 1031 rows: not a multiple of world_size * batch_size = 2 * 64
BATCH = 64
#: (name, epoch, shuffle, start_batch, shuffle_buffer) of the passes each rank runs; a
#: buffer below the pass's 1031 rows streams it in windows (None: the config's default).
PASSES = [
    ("e0", 0, True, 0, None),
    ("e0_again", 0, True, 0, None),
    ("e1", 1, True, 0, None),
    ("plain", 0, False, 0, None),
    ("e1_from_5", 1, True, 5, None),
    ("stream", 0, True, 0, 300),
    ("stream_from_3", 0, True, 3, 300),
    ("stream_plain", 0, False, 0, 300),
]


def _write_dataset(root: Path) -> None:
    from protorec.pipeline.contract import check_columns, write_day

    rng = np.random.default_rng(0)
    first = 0
    for i, n in enumerate(SIZES):
        day = DAY + dt.timedelta(days=i)
        t0 = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        table = pa.table(
            {
                "user_id": np.arange(first, first + n, dtype=np.int64),
                "item_id": rng.integers(0, 100, n),
                "scenario": rng.integers(0, 3, n).astype(np.int32),
                "ts_ms": t0 + rng.integers(0, 86_400_000, n),
                "click": rng.integers(0, 2, n).astype(np.int8),
                "watch_ms": rng.uniform(0, 1e4, n),
                "duration_ms": rng.uniform(1e3, 1e5, n),
            }
        )
        table = check_columns(table, "test")
        write_day(root, day, table, table.slice(0, 0))
        first += n


def _config_dict(dataset: Path) -> dict:
    return {
        "data": {"dataset": str(dataset), "scenarios": [0, 1, 2]},
        "features": {
            "sparse": [{"name": "item", "column": "item_id", "num_embeddings": 50}],
            "dense": [{"name": "dur", "column": "duration_ms", "transform": "log1p"}],
        },
        "loader": {"batch_size": BATCH, "seed": 7},
    }


def _worker(config_path: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from protorec.pipeline.config import load_yaml
    from protorec.pipeline.job_config import ProtorecConfig
    from protorec.pipeline.loader import ContractLoader

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    config = load_yaml(ProtorecConfig, config_path)
    days = [DAY + dt.timedelta(days=i) for i in range(len(SIZES))]
    rank = dist.get_rank()
    saved = {}
    default = config.loader.shuffle_buffer
    for name, epoch, shuffle, start, buffer in PASSES:
        config.loader.shuffle_buffer = buffer or default
        loader = ContractLoader(config, days, shuffle=shuffle, epoch=epoch, start_batch=start)
        ids = [b.user_id.numpy().copy() for b in loader]
        saved[f"{name}_ids"] = np.concatenate(ids)
        saved[f"{name}_sizes"] = np.array([len(i) for i in ids])
        saved[f"{name}_len"] = np.array(len(loader))
        total = loader.stats.all_reduce()
        saved[f"{name}_rows_all_ranks"] = np.array(total.rows_read)
        saved[f"{name}_oov_all_ranks"] = np.array(total.oov["item"])
    np.savez(Path(out_dir) / f"rank{rank}.npz", **saved)
    dist.destroy_process_group()


def test_two_ranks_read_every_row_exactly_once(tmp_path):
    dataset = tmp_path / "data"
    _write_dataset(dataset)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config_dict(dataset)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__)),
        str(config_path),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    n = sum(SIZES)
    items = pq.read_table(dataset, columns=["item_id"]).column("item_id").to_numpy()
    oov = int((items >= 49).sum())  # num_embeddings 50: ids 0..48 kept
    nb = -(-n // (2 * BATCH))
    for name, _, _, start, _ in PASSES:
        ids = [r[f"{name}_ids"] for r in ranks]
        sizes = [r[f"{name}_sizes"] for r in ranks]
        # every rank: the same number of non-empty batches of at most BATCH rows
        assert [len(s) for s in sizes] == [nb - start] * 2, name
        assert all(s.min() >= 1 and s.max() <= BATCH for s in sizes), name
        assert all(int(r[f"{name}_len"]) == nb for r in ranks)
        assert len(np.intersect1d(ids[0], ids[1])) == 0, name
        if start == 0:
            union = np.sort(np.concatenate(ids))
            np.testing.assert_array_equal(union, np.arange(n), err_msg=name)
            assert all(int(r[f"{name}_rows_all_ranks"]) == n for r in ranks)
            assert all(int(r[f"{name}_oov_all_ranks"]) == oov for r in ranks)
    for r in ranks:
        np.testing.assert_array_equal(r["e0_ids"], r["e0_again_ids"])  # seeded
        assert not np.array_equal(r["e0_ids"], r["e1_ids"])  # reshuffled per epoch
        # the resumed pass is the tail of the full pass, batch for batch
        tail = r["e1_ids"][int(r["e1_sizes"][:5].sum()) :]
        np.testing.assert_array_equal(r["e1_from_5_ids"], tail)
        tail = r["stream_ids"][int(r["stream_sizes"][:3].sum()) :]
        np.testing.assert_array_equal(r["stream_from_3_ids"], tail)
        np.testing.assert_array_equal(r["stream_plain_ids"], r["plain_ids"])  # same cut
        assert not np.array_equal(r["stream_ids"], r["e0_ids"])  # windows: another order
    # without shuffle, global batch t is a contiguous run of the files' order, split in two:
    # each rank's rows ascend, and together the ranks cover every row
    for r in ranks:
        assert np.all(np.diff(r["plain_ids"]) > 0)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([r["plain_ids"] for r in ranks])), np.arange(n)
    )
    # shuffling mixes the whole pass across ranks: each rank gets rows of both days
    for r in ranks:
        assert (r["e0_ids"] < SIZES[0]).any() and (r["e0_ids"] >= SIZES[0]).any()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
