"""A RecModel's ``predict`` on plain tensors, for ``torch.export`` and servers without protorec.

TorchRec's EmbeddingBagCollection takes a KeyedJaggedTensor and dispatches to fbgemm
kernels, neither of which a server process should need; :class:`InferenceModule` puts
each table's weight into a plain ``nn.EmbeddingBag`` (``F.embedding_bag``, the table's
pooling) and then calls the model's own dense path (:meth:`DenseArch.predict`), so the two
agree to float rounding and nothing is written twice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchrec.modules.embedding_configs import pooling_type_to_str

from protorec.models.base import DenseArch, RecModel
from protorec.models.watch.head import check_fitted


class InferenceModule(nn.Module):
    """``RecModel.predict`` with one (values, offsets) pair per sparse feature.

    Args:
        model: the model; its tables' weights and its dense arch are shared, not copied.

    Shapes (B rows, F sparse features in ``feature_names`` order, D_dense dense features):
        values: F tensors (N_f,) int64, the ids of feature f, already mapped into its table
            (as the loader maps them: hashed, or out-of-range ids to the last row);
        offsets: F tensors (B,) int64, where each row's ids start in ``values[f]`` (row b's
            ids run to the next row's start, the last row's to the end): a
            KeyedJaggedTensor key's offsets without the last. Not the (B + 1,) form: its
            ``include_last_offset`` makes torch.export rule out a batch of one row;
        dense: (B, D_dense) float32, normalised as the loader does;
        scenario: (B,) int64 scenario index in [0, S);
        duration_ms: (B,) float32 item duration (NaN where unknown; read by watch heads only)
        ->  {"click_prob": (B,)} and, with a watch head, {"watch_pred_ms": (B,)}.

    >>> from protorec.models.config import ModelConfig
    >>> from protorec.models.embedding import build_ebc
    >>> from protorec.models.features import FeaturesConfig, SparseFeature
    >>> from protorec.models.registry import build_dense_arch
    >>> ebc = build_ebc(FeaturesConfig([SparseFeature("user", "user_id", 10, 4)]), "cpu")
    >>> model = RecModel(ebc, build_dense_arch(4, 2, 3, ModelConfig(name="mmoe")))
    >>> module = InferenceModule(model).eval()
    >>> ids, offsets = [torch.tensor([1, 5, 2])], [torch.tensor([0, 2])]  # rows {1, 5}, {2}
    >>> out = module(ids, offsets, torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2))
    >>> list(out), out["click_prob"].shape
    (['click_prob'], torch.Size([2]))
    """

    def __init__(self, model: RecModel) -> None:
        super().__init__()
        self.feature_names = list(model.feature_names)
        self.bags = nn.ModuleDict()
        table_of: dict[str, str] = {}
        for table in model.sparse_arch.embedding_bag_configs():
            weight = model.sparse_arch.embedding_bags[table.name].weight.detach()
            self.bags[table.name] = nn.EmbeddingBag.from_pretrained(
                weight, freeze=True, mode=pooling_type_to_str(table.pooling)
            )
            table_of.update(dict.fromkeys(table.feature_names, table.name))
        self.tables = [table_of[name] for name in self.feature_names]
        self.dense_arch: DenseArch = model.dense_arch
        head = model.dense_arch.watch_head
        if head is not None:
            check_fitted(head)  # the traced program cannot check it (see check_fitted)

    def forward(
        self,
        values: list[Tensor],
        offsets: list[Tensor],
        dense: Tensor,
        scenario: Tensor,
        duration_ms: Tensor,
    ) -> dict[str, Tensor]:
        pooled = torch.cat(
            [self.bags[table](v, o) for table, v, o in zip(self.tables, values, offsets)], dim=1
        )
        return self.dense_arch.predict(pooled, dense, scenario, duration_ms)
