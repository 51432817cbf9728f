"""The daily section of the config: hold-out, mid-day checkpoints, the gate, monitoring."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DailyConfig:
    """How ``jobs/train_daily.py`` trains, checks and publishes one day.

    Args:
        holdout_fraction: share of the day's rows held out of training (a fixed, seeded
            draw: :func:`protorec.pipeline.day_reader.holdout_mask`); the gate and the day's
            metrics are computed on them.
        checkpoint_every_steps: steps between mid-day checkpoints (a killed job resumes
            from the last one); 0 keeps only the end-of-day checkpoint.
        max_auc_drop: the gate refuses to publish when a scenario's hold-out AUC is lower
            than yesterday's model's on the same rows by more than this.
        min_gate_rows: scenarios with fewer hold-out rows (or without both classes) are
            reported but not gated: their AUC is too noisy to refuse a model on.
        dead_prototype_fraction: a DistProto prototype whose share of the day's plan mass
            is below this fraction of the uniform share 1/K is dead and is re-seeded from
            the day's representations before training.
        pushgateway: Pushgateway address (host:port); empty: ``$PROTOREC_PUSHGATEWAY``,
            and nothing is pushed when both are empty.
        textfile: node-exporter textfile to write the same series to; empty: none.
        job_name: the Prometheus ``job`` label of the pushed series.
        keep_checkpoints: end-of-day checkpoints kept (the newest; 0 keeps all), pruned
            after each published day; ``LAST_GOOD``'s and ``*.partial`` are always kept.
        keep_exports: exports kept likewise (``LAST_GOOD``'s always).
        tensorboard: write TensorBoard events of each day (training steps, the hold-out
            figures per scenario) to ``W/tensorboard/<date>/``; needs the tensorboard
            package.
        warm_start_rename: modules renamed since yesterday, ``{old prefix: new prefix}``
            of state-dict keys (e.g. ``sparse_arch.embedding_bags.author:
            sparse_arch.embedding_bags.creator``), so the warm start loads them; what
            else changed (new, removed or resized tensors) is initialised or skipped
            and logged without one.
        max_invalid_share: the day's rows are checked by the data contract's rules (as
            at ingest) before any work; invalid rows are left out and counted, and a day
            with a larger share of them stops the job (exit 6) instead.
    """

    holdout_fraction: float = 0.1
    checkpoint_every_steps: int = 100
    max_auc_drop: float = 0.01
    min_gate_rows: int = 500
    dead_prototype_fraction: float = 0.1
    pushgateway: str = ""
    textfile: str = ""
    job_name: str = "protorec_train_daily"
    keep_checkpoints: int = 7
    keep_exports: int = 7
    tensorboard: bool = False
    warm_start_rename: dict[str, str] = field(default_factory=dict)
    max_invalid_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.keep_checkpoints < 0 or self.keep_exports < 0:
            raise ValueError("daily.keep_checkpoints and daily.keep_exports must be >= 0")
        if self.checkpoint_every_steps < 0 or self.min_gate_rows < 0:
            raise ValueError("checkpoint_every_steps and min_gate_rows must be >= 0")
        if not 0.0 <= self.max_invalid_share < 1.0:
            raise ValueError("max_invalid_share must be in [0, 1)")
        if self.max_auc_drop < 0:
            raise ValueError(f"max_auc_drop must be >= 0, got {self.max_auc_drop}")
        if not 0.0 <= self.dead_prototype_fraction < 1.0:
            raise ValueError("dead_prototype_fraction must be in [0, 1)")
        if not self.job_name:
            raise ValueError("job_name must not be empty")
