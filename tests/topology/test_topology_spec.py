"""Topology spec loading and validation: one test per rule; errors name file:line, element, rule."""

from __future__ import annotations

import textwrap

import pytest

from testbed.errors import SpecError, TestbedError
from testbed.topology.plan import build_plan
from testbed.topology.spec import apply_overrides, load_topology, topology_from_dict

PAIR = """\
name: pair
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - {a: h1, b: h2, bw_mbps: 40, delay_ms: 15, loss_pct: 1.0}
"""


def write(tmp_path, text: str, name: str = "t.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error(tmp_path, text: str, **kw) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_topology(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(path)
    return msg


def test_pair_example_works_end_to_end(tmp_path):
    spec = load_topology(write(tmp_path, PAIR))
    assert spec.name == "pair" and list(spec.nodes) == ["h1", "h2"]
    (link,) = spec.links
    for d in ("ab", "ba"):
        p = link.params(d)
        assert (p.bw_mbps, p.delay_ms, p.loss_pct) == (40, 15, 1.0)
    plan = build_plan(spec)
    assert plan.path("h1", "h2") == ["h1", "h2"]
    assert plan.path_delay_ms("h1", "h2") == 15
    assert plan.ip("h1") != plan.ip("h2")
    assert plan.interfaces["h1"][0].name == "h1-eth0"


def test_builtin_pair_is_the_documented_example():
    spec = load_topology("pair")
    assert spec.links[0].ab.bw_mbps == 40 and spec.links[0].ab.delay_ms == 15


def test_spec_error_is_testbed_error():
    assert issubclass(SpecError, TestbedError)


def test_asymmetric_link_directions(tmp_path):
    spec = load_topology(
        write(
            tmp_path,
            """\
            nodes: {a1: {}, b1: {}}
            links:
              - a: a1
                b: b1
                bw_mbps: 10
                delay_ms: 5
                queue_pkts: 50
                ab: {bw_mbps: 2, queue_ms: 20}
                ba: {delay_ms: 30, jitter_ms: 2, reorder: true, loss_pct: 3, loss_burst: 4}
            """,
        )
    )
    link = spec.links[0]
    assert link.ab.bw_mbps == 2 and link.ab.delay_ms == 5
    assert link.ab.queue_ms == 20 and link.ab.queue_pkts is None  # a direction's queue replaces the base one
    assert link.ba.bw_mbps == 10 and link.ba.delay_ms == 30 and link.ba.queue_pkts == 50
    assert link.ba.reorder and link.ba.loss_burst == 4 and link.ba.jitter_ms == 2
    assert spec.name == "t"  # defaults to the file name


def test_unknown_field_lists_allowed(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2, bandwidth: 10}\n")
    assert ":3:" in msg and "bandwidth" in msg and "unknown field" in msg and "bw_mbps" in msg


def test_unknown_top_level_field(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}}\nlinkz: []\n")
    assert ":2:" in msg and "linkz" in msg and "allowed" in msg


def test_unknown_node_field(tmp_path):
    msg = error(tmp_path, "nodes:\n  h1: {kind: host, colour: red}\n")
    assert ":2:" in msg and "nodes.h1.colour" in msg


def test_unknown_node_in_link(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h3}\n")
    assert ":3:" in msg and "links[0].b" in msg and "unknown node 'h3'" in msg


def test_negative_delay(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2, delay_ms: -1}\n")
    assert ":3:" in msg and "delay_ms" in msg and ">= 0" in msg


def test_negative_jitter(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2, ab: {jitter_ms: -2}}\n")
    assert ":3:" in msg and "ab.jitter_ms" in msg


@pytest.mark.parametrize("loss", [-0.1, 100.5])
def test_loss_outside_0_100(tmp_path, loss):
    msg = error(tmp_path, f"nodes: {{h1: {{}}, h2: {{}}}}\nlinks:\n  - {{a: h1, b: h2, loss_pct: {loss}}}\n")
    assert ":3:" in msg and "loss_pct" in msg


@pytest.mark.parametrize("bw", [0, -5])
def test_bandwidth_must_be_positive(tmp_path, bw):
    msg = error(tmp_path, f"nodes: {{h1: {{}}, h2: {{}}}}\nlinks:\n  - {{a: h1, b: h2, bw_mbps: {bw}}}\n")
    assert "bw_mbps" in msg and "> 0" in msg


def test_not_a_number(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2, delay_ms: fast}\n")
    assert "must be a number" in msg


def test_at_most_one_queue_field(tmp_path):
    msg = error(
        tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2, queue_pkts: 10, queue_ms: 5}\n"
    )
    assert "at most one of queue" in msg


def test_duplicate_node_names_yaml(tmp_path):
    msg = error(tmp_path, "nodes:\n  h1: {}\n  h1: {}\n")
    assert ":3:" in msg and "duplicate key" in msg


def test_duplicate_node_names_after_conversion():
    # 1 (an int key) and "1" name the same node
    with pytest.raises(SpecError, match="duplicate node name"):
        topology_from_dict({"nodes": {1: {}, "1": {}}}, "<test>")


def test_duplicate_links(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}, h2: {}}\nlinks:\n  - {a: h1, b: h2}\n  - {a: h2, b: h1}\n")
    assert ":4:" in msg and "duplicate link between h2 and h1" in msg


def test_duplicate_link_names(tmp_path):
    msg = error(
        tmp_path,
        "nodes: {h1: {}, h2: {}, h3: {}}\nlinks:\n  - {a: h1, b: h2, name: x}\n  - {a: h2, b: h3, name: x}\n",
    )
    assert ":4:" in msg and "duplicate link name 'x'" in msg


def test_self_loop(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}}\nlinks:\n  - {a: h1, b: h1}\n")
    assert ":3:" in msg and "self-loop" in msg


def test_disconnected_graph(tmp_path):
    msg = error(tmp_path, "nodes:\n  h1: {}\n  h2: {}\n  h3: {}\nlinks:\n  - {a: h1, b: h2}\n")
    assert ":4:" in msg and "nodes.h3" in msg and "disconnected" in msg


def test_switch_loop(tmp_path):
    msg = error(
        tmp_path,
        """\
        nodes: {s1: {kind: switch}, s2: {kind: switch}, s3: {kind: switch}}
        links: [{a: s1, b: s2}, {a: s2, b: s3}, {a: s3, b: s1}]
        """,
    )
    assert "switches form a loop" in msg


def test_bad_kind(tmp_path):
    msg = error(tmp_path, "nodes:\n  h1: {kind: server}\n")
    assert ":2:" in msg and "nodes.h1.kind" in msg and "host, hub, router, switch" in msg


def test_bad_routing(tmp_path):
    msg = error(tmp_path, "routing: fastest\nnodes: {h1: {}}\n")
    assert ":1:" in msg and "routing" in msg and "operator, shortest" in msg


def test_node_name_too_long(tmp_path):
    msg = error(tmp_path, "nodes:\n  abcdefghij: {}\n")
    assert ":2:" in msg and "too long" in msg and "15" in msg


@pytest.mark.parametrize("name", ["-h1", "h.1", "h 1", "h/1"])
def test_node_name_characters(tmp_path, name):
    msg = error(tmp_path, f"nodes:\n  '{name}': {{}}\n")
    assert ":2:" in msg and "invalid node name" in msg


def test_node_name_with_inner_dash_is_fine():
    spec = topology_from_dict(
        {"nodes": {"zjk-ct": {}, "a_1": {}}, "links": [{"a": "zjk-ct", "b": "a_1"}]}, "<t>"
    )
    assert set(spec.nodes) == {"zjk-ct", "a_1"}


def test_pinned_route_not_a_path(tmp_path):
    msg = error(
        tmp_path,
        """\
        nodes: {h1: {}, h2: {}, r1: {kind: router}, r2: {kind: router}}
        links: [{a: h1, b: r1}, {a: r1, b: r2}, {a: r2, b: h2}]
        routes:
          - {src: h1, dst: h2, path: [h1, r2, h2]}
        """,
    )
    assert ":4:" in msg and "not a path of links" in msg and "no link h1-r2" in msg


def test_pinned_route_wrong_ends(tmp_path):
    msg = error(
        tmp_path,
        """\
        nodes: {h1: {}, h2: {}, r1: {kind: router}}
        links: [{a: h1, b: r1}, {a: r1, b: h2}]
        routes:
          - {src: h1, dst: h2, path: [h1, r1]}
        """,
    )
    assert "not a path of links" in msg and "end at h2" in msg


def test_inconsistent_pinned_routes(tmp_path):
    msg = error(
        tmp_path,
        """\
        nodes: {h1: {}, h2: {}, h3: {}, r1: {kind: router}, r2: {kind: router}, r3: {kind: router}}
        links:
          - {a: h1, b: r1}
          - {a: h3, b: r1}
          - {a: r1, b: r2}
          - {a: r1, b: r3}
          - {a: r2, b: r3}
          - {a: r3, b: h2}
        routes:
          - {src: h1, dst: h2, path: [h1, r1, r2, r3, h2]}
          - {src: h3, dst: h2, path: [h3, r1, r3, h2]}
        """,
    )
    assert "inconsistent pinned routes" in msg and ":11:" in msg


@pytest.mark.parametrize("mtu", [500, 9001])
def test_mtu_out_of_range(tmp_path, mtu):
    msg = error(tmp_path, f"nodes: {{h1: {{}}, h2: {{}}}}\nlinks:\n  - {{a: h1, b: h2, mtu: {mtu}}}\n")
    assert ":3:" in msg and "mtu" in msg


def test_mtu_accepted():
    spec = topology_from_dict(
        {"nodes": {"h1": {}, "h2": {}}, "links": [{"a": "h1", "b": "h2", "mtu": 9000}]}, "<t>"
    )
    assert spec.links[0].mtu == 9000


def test_invalid_yaml(tmp_path):
    msg = error(tmp_path, "nodes: {h1: {}\n")
    assert "invalid YAML" in msg


def test_missing_file():
    with pytest.raises(SpecError, match="cannot read file"):
        load_topology("/nonexistent/dir/x.yaml")


def test_unknown_builtin_lists_builtins():
    with pytest.raises(SpecError, match=r"built-ins: .*dumbbell"):
        load_topology("no-such-topology")


# ---------------------------------------------------------------------------- overrides


def test_overrides_both_directions_and_one_direction():
    spec = load_topology(
        "dumbbell", overrides={"bottleneck.bw_mbps": 20, "bottleneck.ba.delay_ms": 30, "bottleneck.mtu": 9000}
    )
    link = spec.link("bottleneck")
    assert link.ab.bw_mbps == 20 and link.ba.bw_mbps == 20
    assert link.ab.delay_ms == 10 and link.ba.delay_ms == 30
    assert link.mtu == 9000
    assert spec.meta["overrides"]["bottleneck.bw_mbps"] == 20


def test_override_by_default_link_label():
    spec = load_topology("pair", overrides={"h1-h2.loss_pct": 0})
    assert spec.links[0].ab.loss_pct == 0


def test_override_queue_replaces_other_queue_field():
    spec = load_topology("dumbbell", overrides={"bottleneck.queue_pkts": 100})
    spec = apply_overrides(spec, {"bottleneck.queue_ms": 50})
    assert spec.link("bottleneck").ab.queue_ms == 50 and spec.link("bottleneck").ab.queue_pkts is None


def test_override_unknown_link():
    with pytest.raises(SpecError, match=r"unknown link 'nope'.*bottleneck"):
        load_topology("dumbbell", overrides={"nope.bw_mbps": 1})


def test_override_unknown_field():
    with pytest.raises(SpecError, match=r"unknown field 'bandwidth'.*bw_mbps"):
        load_topology("dumbbell", overrides={"bottleneck.bandwidth": 1})


def test_override_bad_value():
    with pytest.raises(SpecError, match="loss_pct"):
        load_topology("dumbbell", overrides={"bottleneck.loss_pct": 120})


def test_override_bad_key_shape():
    with pytest.raises(SpecError, match=r"expected .<link>\.<field>."):
        load_topology("dumbbell", overrides={"bottleneck": 1})


# ---------------------------------------------------------------------------- params


def test_params_of_generator():
    spec = load_topology("dumbbell", params={"n": 3, "bw_mbps": 50})
    assert {"h1", "h2", "h5", "h6"} <= set(spec.nodes)
    assert spec.link("bottleneck").ab.bw_mbps == 50
    assert spec.meta["params"]["n"] == 3


def test_unknown_param_lists_allowed():
    with pytest.raises(SpecError, match=r"params\.m: unknown parameter \(allowed: .*n"):
        load_topology("dumbbell", params={"m": 3})


def test_param_wrong_type():
    with pytest.raises(SpecError, match=r"params\.n: must be a whole number"):
        load_topology("dumbbell", params={"n": "two"})


def test_yaml_spec_params(tmp_path):
    path = write(
        tmp_path,
        """\
        params: {bw: 10, d: 5}
        nodes: {h1: {}, h2: {}}
        links:
          - {a: h1, b: h2, bw_mbps: "${bw}", delay_ms: "${d}"}
        """,
    )
    assert load_topology(path).links[0].ab.bw_mbps == 10
    spec = load_topology(path, params={"bw": 25})
    assert spec.links[0].ab.bw_mbps == 25 and spec.links[0].ab.delay_ms == 5
    with pytest.raises(SpecError, match="unknown parameter"):
        load_topology(path, params={"nope": 1})


def test_yaml_spec_without_params_rejects_params(tmp_path):
    with pytest.raises(SpecError, match=r"unknown parameter \(allowed: none\)"):
        load_topology(write(tmp_path, PAIR), params={"n": 1})
