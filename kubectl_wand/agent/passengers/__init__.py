"""Passengers: the code that runs under the *target's own* interpreter, never under the agent's.

Beside the target, in a short-lived subprocess of its interpreter:
- ``injector``: compiles exec-py's code with the target's compiler, then ``sys.remote_exec``; reads stacks;
- ``sampler``: reads the target's stacks from its memory (stack, profile), never runs code in it; shipped after
  ``framewalk`` (the frames and thread names it reads itself where 3.14's reader falls short), in one source.
Inside the target, on its main thread (started by ``sys.remote_exec``):
- ``bootstrap``: the only file written for an injection: connect back, hello, receive the request, run the
  op's code that came in it, answer; it never raises and never prints;
- the op's code, sent in the request: ``execute`` (exec-py), ``debugger`` (attach), ``codefinder`` then
  ``probe`` (trace, whose thread stays in the target until the probe is removed), ``heapcensus``,
  ``heapslices`` then ``heapwindow`` (mem: a census, or a duty-cycled tracemalloc window whose thread stops
  tracemalloc on every ending).

The rules (tests/test_passengers.py enforces them):
- shipped as source: the agent reads each file's text (agent/sources.py; in a pod, what the CLI sent) and runs
  it with ``python -c``, writes it into the private directory, or sends it in a request;
- never imported by the CLI or the agent: no module of kubectl_wand imports this package (tests may, to test
  a passenger's pure functions);
- the standard library only, and Python 3.8 syntax (the target's interpreter is the only one they get);
- they import nothing of ours, not even each other: what two of them share in one namespace (codefinder's
  names in probe) is run there in order by the bootstrap; framewalk and sampler are joined into one ``-c``.
This file holds nothing but this text.
"""
