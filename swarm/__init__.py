"""CAN Swarm: the `swarm` import namespace.

The repository keeps one folder per layer at its top (`protocol/`, `node/`, `cli/`,
`policy_wasm/`, `testnet/`, `agent/`, `jobs/`); packaging installs each as
`swarm.<folder>`.
Dependencies point one way: cli -> node -> protocol; agent -> node's client helpers.
"""

__version__ = "0.1.0"
