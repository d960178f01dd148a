"""A CPU demo that learns: a seeded arithmetic-with-reasoning task, a small warmed-up starting policy, and its
evaluation (``task``, ``policy``, ``evaluate_policy``; these import nothing from veRL). The same task with a
calculator tool for veRL's multi-turn tool agent loop: ``calculator_tool`` (a veRL ``BaseTool``) and
``tool_task`` (its tiny tool-calling policy and data)."""
