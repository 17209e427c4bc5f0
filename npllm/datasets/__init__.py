"""Sequence-to-sequence data: the built-in dates task (:mod:`npllm.datasets.dates`) and a user's
tab-separated source/target pairs, with their vocabularies and padded batches (:mod:`npllm.datasets.pairs`).
"""
