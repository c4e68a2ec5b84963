"""The words of `kubectl wand --help` and of each verb's help: description and examples (plain text)."""

DESCRIPTION = """Attach a debugger to a live Python 3.14 process in a Kubernetes pod: no code change, no restart, no sidecar.

kubectl wand finds the pods behind a workload, lists their Python processes, injects a debug server with
CPython 3.14's sys.remote_exec (PEP 768), forwards its port to 127.0.0.1 and tells your editor how to connect.
Targets: POD, pod/NAME, svc/NAME, deploy/NAME, sts/NAME, ds/NAME, rs/NAME, job/NAME, ksvc/NAME, -l SELECTOR,
or pid/N for a Python process on this machine."""

EXAMPLES = {
    None: """Examples:
  # List the Python processes behind a Deployment
  kubectl wand get processes deploy/web

  # Start a debugger in the app process of a pod and forward it to 127.0.0.1:5679
  kubectl wand attach deploy/web

  # Run code inside the live process and see its output
  kubectl wand exec-py svc/web -- 'import threading; threading.active_count()'

  # Explain what would stop an attach
  kubectl wand check pod/web-6d8f7-abcde""",
    "get": """Examples:
  # Python processes on this machine
  kubectl wand get processes

  # In every pod of a Deployment, with CWD and EXE
  kubectl wand get processes deploy/web -o wide

  # Across all namespaces, by label
  kubectl wand get processes -A -l app=web""",
    "attach": """Examples:
  # Attach to the app process behind a Service; Ctrl-C stops forwarding
  kubectl wand attach svc/web

  # A chosen worker of a gunicorn pod, on another local port
  kubectl wand attach pod/gunicorn-abc --pid 12 --local-port 15679

  # An app that runs as another user without capabilities (or read-only): from an ephemeral debug container
  kubectl wand attach deploy/web --ephemeral

  # A local process (Python 3.14) on this machine
  kubectl wand attach pid/4242""",
    "exec-py": """Examples:
  # Evaluate an expression in the live process (its repr is printed)
  kubectl wand exec-py deploy/web -- 'import sys; sys.modules["app"].CACHE_SIZE'

  # Run a file, or code from stdin
  kubectl wand exec-py pid/4242 -f snippet.py
  echo 'print(42)' | kubectl wand exec-py pid/4242 -f -""",
    "pdb": """Examples:
  # pdb's prompt on the app process of a Deployment's pod (b FILE:LINE, c, n, s, p, where, interact; q detaches)
  kubectl wand pdb deploy/web

  # A hardened pod, from an ephemeral debug container; a local process
  kubectl wand pdb deploy/web --ephemeral
  kubectl wand pdb pid/4242""",
    "stack": """Examples:
  # Every thread's stack in every pod of a Deployment (nothing runs in the processes)
  kubectl wand stack deploy/web

  # One process, with its asyncio task tree, as JSON
  kubectl wand stack pod/web-6d8f7-abcde --pid 7 --async -o json""",
    "profile": """Examples:
  # Where the time goes, across every replica: the hottest functions
  kubectl wand profile deploy/web --duration 30s

  # A flame graph, or a file for speedscope.app
  kubectl wand profile deploy/web -o web.svg
  kubectl wand profile pid/4242 --rate 200 -o profile.json""",
    "trace": """Examples:
  # A log line at web.py:17 in every replica, with two values, for a minute
  kubectl wand trace deploy/web web.py:17 'request.url.path' 'len(items)'

  # Only slow requests, at most 5 lines a second, stop after 10
  kubectl wand trace deploy/web app/handlers.py:88 elapsed --condition 'elapsed > 0.5' --max-per-second 5 --count 10

  # The locals and the stack of the first hit in each pod, as JSON
  kubectl wand trace deploy/web web.py:17 --snapshot -o json""",
    "mem": """Examples:
  # The live heap of the app process of every pod of deploy/web, merged: top types by count and by size
  kubectl wand mem deploy/web

  # What grows over 60s (tracemalloc traces short slices of it, as its measured cost allows): the FILE:LINE
  # whose live memory grew most, estimated from the slices, with stacks
  kubectl wand mem deploy/web --duration 60s --frames 8

  # One report per pod, as JSON
  kubectl wand mem deploy/web --duration 30s --per-pod -o json""",
    "check": """Examples:
  # Why can't I attach?
  kubectl wand check deploy/web
  kubectl wand check pid/4242 -o json""",
}
