"""Kubernetes API access, taking typed values (never argparse): kubectl's flags and the API client
(``config``), raw reads (``api``), target -> Running pods -> container (``resolve``), pod-level checks
(``checks``). Running things in pods is the kubectl transport's job (kubectl_wand.transport.kubectl)."""
