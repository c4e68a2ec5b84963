"""What kubectl-wand may have left in a target's temporary directories."""
import os


def private_dirs(py314, pid=None):
    """wand-* private directories left in the target's temporary directories."""
    found = []
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        host = py314.host(base)
        try:
            names = os.listdir(host)
        except OSError:
            continue
        found += [os.path.join(host, n) for n in names
                  if n.startswith("wand-") and (pid is None or n.startswith("wand-%d-" % pid))]
    return found
