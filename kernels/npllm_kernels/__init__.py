"""npllm_kernels: compiled kernels for npllm's hot ops (``cpu``: Numba @njit; ``cuda``: Numba CUDA).

Each kernel has exactly the name, signature and contract of the reference op in ``npllm.layers`` it
replaces; ``npllm.backend`` picks them up.  Importing this package imports nothing heavy.
"""
