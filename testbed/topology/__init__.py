"""Topology specs: the data model, YAML loading and validation, addressing and routing."""
