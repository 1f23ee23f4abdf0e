"""``aiops recommend``: the dry-run recommendation report (self-contained HTML plus JSON).

What aiops would have done over a stretch of real traffic, next to what actually ran and
next to the Kubernetes HPA and KEDA, replayed through the simulated cluster so every policy
is scored by the same model on the same requests.

Layout: ``model`` (the figures: plain dataclasses, the summary arithmetic, the JSON form),
``replay`` (the policy wrappers the replay needs: guardrails, the recorded replicas, the
forecast recorder), ``build`` (history or trace -> workload -> replay -> figures),
``history`` (reading a target's history from a Prometheus-like source), ``plots``
(matplotlib -> PNG), ``html`` (the page), ``cli`` (the command).

Nothing is imported here, so that ``aiops --help`` (which imports ``aiops.report.cli``) does
not pull in numpy, matplotlib or the simulator.
"""
