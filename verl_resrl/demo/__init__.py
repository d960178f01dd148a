"""A CPU demo that learns: a seeded arithmetic-with-reasoning task, a small warmed-up starting policy, and its
evaluation (``task``, ``policy``, ``evaluate_policy``). Nothing here imports veRL."""
