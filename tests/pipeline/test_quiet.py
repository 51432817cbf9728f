"""Third-party warnings are silenced at their source modules, and nowhere else."""

import warnings

from protorec.pipeline.quiet import quiet_third_party_warnings


def test_third_party_warnings_are_ignored_at_their_source_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        for module, category in [
            ("torchrec.optim.clipping", FutureWarning),
            ("torchrec", DeprecationWarning),
            ("fbgemm_gpu.split_table_batched_embeddings_ops", DeprecationWarning),
            ("protorec.pipeline.trainer", FutureWarning),  # ours: to be fixed, so shown
            ("torchrec_extra", FutureWarning),  # another package
            ("torchrec.optim.clipping", UserWarning),  # another kind
        ]:
            warnings.warn_explicit(
                f"{module} {category.__name__}", category, "f.py", 1, module=module
            )
    assert [str(w.message) for w in caught] == [
        "protorec.pipeline.trainer FutureWarning",
        "torchrec_extra FutureWarning",
        "torchrec.optim.clipping UserWarning",
    ]
