"""Test support: loopback stand-ins for the servers aiops talks to (Kubernetes API server,
Grafana), the tools the tests need, and helpers several test modules share.

They speak the real wire protocol, so the daemon's real clients (the official ``kubernetes``
client, ``urllib``) talk to them unchanged; tests then assert on the recorded requests.
"""
