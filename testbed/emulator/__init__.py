"""Userspace link emulator: the link backend for kernels without sch_netem.

`model` is the sans-I/O per-direction scheduler, `engine` the AF_PACKET forwarding process,
`control` the API the network builder uses (`Emulator`, `EmuLink`, `MAX_RATE_MBPS`).
"""
