"""kubectl_complete-wand: shell completion for `kubectl wand`, run by kubectl (>= 1.26) itself.

kubectl calls ``kubectl_complete-wand ARGS... WORD`` with the words typed after ``kubectl wand`` and the word
being completed (possibly empty), and reads one candidate per line (``value<TAB>description`` allowed) and a
last line ``:<directive>`` (Cobra's ShellCompDirective). Everything is read from the argparse parsers that
kubectl_wand.cli builds from each verb's declared flags (what completes a flag's value is declared with it), so
verbs and flags never go out of step with the CLI. Cluster lookups honour -n/--context/
--kubeconfig already on the line, use a short timeout, and print nothing on any error: a completion that
fails must never spoil the prompt. The kubernetes client is imported only when a lookup needs the cluster.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import targets
from .flags import FILES

# Cobra ShellCompDirective bits
DEFAULT = 0  # the shell may complete file names
NO_SPACE = 2
NO_FILE = 4

CLUSTER_TIMEOUT = 3.0  # seconds for one API call
AGENT_TIMEOUT = 6.0  # seconds for listing a pod's processes (kubectl exec + the agent)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    words, current = (args[:-1], args[-1]) if args else ([], "")
    real_stderr = sys.stderr
    sys.stderr = open(os.devnull, "w")  # a library's warning would land in the middle of the user's prompt
    try:
        candidates, directive = complete(words, current)
    except Exception:  # noqa: BLE001 - nothing is better than a traceback in the prompt
        candidates, directive = [], NO_FILE
    finally:
        sys.stderr.close()
        sys.stderr = real_stderr
    out = "".join("%s\n" % c for c in candidates) + ":%d\n" % directive
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0


def takes_value(action) -> bool:
    return action.nargs != 0


class Line:
    """The words typed so far, read against one verb's parser: option values, positionals, pending option."""

    def __init__(self, parser, words):
        self.parser = parser
        self.values = {}
        self.positionals = []
        self.pending = None  # the option whose value is being completed
        self.after_dashes = False
        options = parser._option_string_actions
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--":
                self.after_dashes = True
                self.positionals += words[i + 1:]
                break
            name, eq, inline = word.partition("=")
            action = options.get(name) if word.startswith("-") else None
            if action is not None and takes_value(action):
                if eq:
                    value = inline
                elif i + 1 < len(words):
                    value, i = words[i + 1], i + 1
                else:
                    self.pending = action
                    break
                self.store(action, value)
            elif action is not None:
                self.values[action.dest] = True
            elif not word.startswith("-"):
                self.positionals.append(word)
            i += 1

    def store(self, action, value):
        if callable(action.type):
            try:
                value = action.type(value)  # e.g. -v 6 is an int to the code that reads it
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                return
        if isinstance(action, argparse._AppendAction):
            self.values.setdefault(action.dest, []).append(value)
        else:
            self.values[action.dest] = value

    def namespace(self):
        """An object shaped like parsed args, for KubeFlags and the CLI's resolve()."""
        args = argparse.Namespace()
        for action in self.parser._actions:
            setattr(args, action.dest, action.default)
        positional = [a for a in self.parser._actions if not a.option_strings]
        for action, value in zip(positional, self.positionals):
            setattr(args, action.dest, value)
        for dest, value in self.values.items():
            setattr(args, dest, value)
        args.request_timeout = "%gs" % CLUSTER_TIMEOUT
        args.request_timeout_s = CLUSTER_TIMEOUT
        return args

    def next_positional(self):
        positional = [a for a in self.parser._actions if not a.option_strings]
        if self.after_dashes:
            return positional[-1] if positional else None
        for index, action in enumerate(positional):
            if index >= len(self.positionals) or action.nargs in ("*", "+"):
                return action
        return None


def complete(words, current):
    """(candidates, directive) for the word ``current`` after ``words`` (flags may stand anywhere)."""
    from .cli import VERBS, find_verb, verb_parsers
    from .flags import KUBE_FLAGS, value_options
    parsers = verb_parsers()
    verb, rest = find_verb(words)
    if verb is None:
        if words and words[-1] in value_options(KUBE_FLAGS):  # a global flag's value, before any verb: `kubectl wand -n <TAB>`
            line = Line(parsers["get"], words)
            if line.pending is not None:
                return complete_value(line, line.pending, current, "")
        if current.startswith("-"):  # before the verb: kubectl's global flags, --help and --version
            flags = ["--help", "--version"] + [f for f in option_strings(parsers["get"])
                                               if f not in parsers["get"]._option_string_actions or
                                               parsers["get"]._option_string_actions[f].container.title
                                               == "Kubernetes options (as kubectl)"]
            return match(flags, current), NO_FILE
        return match(list(VERBS), current), NO_FILE
    if verb not in parsers:
        return [], NO_FILE
    line = Line(parsers[verb], rest)
    if line.pending is not None:
        return complete_value(line, line.pending, current, "")
    if current.startswith("--") and "=" in current:
        name, _, value = current.partition("=")
        action = line.parser._option_string_actions.get(name)
        if action is None or not takes_value(action):
            return [], NO_FILE
        return complete_value(line, action, value, name + "=")
    if current.startswith("-") and not line.after_dashes:
        used = {dest for dest in line.values}
        return match(option_strings(line.parser, used), current), NO_FILE
    action = line.next_positional()
    if action is None or line.after_dashes:
        return [], NO_FILE
    if action.choices:
        if not current and action.metavar in action.choices:
            return [action.metavar], NO_FILE  # `processes`, not every alias
        return match(list(action.choices), current), NO_FILE
    if action.dest == "target":
        return complete_target(line, current)
    return [], NO_FILE


def option_strings(parser, used=()):
    """The parser's flags, long forms first; flags already given are left out unless they repeat."""
    found = []
    for action in parser._actions:
        if action.dest in used and not isinstance(action, argparse._AppendAction):
            continue
        found += sorted(action.option_strings, key=lambda s: (not s.startswith("--"), s))
    return found


def match(candidates, current):
    return [c for c in candidates if c.startswith(current)]


def complete_value(line, action, current, prefix):
    if action.choices:
        return [prefix + c for c in match([str(c) for c in action.choices], current)], NO_FILE
    kind = getattr(action, "complete", None)  # declared with the flag (kubectl_wand.flags)
    if kind == FILES:
        return [], DEFAULT
    if kind is None:
        return [], NO_FILE
    return [prefix + c for c in match(lookup(kind, line), current)], NO_FILE


def complete_target(line, current):
    """Kinds (``deploy/``), names after ``TYPE/``, pod names for a bare word, local PIDs after ``pid/``."""
    if "/" in current:
        prefix, _, name = current.partition("/")
        if prefix == "pid":
            found = ["pid/%s" % c for c in local_pids()]
        elif prefix in targets.ENGINES:
            found = ["%s/%s" % (prefix, n) for n in engine_containers(prefix)]
        elif prefix in targets.KINDS:
            found = ["%s/%s" % (prefix, n) for n in names_of_kind(line, prefix)]
        else:
            found = []
        return match(found, current), NO_FILE
    found = match([short + "/" for short in targets.SHORT_NAMES], current)
    try:
        found += match(names_of_kind(line, "pod"), current)
    except Exception:  # noqa: BLE001 - no cluster: the kinds are still worth offering
        pass
    # `dep` -> `deploy/` with no space after it, so the name can follow
    return found, NO_FILE | (NO_SPACE if found and all(c.endswith("/") for c in found) else 0)


# -- lookups ---------------------------------------------------------------------------------------------------

def lookup(kind, line):
    if kind == "namespaces":
        return [o["metadata"]["name"] for o in api_items(line, "/api/v1/namespaces")]
    if kind in ("contexts", "clusters", "users"):
        return kubeconfig_names(line, kind)
    if kind == "containers":
        names = []
        for pod in target_pods(line):
            for c in pod["spec"].get("containers") or []:
                if c["name"] not in names:
                    names.append(c["name"])
        return names
    if kind == "pods_of_target":
        return [p["metadata"]["name"] for p in target_pods(line)]
    if kind == "pids":
        return target_pids(line)
    return []


def kube_flags(line):
    from .commands.common import kube_flags
    return kube_flags(line.namespace())


def api_items(line, path):
    from .kube import api
    flags = kube_flags(line)
    return api.get(flags, path.format(ns=flags.namespace())).get("items") or []


def engine_containers(engine):
    """Names of the running containers of ``docker`` or ``podman`` (its CLI, the user's environment)."""
    from .transport.engine import COMPOSE_SERVICE, Engine
    try:
        done = Engine("docker" if engine == "compose" else engine).run("ps", "--format", "{{.Label \"%s\"}}" % (
            COMPOSE_SERVICE) if engine == "compose" else "{{.Names}}", timeout=5)
    except Exception:  # noqa: BLE001 - no engine here: nothing to offer
        return []
    return sorted({n for n in done.stdout.decode("utf-8", "replace").split() if n}) if done.returncode == 0 else []


def names_of_kind(line, prefix):
    kind = targets.KINDS[prefix]
    if kind == "ksvc":
        return knative_services(line)
    items = api_items(line, targets.LIST_PATHS[kind])
    return sorted(o["metadata"]["name"] for o in items)


def knative_services(line):
    """Knative Services from their API, else from their pods' label (how kubectl wand finds their pods)."""
    from .errors import WandError
    from .kube.resolve import KNATIVE_LABEL
    try:
        return sorted(o["metadata"]["name"] for o in api_items(line, targets.LIST_PATHS["ksvc"]))
    except WandError:  # no Knative API here (404) or not readable
        from .kube import api
        flags = kube_flags(line)
        pods = api.get(flags, "/api/v1/namespaces/%s/pods" % flags.namespace(), {"labelSelector": KNATIVE_LABEL})
        return sorted({p["metadata"]["labels"][KNATIVE_LABEL] for p in pods.get("items") or []})


def kubeconfig_names(line, kind):
    cfg = kube_flags(line).merged_kubeconfig()
    return [item["name"] for item in cfg.get(kind) or [] if item.get("name")]


def target_pods(line):
    """The Running pods behind the target (and -l) already on the line; none without either."""
    args = line.namespace()
    if not getattr(args, "target", None) and not getattr(args, "selector", None):
        return []
    from .kube.resolve import pods
    target = targets.parse(args.target) if getattr(args, "target", None) else None
    if target is not None and target.local:
        return []
    return pods(kube_flags(line), target, getattr(args, "selector", None))


def target_pids(line):
    """PIDs of the Python processes in the target, as `kubectl wand get processes` would list them."""
    args = line.namespace()
    if not getattr(args, "target", None) and not getattr(args, "selector", None):
        return []
    from .commands.common import TargetOptions
    from .streams import Streams
    opts = TargetOptions(verb="complete")
    quiet = open(os.devnull, "w")
    opts.complete_target(args, Streams(None, quiet, quiet))
    opts.quiet = True
    if opts.target is not None and opts.target.local:
        return [str(opts.target.pid)]  # pid/N names the process already
    transports = opts.transports()
    if opts.pod:
        transports = [t for t in transports if t.name == opts.pod]
    found = {}  # pid -> (command, where): replicas run the same PIDs; a shell lists each value once
    for transport in transports[:3]:  # a Deployment's replicas: the first few are enough to choose from
        result = transport.agent({"op": "list", "cpu": False}, timeout=AGENT_TIMEOUT)
        for proc in result.get("processes") or []:
            command, where = found.get(proc["pid"], (one_line(proc.get("command", ""))[:60], []))
            found[proc["pid"]] = (command, where + [transport.where])
    return ["%d\t%s (%s)" % (pid, command, where[0] + (" and %d more" % (len(where) - 1) if len(where) > 1 else ""))
            for pid, (command, where) in found.items()]


def local_pids():
    from .agent.processes import list_processes
    return ["%d\t%s" % (p["pid"], one_line(p.get("command", ""))[:60]) for p in list_processes(cpu=False)]


def one_line(text: str) -> str:
    """A description on one line: a command line may hold newlines and tabs (python -c scripts), and kubectl
    reads one candidate per line, its description after a tab; and, as everywhere, no control character the
    target chose reaches the terminal (terminal.py)."""
    from .terminal import text as safe
    return safe(" ".join(text.split()))


if __name__ == "__main__":
    sys.exit(main())
