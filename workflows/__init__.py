"""Deterministic code only: the agent workflows and the types they exchange.

Nothing here may do I/O, read clocks or the environment, or use randomness: this package
runs inside the Temporal workflow sandbox and is replayed from history.
"""
