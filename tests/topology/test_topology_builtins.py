"""Built-in topologies: every one validates and plans; hubs delays are plausible."""

from __future__ import annotations

import itertools
import statistics

import networkx as nx
import pytest

from testbed.errors import SpecError
from testbed.topology.plan import build_plan
from testbed.topology.spec import MAX_NODE_NAME, builtin_names, builtin_params, load_topology
from topologies import hubs as hubs_gen

BUILTINS = ["pair", "dumbbell", "parking-lot", "hubs"]


def test_builtin_names():
    assert set(BUILTINS) <= set(builtin_names())
    assert builtin_names().count("hubs") == 1  # hubs.yaml is data for hubs.py, not a second topology


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_validates_and_plans(name):
    spec = load_topology(name)
    plan = build_plan(spec)
    g = nx.Graph([(lk.a, lk.b) for lk in spec.links])
    assert nx.is_connected(g) and set(g) == set(spec.nodes)
    assert all(len(n) <= MAX_NODE_NAME for n in spec.nodes)
    eps = spec.endpoints()
    assert len(plan.paths) == len(eps) * (len(eps) - 1)
    assert not plan.warnings
    assert isinstance(builtin_params(name), dict)


def test_builtin_file_path_also_loads():
    import importlib.resources

    path = importlib.resources.files("topologies").joinpath("pair.yaml")
    assert load_topology(str(path)).name == "pair"


def test_dumbbell_pairs_cross_the_bottleneck():
    spec = load_topology("dumbbell", params={"n": 3})
    plan = build_plan(spec)
    for k in (1, 2, 3):
        src, dst = f"h{2 * k - 1}", f"h{2 * k}"
        links = [lk.label for lk, _ in plan.hop_links(src, dst)]
        assert "bottleneck" in links
        assert plan.path_delay_ms(src, dst) == 10
        assert plan.path_bottleneck_mbps(src, dst) == 100
    assert "bottleneck" not in [lk.label for lk, _ in plan.hop_links("h1", "h3")]


def test_parking_lot_flows():
    plan = build_plan(load_topology("parking-lot", params={"hops": 4}))
    long = [lk.label for lk, _ in plan.hop_links("src", "dst")]
    assert [x for x in long if x.startswith("hop")] == ["hop1", "hop2", "hop3", "hop4"]
    for i in range(1, 5):
        cross = [lk.label for lk, _ in plan.hop_links(f"s{i}", f"d{i}")]
        assert [x for x in cross if x.startswith("hop")] == [f"hop{i}"]


def test_generator_param_range():
    with pytest.raises(SpecError, match=r"params\.hops"):
        load_topology("parking-lot", params={"hops": 0})


# ---------------------------------------------------------------------------- hubs


@pytest.fixture(scope="module")
def hubs():
    spec = load_topology("hubs")
    return spec, build_plan(spec)


def test_hubs_size_and_contents(hubs):
    spec, _ = hubs
    assert len(spec.nodes) <= 72
    assert spec.operators() == ["cm", "ct", "cu"]
    data = hubs_gen.load_data()
    hub_nodes = [n for n in spec.nodes.values() if n.kind == "hub"]
    assert len(hub_nodes) == len(data["clusters"]) * 3
    for n in hub_nodes:
        assert n.lat is not None and n.lon is not None and n.operator and n.region
    assert spec.meta["scale"]["capacity_factor"] == pytest.approx(0.001)
    bb = [lk for lk in spec.links if lk.name and lk.name.startswith("ct-")]
    assert bb and all(lk.ab.bw_mbps == 400 for lk in bb)
    # metro links are short
    for lk in spec.links:
        if lk.name and lk.name.startswith("m-"):
            assert lk.ab.delay_ms <= 1.0


def test_hubs_intra_operator_delay_plausible(hubs):
    _, plan = hubs
    theory = 8.9  # Zhangjiakou–Shaoguan great circle 1,784 km x 5 us/km
    d = plan.path_delay_ms("zjk-ct", "sg-ct")
    assert 1.5 * theory <= d <= 2.5 * theory
    clusters = list(hubs_gen.load_data()["clusters"])
    for op in ("ct", "cm", "cu"):
        delays = [
            plan.path_delay_ms(f"{a}-{op}", f"{b}-{op}") for a, b in itertools.combinations(clusters, 2)
        ]
        assert 12.0 <= statistics.mean(delays) <= 17.0  # CAICT IP private network average: 14.6 ms
        assert max(delays) <= 28.7  # below the public-Internet maximum


def test_hubs_paths_respect_operators(hubs):
    spec, plan = hubs
    op = {n: s.operator for n, s in spec.nodes.items()}
    for (src, dst), path in plan.paths.items():
        ops = [op[n] for n in path]
        if op[src] == op[dst]:
            assert set(ops) == {op[src]}, path  # intra-operator traffic stays inside
        else:
            # A ... A [neutral ...] B ... B: one boundary crossing, no third operator
            first_b = ops.index(op[dst])
            assert set(ops[:first_b]) <= {op[src], None} and set(ops[first_b:]) == {op[dst]}, path
            assert ops[0] == op[src]


def test_hubs_cross_operator_detour(hubs):
    _, plan = hubs
    intra = plan.path_delay_ms("zjk-ct", "sg-ct")
    cross = plan.path_delay_ms("zjk-ct", "sg-cm")
    assert cross >= intra
    # same city, different operators, no interconnection point there: a hairpin via Beijing
    local = plan.path_delay_ms("zjk-ct", "zjk-cm")
    assert local > 2.0
    assert any(n.endswith("-bj") for n in plan.path("zjk-ct", "zjk-cm"))
    # Zhongwei has a neutral exchange point
    assert "ix-zw" in plan.path("zw-ct", "zw-cu")


def test_hubs_params():
    spec = load_topology("hubs", params={"sites": "zjk,sg", "operators": "ct,cm", "route_factor": 2.0})
    plan = build_plan(spec)
    assert {n for n, s in spec.nodes.items() if s.kind == "hub"} == {"zjk-ct", "zjk-cm", "sg-ct", "sg-cm"}
    assert len(spec.nodes) < 20
    assert plan.path_delay_ms("zjk-ct", "sg-ct") > build_plan(
        load_topology("hubs", params={"sites": ["zjk", "sg"], "operators": ["ct"]})
    ).path_delay_ms("zjk-ct", "sg-ct")
    single = load_topology("hubs", params={"operators": ["cu"], "backbone_bw_mbps": 100})
    assert single.operators() == ["cu"]
    assert all(lk.ab.bw_mbps == 100 for lk in single.links if lk.name.startswith("cu-"))
    # one site, two operators: a peering city is added so they can reach each other
    tiny = load_topology("hubs", params={"sites": ["qy"], "operators": ["ct", "cm"]})
    assert build_plan(tiny).paths[("qy-ct", "qy-cm")]


@pytest.mark.parametrize(
    "params, match",
    [
        ({"sites": ["xx"]}, r"params\.sites: unknown code 'xx'"),
        ({"operators": "ct,zz"}, r"params\.operators: unknown code 'zz'"),
        ({"route_factor": 0.5}, r"params\.route_factor"),
        ({"scale": 0}, r"params\.scale"),
        (
            {"colour": 1},
            r"unknown parameter \(allowed: backbone_bw_mbps, operators, route_factor, scale, sites\)",
        ),
    ],
)
def test_hubs_bad_params(params, match):
    with pytest.raises(SpecError, match=match):
        load_topology("hubs", params=params)


def test_great_circle_matches_reference():
    d = hubs_gen.load_data()["clusters"]
    km = hubs_gen.great_circle_km(d["zjk"]["lat"], d["zjk"]["lon"], d["sg"]["lat"], d["sg"]["lon"])
    assert km == pytest.approx(1784, rel=0.01)
