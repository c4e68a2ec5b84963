"""Launcher for the `noptrace` workload: started as root, switch to uid/gid 1000, then exec the real
command. The app process then runs as another uid than `kubectl exec` (root, no CAP_SYS_PTRACE), so
sys.remote_exec from an exec session fails with PermissionError.
Usage: python3 /app/dropuid.py CMD [ARGS...]"""
import os
import sys

os.setgroups([])
os.setgid(1000)
os.setuid(1000)
os.environ["HOME"] = "/tmp"
os.execvp(sys.argv[1], sys.argv[1:])
