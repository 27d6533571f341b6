"""Scoring models, framework-free: lm-eval on a model in memory (``harness``), what a score was computed
under (``fingerprints``), candidates scored in worker processes (``workers``), benchmark rows turned into
capability scores (``scores``), per-item scores from lm-eval's samples (``samples``) and the paired
analysis of differences on the same items (``paired``), the proxy-fidelity metrics of the validation study (``fidelity``),
and its pre-registered comparison: the paired t-interval over seeds (``judging``), the protocol's hash, ledger of
attempts and RegMix's independent swarm (``protocol``).
A new benchmark is a task YAML (+ data) in ``tasks/`` or the team's ``evaluation.tasks_dir``, no code."""
