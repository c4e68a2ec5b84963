"""Kubernetes API access, taking typed values (never argparse): kubectl's flags and the namespace (``config``),
raw API reads through ``kubectl get --raw`` (``api``), target -> Running pods -> container (``resolve``), pod-level
checks (``checks``), ephemeral debug containers (``ephemeral``). Running things in pods is the transports' job."""
