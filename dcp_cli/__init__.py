"""The `dcp` console script (SPEC section 7); each sub-command imports its package lazily."""
