"""Network emulation and benchmarking testbed for interconnected compute hubs."""

__version__ = "0.1.0"
