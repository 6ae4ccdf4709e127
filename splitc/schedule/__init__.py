"""Multi-device scheduling over edge servers and the cloud (DeePar), with splitc's exact three-tier split.

See :mod:`splitc.schedule.scenario` (the JSON format, the delay matrix) and :mod:`splitc.schedule.policies`
(offline ILP, DeePar's online algorithm, the simulator) and :mod:`splitc.schedule.rolling` (splitc's online
policy: every waiting task re-planned at each event); docs/three-tier.md.
"""
