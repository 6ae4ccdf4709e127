"""Multi-device scheduling over edge servers and the cloud (DeePar), with splitc's exact three-tier split.

See :mod:`splitc.schedule.scenario` (the JSON format, the delay matrix) and :mod:`splitc.schedule.policies`
(offline ILP, DeePar's online algorithm, splitc's online policy, the simulator); docs/three-tier.md.
"""
