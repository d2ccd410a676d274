"""Transfer protocols under test: qtp and the baselines, all behind one driver interface.

`protocols.registry.get(name)` returns a driver; see `protocols/base.py` for the contract.
"""
