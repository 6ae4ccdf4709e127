"""Multi-device scheduling (splitc.schedule): the ILP against brute force, online policies feasible,
splitc's re-planning policy against brute force on a contended slot, the delay matrix against the
partitioner, and one-line errors for bad scenarios."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from splitc.partition import solve_tiers
from splitc.schedule.policies import USES, check_feasible, run_policy, solve_ilp
from splitc.schedule.scenario import ScenarioError, generate, load_scenario, parse_scenario


def tiny(seed: int, devices: int = 3, edges: int = 2) -> dict:
    data = generate(devices, edges, 10.0, seed=seed, models=("lenet", "chain_cnn"), max_samples=50)
    rng = np.random.default_rng(seed)
    for e in data["edges"]:  # scarce: one or two slots, backbone for about one task
        e["slots"] = int(rng.integers(1, 3))
        e["uplink_mbps"] = float(rng.uniform(30, 400))
        e["backbone_mbps"] = float(rng.uniform(10, 60))
    return data


def brute_force_ilp(scn) -> float:
    W = scn.delay_matrix()
    n, m = W.shape[0], len(scn.edges)
    best = np.inf
    for choice in itertools.product(*[np.flatnonzero(np.isfinite(W[i])) for i in range(n)]):
        slots, b1, b2 = np.zeros(m), np.zeros(m), np.zeros(m)
        for i, j in enumerate(choice):
            if j == 0:
                continue
            mode = ("edge", "cloud", "full")[(j - 1) // m]
            e = (j - 1) % m
            slots[e] += USES[mode][0]
            b1[e] += scn.devices[i].max_uplink * USES[mode][1]
            b2[e] += scn.devices[i].max_backbone * USES[mode][2]
        if all(slots[e] <= scn.edges[e].slots and b1[e] <= scn.edges[e].uplink and b2[e] <= scn.edges[e].backbone
               for e in range(m)):
            best = min(best, sum(W[i, j] for i, j in enumerate(choice)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_ilp_is_optimal_against_brute_force(seed):
    scn = parse_scenario(tiny(seed))
    s = solve_ilp(scn, time_limit=20)
    assert s.optimal
    assert s.total_s == pytest.approx(brute_force_ilp(scn), rel=1e-7)
    check_feasible(scn, s.placements)


@pytest.mark.parametrize("policy", ["device-only", "edge-only", "cloud-only", "deepar", "splitc-greedy", "splitc"])
@pytest.mark.parametrize("seed", range(3))
def test_online_policies_feasible(policy, seed):
    data = tiny(seed, devices=8)
    for d in data["devices"]:
        d["arrival_s"] = d["arrival_s"] * 0.1  # all at once: the edge servers are contended
    scn = parse_scenario(data)
    s = run_policy(scn, policy)
    check_feasible(scn, s.placements)
    assert len(s.placements) == len(scn.devices)
    assert np.all(s.delays > 0)
    if policy in ("deepar", "splitc-greedy", "splitc"):  # never worse than running everything on the device
        local = run_policy(scn, "device-only")
        assert s.total_s <= local.total_s + 1e-9


def one_slot(samples, arrivals) -> dict:
    """VGG-16 tasks on Raspberry Pi 4 devices (the edge is some 25x faster) sharing one edge slot; the
    backbone is so thin that going via the cloud is slower than running on the device."""
    return {"cloud": {"target": "t4"}, "links": {"device_edge_rtt_ms": 2.0, "edge_cloud_rtt_ms": 20.0},
            "edges": [{"name": "edge0", "target": "gtx-1080ti", "slots": 1, "uplink_mbps": 10000,
                       "backbone_mbps": 0.01}],
            "devices": [{"name": f"dev{k}", "model": "vgg16", "target": "raspberry-pi-4", "edges": ["edge0"],
                         "samples": n, "arrival_s": a, "max_uplink_mbps": 100, "max_backbone_mbps": 0.01}
                        for k, (n, a) in enumerate(zip(samples, arrivals))]}


def one_slot_optimum(scn) -> float:
    """Least total delay of tasks all arriving at 0: every split device-only / edge slot, every slot order."""
    W = scn.delay_matrix()  # columns: device, edge, cloud, full (one edge server)
    assert np.all(W[:, 2] >= W[:, 0])  # via the cloud never pays, so only device-only and the slot remain
    local, slot = W[:, 0], np.minimum(W[:, 1], W[:, 3])
    n, best = len(W), np.inf
    for on_slot in itertools.product([False, True], repeat=n):
        users = [i for i in range(n) if on_slot[i]]
        for order in itertools.permutations(users):
            finish = np.cumsum([slot[i] for i in order])
            best = min(best, finish.sum() + sum(local[i] for i in range(n) if not on_slot[i]))
    return best


def arrival_order_total(scn) -> float:
    """DeePar on one slot, all tasks at 0: in turn, each takes the earlier finish of device-only and the slot
    after those before it (its w + delta t)."""
    W = scn.delay_matrix()
    free, total = 0.0, 0.0
    for i in range(len(W)):
        slot = min(W[i, 1], W[i, 3])
        if free + slot < W[i, 0]:
            free += slot
            total += free
        else:
            total += W[i, 0]
    return total


def test_splitc_reorders_a_contended_slot_to_the_optimum():
    scn = parse_scenario(one_slot([300, 200, 30, 100], [0.0] * 4))  # long ones first
    optimum, fifo = one_slot_optimum(scn), arrival_order_total(scn)
    deepar, splitc = run_policy(scn, "deepar"), run_policy(scn, "splitc")
    for s in (deepar, splitc):
        check_feasible(scn, s.placements)
    assert deepar.total_s == pytest.approx(fifo, rel=1e-9)
    assert splitc.total_s == pytest.approx(optimum, rel=1e-9)
    assert splitc.total_s < deepar.total_s
    # shortest first: 30, 100, 200, 300 samples
    assert [p.task for p in sorted(splitc.placements, key=lambda p: p.start)] == [2, 3, 1, 0]


def test_splitc_replans_waiting_tasks_when_later_ones_arrive():
    # the long task starts at once (nothing else is known); by the time the slot frees, the short ones have
    # arrived and go before the medium one that arrived first
    scn = parse_scenario(one_slot([300, 200, 30, 100], [0.0, 0.5, 1.0, 1.5]))
    deepar, splitc = run_policy(scn, "deepar"), run_policy(scn, "splitc")
    check_feasible(scn, splitc.placements)
    assert [p.task for p in sorted(deepar.placements, key=lambda p: p.start)] == [0, 1, 2, 3]
    assert [p.task for p in sorted(splitc.placements, key=lambda p: p.start)] == [0, 2, 3, 1]
    assert splitc.total_s < deepar.total_s


@pytest.mark.parametrize("seed", range(3))
def test_splitc_feasible_and_not_worse_on_congested_random_scenarios(seed):
    data = generate(14, 2, 20.0, seed=seed, models=("vgg16", "lenet"), max_samples=300)
    for e in data["edges"]:
        e["slots"] = 1
    for d in data["devices"]:
        d["target"] = "raspberry-pi-4"
    scn = parse_scenario(data)
    splitc, deepar = run_policy(scn, "splitc"), run_policy(scn, "deepar")
    check_feasible(scn, splitc.placements)
    assert sorted(p.task for p in splitc.placements) == list(range(len(scn.devices)))
    assert splitc.total_s <= deepar.total_s * (1 + 1e-9)


def test_delay_matrix_is_the_partitioners_optimum():
    scn = parse_scenario(tiny(1))
    W = scn.delay_matrix()
    d, m = scn.devices[0], len(scn.edges)
    e = d.edges[0]
    p = scn.problem(0, e).with_links(scn.links(d.max_uplink, d.max_backbone))
    assert W[0, 1 + 2 * m + e] == pytest.approx(d.samples * solve_tiers(p).total_ms / 1e3)
    assert W[0, 0] == pytest.approx(d.samples * solve_tiers(p.restricted([0])).total_ms / 1e3)
    # more tiers can only help: full <= edge, full <= cloud, full <= device
    for i in range(len(scn.devices)):
        for e in scn.devices[i].edges:
            assert W[i, 1 + 2 * m + e] <= min(W[i, 0], W[i, 1 + e], W[i, 1 + m + e]) * (1 + 1e-9)
    assert np.isinf(W[0, [1 + k for k in range(m) if k not in d.edges]]).all()


@pytest.mark.parametrize("path, value, message", [
    (("edges", 0, "slots"), 0, r"edges\[0\]\.slots: must be a positive integer"),
    (("edges", 1, "uplink_mbps"), -5, r"edges\[1\]\.uplink_mbps: must be positive"),
    (("devices", 2, "max_backbone_mbps"), None, r"devices\[2\]\.max_backbone_mbps: missing"),
    (("devices", 0, "samples"), 2.5, r"devices\[0\]\.samples: must be a positive integer"),
    (("edges", 0, "backbone_mbps"), "fast", r"edges\[0\]\.backbone_mbps: must be a number"),
    (("devices", 1, "target"), "pixel", r"devices\[1\]\.target: unknown target 'pixel'"),
])
def test_bad_capacities_one_line(path, value, message):
    data = tiny(0)
    obj = data
    for key in path[:-1]:
        obj = obj[key]
    if value is None:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario(data)
    assert "\n" not in str(info.value)


def test_unreachable_device_reported_by_name():
    data = tiny(0)
    data["devices"][1]["edges"] = []
    data["devices"][1]["local"] = False
    with pytest.raises(ScenarioError, match=r"device 'dev1' is unreachable"):
        parse_scenario(data)
    data["devices"][1]["local"] = True  # reachable by nobody but can run locally: scheduled, with a warning
    scn = parse_scenario(data)
    assert any("dev1" in w for w in scn.warnings)
    assert run_policy(scn, "splitc").placements[1].mode == "device"
    data["devices"][0]["edges"] = ["nowhere"]
    with pytest.raises(ScenarioError, match=r"device 'dev0' names unknown edge server 'nowhere'"):
        parse_scenario(data)


def test_infeasible_ilp_names_the_binding_family():
    data = tiny(2, devices=3, edges=1)
    for d in data["devices"]:
        d["local"] = False
        d["edges"] = ["edge0"]
    data["edges"][0].update(slots=5, uplink_mbps=1000.0, backbone_mbps=1.0)  # backbone fits no task
    for d in data["devices"]:
        d["max_uplink_mbps"] = 600.0  # at most one task on the uplink
    with pytest.raises(ScenarioError, match=r"infeasible: it binds on the device-edge bandwidth constraints \(22\)"):
        solve_ilp(parse_scenario(data), time_limit=10)


def test_load_scenario_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(tiny(3)))
    assert len(load_scenario(path).devices) == 3
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ScenarioError, match="not JSON"):
        load_scenario(tmp_path / "bad.json")


def test_cli_schedule(tmp_path):
    from typer.testing import CliRunner

    from splitc.cli import app

    path = tmp_path / "s.json"
    path.write_text(json.dumps(tiny(4)))
    result = CliRunner().invoke(app, ["schedule", str(path), "--policy", "ilp", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["schedules"][0]["policy"] == "offline ILP"


def test_packages_do_not_import_cli_api_or_runtime():
    import subprocess
    import sys

    code = ("import sys, splitc.partition, splitc.schedule.policies, splitc.schedule.scenario, "
            "splitc.schedule.models; bad = [m for m in sys.modules if m in ('splitc.cli', 'splitc.api') "
            "or m.startswith('splitc.runtime')]; print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
