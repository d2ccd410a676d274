"""Built-in topologies: `<name>.yaml` specs and `<name>.py` generators (`build(**params)`, `PARAMS`).

Load them with `testbed.topology.spec.load_topology(name)`; list them with `testbed topo ls`.
"""
