"""The fleet: every process that shares a store (workers on a host, replicas across hosts). Each member publishes
a summary of what it serves through the store and reads the others'; the Telemetry stream, the dashboard and the
alert rules see the sum. One member at a time holds the fleet's lease and makes its decisions (alert rules, the
rollout guard). May import `vigil.server.store`, `vigil.server.settings`, `vigil.server.rollouts` and
`vigil.telemetry`.
"""
