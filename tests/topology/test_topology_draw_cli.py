"""Drawing (PNG) and the `testbed topo` commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.topology.draw import draw_topology, is_interconnect, layout
from testbed.topology.plan import build_plan
from testbed.topology.spec import load_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["pair", "dumbbell", "hubs"])
def test_draw_writes_png(tmp_path, name):
    spec = load_topology(name)
    out = draw_topology(spec, tmp_path / "sub" / f"{name}.png", build_plan(spec), link_labels=True)
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000


def test_hubs_layout_is_geographic():
    spec = load_topology("hubs")
    pos, geographic = layout(spec)
    assert geographic
    x, y = pos["ct-bj"]
    assert abs(x - 116.4) < 1.5 and abs(y - 39.9) < 1.5
    assert len({(round(x, 6), round(y, 6)) for x, y in pos.values()}) == len(pos)  # nothing on top of another
    assert any(is_interconnect(spec, lk) for lk in spec.links)


def run(*args, cwd=None):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_topo_show_text_and_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("topo", "show", "pair")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "h1-eth0=10.0.0.1/30" in out and "40 Mbit/s, 15 ms, loss 1 %" in out and "h1 -> h2" in out
    assert (tmp_path / "pair-topology.png").read_bytes()[:8] == PNG_MAGIC


def test_topo_show_params_sets_and_png_path(tmp_path):
    png = tmp_path / "d.png"
    result = run(
        "topo", "show", "dumbbell", "--param", "n=1", "--set", "bottleneck.ba.delay_ms=30", "--png", str(png)
    )
    assert result.exit_code == 0, result.output
    assert "r2 -> r1   100 Mbit/s, 30 ms" in result.output
    assert "h2 -> h1  30.00 ms" in result.output
    assert png.exists()


def test_topo_show_json(tmp_path):
    result = run(
        "topo", "show", "hubs", "--json", "--no-png", "--param", "sites=zjk,sg", "--param", "operators=ct,cm"
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"nodes", "links", "routes", "paths", "operators", "warnings"} <= set(data)
    assert data["operators"] == ["cm", "ct"]
    path = next(p for p in data["paths"] if p["src"] == "zjk-ct" and p["dst"] == "sg-cm")
    assert path["delay_ms"] > 10 and path["path"][0] == "zjk-ct"
    node = next(n for n in data["nodes"] if n["name"] == "zjk-ct")
    assert node["interfaces"][0]["ip"].endswith("/30")
    assert any(lk["interconnect"] for lk in data["links"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "n=x"], "params.n: must be a whole number"),
        (["--param", "nope=1"], "unknown parameter (allowed:"),
        (["--set", "foo.bw_mbps=1"], "unknown link 'foo'"),
        (["--param", "n"], "expected KEY=VALUE"),
    ],
)
def test_topo_show_bad_input_is_one_line(args, message):
    result = CliRunner().invoke(main, ["topo", "show", "dumbbell", "--no-png", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_topo_show_unknown_topology():
    result = CliRunner().invoke(main, ["topo", "show", "nosuch", "--no-png"])
    assert result.exit_code == 2 and "built-ins:" in result.stderr


def test_topo_ls():
    result = run("topo", "ls")
    assert result.exit_code == 0
    for name in ("pair", "dumbbell", "parking-lot", "hubs"):
        assert name in result.output
    assert "route_factor=1.85" in result.output
    data = json.loads(run("topo", "ls", "--json").output)
    assert {d["name"] for d in data} >= {"pair", "hubs"}
