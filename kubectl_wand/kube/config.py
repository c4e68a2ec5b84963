"""kubectl's global flags, and running kubectl with them: the argv every kubectl call (exec, port-forward, API
reads, `kubectl debug`) gets, its environment, the `-v 6` echo of each command line (to the verb's stderr), the
child process (kubectl_wand.pipes), and the namespace. Every kubectl this program starts starts here."""
from __future__ import annotations

import os

from ..errors import ENVIRONMENT, USAGE, WandError
from ..flags import KUBE_FLAGS

# (dest, kubectl flag) of kubectl's global flags that every kubectl call gets as --flag=VALUE, from their one
# declaration (flags.KUBE_FLAGS); the namespace, --as-group, --request-timeout and -v are handled on their own.
VALUE_FLAGS = tuple((f.dest, f.names[-1]) for f in KUBE_FLAGS
                    if f.value is str and not f.many and f.dest not in ("namespace", "request_timeout"))


def which(name):
    """shutil.which for a plain name, without importing shutil (with bz2 and lzma, ~4 ms of start-up)."""
    for directory in os.get_exec_path():
        if not directory:  # an empty PATH entry would mean the current directory: never run ./kubectl
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class KubeFlags:
    """Typed values of kubectl's global flags, and what they give: kubectl's argv, the API client, the namespace.

    ``values`` maps the names in VALUE_FLAGS to strings (or None); nothing here knows about argparse."""

    def __init__(self, values=None, as_groups=(), insecure=False, disable_compression=False, request_timeout="0",
                 timeout_s=30.0, verbosity=0, namespace=None, warn=None):
        self.values = {dest: (values or {}).get(dest) for dest, _f in VALUE_FLAGS}
        self.as_groups = list(as_groups or [])
        self.insecure = bool(insecure)
        self.disable_compression = bool(disable_compression)
        self.request_timeout = request_timeout or "0"
        self.timeout_s = timeout_s
        self.verbosity = verbosity or 0
        self.namespace_flag = namespace
        self.warn = warn  # where one-line warnings and the -v 6 echo go (the verb's stderr), or None for silence
        self._kubectl = None
        self._namespace = None

    # -- kubectl -----------------------------------------------------------------------------------------
    def kubectl(self) -> str:
        """$KUBECTL_PATH (set by kubectl >= 1.37 for its plugins), else kubectl on PATH."""
        if self._kubectl is None:
            path = os.environ.get("KUBECTL_PATH") or which("kubectl")
            if not path or not os.access(path, os.X_OK):
                raise WandError("kubectl not found on PATH; install kubectl or set KUBECTL_PATH", ENVIRONMENT)
            self._kubectl = path
            if self.insecure and self.warn is not None:  # once per command, as kubectl itself would say it
                self.warn.write("warning: --insecure-skip-tls-verify: the API server's certificate is not checked; "
                                "your requests could be intercepted\n")
        return self._kubectl

    def kubectl_argv(self, *args, namespaced=True):
        argv = [self.kubectl()]
        for dest, flag in VALUE_FLAGS:
            if self.values.get(dest):
                argv.append("%s=%s" % (flag, self.values[dest]))
        argv += ["--as-group=%s" % g for g in self.as_groups]
        if self.insecure:
            argv.append("--insecure-skip-tls-verify")
        if self.disable_compression:
            argv.append("--disable-compression")
        if self.request_timeout not in ("0", ""):
            argv.append("--request-timeout=%s" % self.request_timeout)
        if namespaced:
            argv += ["-n", self.namespace()]
        return argv + list(args)

    def kubectl_in(self, namespace, *args):
        """kubectl argv with the user's flags, in ``namespace`` (the pod's, not necessarily the flags' own)."""
        argv = self.kubectl_argv(*args, namespaced=False)
        return argv[:1] + ["-n", namespace] + argv[1:]

    def echo(self, argv):
        """At -v 6 and above, the command line about to run (as kubectl's own -v 6 logs its requests)."""
        if self.verbosity >= 6 and self.warn is not None:
            self.warn.write("+ %s\n" % " ".join(argv))

    def spawn(self, argv, short_lived=True, **pipes_kw):
        """Start kubectl (``argv`` from kubectl_argv/kubectl_in) as a child that dies with us; echoed."""
        from .. import pipes
        self.echo(argv)
        return pipes.spawn(argv, env=kubectl_env(short_lived), **pipes_kw)

    def run(self, argv, input=None, timeout=None):
        """Run a one-shot kubectl to its end (subprocess.run: stdout and stderr captured); echoed.
        subprocess.TimeoutExpired past ``timeout``."""
        import subprocess
        self.echo(argv)
        return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kubectl_env(True),
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)

    # -- kubeconfig ----------------------------------------------------------------------------------------
    def kubeconfig_files(self):
        if self.values.get("kubeconfig"):
            return [self.values["kubeconfig"]]
        env = os.environ.get("KUBECONFIG")
        if env:
            return [p for p in env.split(os.pathsep) if p]
        return [os.path.expanduser("~/.kube/config")]

    def merged_kubeconfig(self):
        """Merge kubeconfig files as kubectl does: the first file to set a name wins."""
        import yaml
        merged = {"clusters": [], "contexts": [], "users": [], "current-context": None}
        seen = {"clusters": set(), "contexts": set(), "users": set()}
        explicit = bool(self.values.get("kubeconfig"))
        for path in self.kubeconfig_files():
            try:
                with open(path) as f:
                    # libyaml's loader where PyYAML has it: 0.15 instead of 2.4 ms for a kubeconfig with certificates
                    data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
            except FileNotFoundError:
                if explicit:
                    raise WandError("kubeconfig %s not found; check --kubeconfig" % path, USAGE)
                continue
            except (OSError, yaml.YAMLError) as exc:
                raise WandError("cannot read kubeconfig %s: %s" % (path, exc), ENVIRONMENT)
            for key in ("clusters", "contexts", "users"):
                for item in data.get(key) or []:
                    if item.get("name") not in seen[key]:
                        seen[key].add(item.get("name"))
                        merged[key].append(item)
            if not merged["current-context"] and data.get("current-context"):
                merged["current-context"] = data["current-context"]
        return merged

    def effective(self):
        """(kubeconfig dict with one context 'wand' carrying every override, that context's namespace)."""
        cfg = self.merged_kubeconfig()
        ctx_name = self.values.get("context") or cfg["current-context"]
        contexts = {c["name"]: c.get("context") or {} for c in cfg["contexts"]}
        if self.values.get("context") and ctx_name not in contexts:
            raise WandError("context %r not found in kubeconfig; see kubectl config get-contexts" % ctx_name, USAGE)
        ctx = dict(contexts.get(ctx_name) or {})
        cluster_name = self.values.get("cluster") or ctx.get("cluster")
        user_name = self.values.get("user") or ctx.get("user")
        clusters = {c["name"]: dict(c.get("cluster") or {}) for c in cfg["clusters"]}
        users = {u["name"]: dict(u.get("user") or {}) for u in cfg["users"]}
        cluster = clusters.get(cluster_name, {})
        user = users.get(user_name, {})
        if self.values.get("server"):
            cluster["server"] = self.values["server"]
        if not cluster.get("server"):
            raise WandError("no Kubernetes API server configured (no kubeconfig context, no --server); set "
                            "KUBECONFIG or pass --kubeconfig/--server", ENVIRONMENT)
        if self.values.get("certificate_authority"):
            cluster.pop("certificate-authority-data", None)
            cluster["certificate-authority"] = self.values["certificate_authority"]
        if self.insecure:
            cluster["insecure-skip-tls-verify"] = True
            cluster.pop("certificate-authority-data", None)
            cluster.pop("certificate-authority", None)
        if self.values.get("tls_server_name"):
            cluster["tls-server-name"] = self.values["tls_server_name"]
        if self.values.get("token"):
            user = {"token": self.values["token"]}
        if self.values.get("client_certificate"):
            user.pop("client-certificate-data", None)
            user["client-certificate"] = self.values["client_certificate"]
        if self.values.get("client_key"):
            user.pop("client-key-data", None)
            user["client-key"] = self.values["client_key"]
        one = {"apiVersion": "v1", "kind": "Config", "current-context": "wand",
               "clusters": [{"name": "wand", "cluster": cluster}], "users": [{"name": "wand", "user": user}],
               "contexts": [{"name": "wand", "context": {"cluster": "wand", "user": "wand"}}]}
        return one, ctx.get("namespace")

    def namespace(self) -> str:
        """-n, else the namespace kubectl itself would use (client-go's DeferredLoadingClientConfig): the one
        the kubeconfig's context sets, else, inside a pod, the pod's own, else "default"."""
        if self._namespace is None:
            self._namespace = self.namespace_flag or self.context_namespace() or in_cluster_namespace() or "default"
        return self._namespace

    def context_namespace(self) -> str:
        """The namespace the kubeconfig's context (--context, else current-context) names; "" for none.

        Parsing the kubeconfig is ~20 ms of a command's start (importing PyYAML) before its first kubectl
        call, so the answer is kept in the user's cache, keyed by the content of every kubeconfig file (its
        hash) and --context: any edit of a file reads it again."""
        import json
        from .. import usercache
        key = json.dumps([self.values.get("context"), [file_digest(p) for p in self.kubeconfig_files()]])
        try:
            known = json.loads(usercache.read(NAMESPACE_CACHE) or b"{}")
        except ValueError:
            known = {}
        if isinstance(known, dict) and isinstance(known.get(key), str):
            return known[key]
        try:
            cfg = self.merged_kubeconfig()
        except WandError:
            return ""  # unreadable: kubectl's own call says why
        name = self.values.get("context") or cfg["current-context"]
        context = next((c.get("context") or {} for c in cfg["contexts"] if c.get("name") == name), {})
        found = context.get("namespace") or ""
        if not isinstance(found, str):
            return ""
        kept = {k: v for k, v in list(known.items())[-(NAMESPACE_CACHE_SIZE - 1):]} if isinstance(known, dict) else {}
        kept[key] = found
        usercache.write(NAMESPACE_CACHE, json.dumps(kept).encode())
        return found

    def server_name(self) -> str:
        """The API server the flags point at, for messages."""
        if self.values.get("server"):
            return self.values["server"]
        try:
            cfg, _ns = self.effective()
            return cfg["clusters"][0]["cluster"].get("server") or "?"
        except WandError:
            return "the configured server"


NAMESPACE_CACHE, NAMESPACE_CACHE_SIZE = "kubeconfig-namespaces.json", 32
# client-go's inClusterClientConfig: kubectl running in a pod, with a service account token mounted
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def file_digest(path: str):
    """[path, SHA-256 of its bytes], or [path] when it cannot be read: what the namespace cache is keyed by.
    The content, not the modification time: on a filesystem with 1 s timestamps (NFS homes) `kubectl config
    set-context --namespace` twice in a second, keeping the size, would leave the time as it was."""
    import hashlib  # ~3 ms; PyYAML, which this spares, is ~19
    try:
        with open(path, "rb") as f:
            return [path, hashlib.sha256(f.read()).hexdigest()]
    except OSError:
        return [path]


def in_cluster_namespace():
    """The namespace kubectl uses inside a pod when the kubeconfig's context names none (POD_NAMESPACE, else
    the service account's), or None outside a pod."""
    if not (os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT")
            and os.path.isfile(SERVICE_ACCOUNT + "/token")):
        return None
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT + "/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def kubectl_env(short_lived: bool):
    """One-shot kubectl calls run without Go's garbage collector: measured 85 instead of 104 ms CPU per
    `kubectl exec` with the same peak RSS (52 MB), which counts when 20 pods are listed at once on a small
    machine. Long-lived ones (the attach watcher, streams) keep it; so does a GOGC the user set."""
    if not short_lived or "GOGC" in os.environ:
        return None
    return dict(os.environ, GOGC="off")
