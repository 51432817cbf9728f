"""Evaluation on 2 processes: predictions go to rank 0 only, metrics are the same as before.

Two gloo processes each hold one half of a set of rows' scores and keys (as after
``trainer.predict_pass``'s loop). ``gather_to_rank0`` must give rank 0 every row, in order,
and rank 1 nothing; the metrics rank 0 computes and broadcasts must equal, exactly, those
of the previous path (every rank all-gathering every row) and those of one process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from protorec.pipeline.metrics import compute_metrics

N = 1001

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from protorec.pipeline.distributed import broadcast_from_rank0, gather_to_rank0
    from protorec.pipeline.metrics import compute_metrics

    sys.path.insert(0, sys.argv[4])
    from test_predict_gather import rows

    port, rank, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    every = rows()
    half = slice(0, 600) if rank == 0 else slice(600, None)  # unequal shares
    local = {k: v[half] for k, v in every.items()}
    gathered = gather_to_rank0(local)
    metrics = broadcast_from_rank0(
        compute_metrics(**gathered) if gathered is not None else None)
    everyone = [None, None]  # the path before: every rank gets every row
    dist.all_gather_object(everyone, local)
    before = compute_metrics(**{k: np.concatenate([g[k] for g in everyone]) for k in local})
    json.dump({"rows": None if gathered is None else len(gathered["click"]),
               "in_order": gathered is not None and all(
                   np.array_equal(gathered[k], every[k]) for k in every),
               "metrics": metrics, "before": before}, open(out, "w"))
    dist.destroy_process_group()
""")


def rows():
    """Scores and keys of N rows (the same in every process)."""
    rng = np.random.default_rng(0)
    return {
        "click": (rng.random(N) < 0.4).astype(np.float32),
        "p_click": rng.random(N).astype(np.float32),
        "scenario": rng.integers(0, 3, N),
        "user_id": rng.integers(0, 60, N),
        "day": rng.integers(20_000, 20_002, N),
    }


def test_two_ranks_gather_predictions_to_rank_zero_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    outs = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    here = os.path.dirname(__file__)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(r), str(outs[r]), here],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    got = [json.loads(o.read_text()) for o in outs]
    assert [g["rows"] for g in got] == [N, None] and got[0]["in_order"]
    assert got[0]["metrics"] == got[1]["metrics"] == got[0]["before"] == got[1]["before"]
    one = json.loads(json.dumps(compute_metrics(**rows())))  # same float -> JSON round trip
    assert got[0]["metrics"] == one and one["overall"]["samples"] == N
