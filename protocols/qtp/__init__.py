"""qtp: a QUIC-based bulk transfer protocol on aioquic.

Modules: `messages` (wire format, sans I/O), `transfer` (chunking, verification, resume,
striping; sans I/O), `io` (asyncio driving aioquic's QuicConnection directly), `client`,
`server`, `commands` (transfers with statistics), `parallel` (striping over processes),
`cli` (the `qtp` command), `driver` (experiments), `certs`, `config`. See README.md.
"""
