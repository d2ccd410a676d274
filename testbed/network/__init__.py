"""Real networks from a NetworkPlan: Mininet namespace nodes and a link backend that is true on
every kernel (netem where the kernel has it, else the userspace emulator)."""
from .backend import BackendInfo, probe
from .net import Network

__all__ = ["BackendInfo", "Network", "probe"]
