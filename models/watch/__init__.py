"""Watch-time heads: one per ``model.watch.head``, each a tower next to click's.

- ``head.py``: the contract every head keeps (:class:`WatchHead`) and the shared target.
- ``tr.py``: TR, plain regression on watch time.
- ``wlr.py``: WLR (Covington et al., 2016), weighted logistic regression, odds = watch time.
- ``d2q.py``: D2Q (Zhan et al., 2022), duration-deconfounded quantile regression.
- ``tpm.py``: TPM (Lin et al., 2023), tree-based progressive ordinal classification.
- ``../prowtp.py``: ProWTP (Cui, Tang et al., 2025), credible prototypes aligned by L2 SUOT.
- ``mean_ratio.py``: the no-training yardstick, duration x the training days' mean watch ratio.
- ``ratio.py``: the watch ratios a head fits from the training days (quantile tables,
  the HVQ-VAE codebook).
"""
