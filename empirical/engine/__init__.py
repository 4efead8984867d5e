"""The model engine: what every stage uses to load a model and measure log-probabilities.

* :mod:`empirical.engine.models` -- model registry, offline installation, loading.
* :mod:`empirical.engine.render` -- chat rendering and tokenization (the exact token sequences scored and trained).
* :mod:`empirical.engine.batching` -- the exact fast scoring engine (shared prefixes, packed batches).
* :mod:`empirical.engine.scoring` -- log-probabilities of completions ``log Pr_M[r | s, p]`` and pair margins.
* :mod:`empirical.engine.threads` -- CPU compute threads for the model commands.

The engine knows nothing of pair files, settings or stages.

May import: lls_common, lls_theory.
"""
