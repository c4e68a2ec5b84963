"""kubectl-wand: attach a debugger to a live Python process in a Kubernetes pod."""

__version__ = "0.1.0"
