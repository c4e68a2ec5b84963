"""Kubernetes through kubectl, taking typed values (never argparse): the API side of kubectl wand.

Owns: kubectl's global flags and starting every kubectl with them (``config``: argv, environment, the -v 6
echo), API reads through ``kubectl get --raw`` (``api``), target -> Running pods -> container and which pod
replaces which (``resolve``), pod-level checks (``checks``), and the one write kubectl wand makes to the API:
adding an ephemeral debug container with `kubectl debug` and watching it start (``ephemeral``).

Below it: errors, pipes (child processes), targets, and the wire's definition (agent/protocol.py). It never
imports transport/ or commands/ (tests/test_layers.py): running the agent in a pod and forwarding ports is
the transports' job, and they build on this package.
"""
