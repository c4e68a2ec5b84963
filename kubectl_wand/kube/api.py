"""Raw calls to the Kubernetes API through kubectl (``get --raw``, ``create --raw``): JSON dicts back.

Why kubectl and not the kubernetes Python client: kubectl already is our exec and port-forward transport and
understands every kubeconfig (exec plugins, OIDC, proxies) and every global flag exactly as the user's own
kubectl does; and it is faster on the path every command takes. Measured here: importing the kubernetes client
costs 0.31-0.34 s (it pulls in pydantic) before its first request, while `kubectl get --raw` of a pod answers
in 0.07-0.09 s in all. Errors are mapped from kubectl's stderr to one line with the fix.
"""
from __future__ import annotations

import json
import subprocess

from ..errors import ENVIRONMENT, NOT_FOUND, USAGE, WandError

SLACK = 5.0  # seconds kubectl may take beyond --request-timeout (start-up, TLS) before we stop waiting


def request(flags, method: str, path: str, query=None, body=None, what: str = ""):
    """One API call; JSON dict back. 404 -> NOT_FOUND, 403 -> RBAC hint, unreachable -> server and timeout."""
    if query:
        from urllib.parse import urlencode  # with ipaddress, ~2.5 ms: only reads with a query need it
        path = path + "?" + urlencode(query)
    url = path
    verb = ["get", "--raw", url] if method == "GET" else ["create", "--raw", url, "-f", "-"]
    argv = flags.kubectl_argv(*verb, namespaced=False)
    try:
        done = flags.run(argv, input=json.dumps(body).encode() if body is not None else None,
                         timeout=flags.timeout_s + SLACK)
    except subprocess.TimeoutExpired:
        raise WandError("cannot reach the Kubernetes API server at %s within %gs; check --server/--context, or "
                        "raise --request-timeout" % (flags.server_name(), flags.timeout_s), ENVIRONMENT)
    if done.returncode != 0:
        error = api_error(done.stderr.decode("utf-8", "replace"), scope(path), what or path, flags)
        if error.code == NOT_FOUND:
            error = not_found(flags, path.partition("?")[0], what or path) or error
        raise error
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise WandError("the API server's answer to %s is not JSON" % (what or path), ENVIRONMENT)


def get(flags, path: str, query=None, what: str = ""):
    return request(flags, "GET", path, query=query, what=what)


def post(flags, path: str, body: dict):
    return request(flags, "POST", path, body=body)


def scope(path: str) -> str:
    """Where a request reads: "namespace X", or cluster-wide for paths without a namespace (-A lists)."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and parts.index("namespaces") + 1 < len(parts):
        ns = parts[parts.index("namespaces") + 1]
        return "namespace %s" % ns if parts[-2:] != ["namespaces", ns] else "the cluster"
    return "all namespaces (cluster scope)"


def not_found(flags, path, what):
    """The not-found error with its fix, naming the namespace when it is the namespace that does not exist (the
    API answers a missing namespace's objects with the object's 404 alone). One more read, on this error only."""
    parts = path.strip("/").split("/")
    if "namespaces" not in parts or parts.index("namespaces") + 1 >= len(parts):
        return None
    ns = parts[parts.index("namespaces") + 1]
    if parts[-2:] == ["namespaces", ns]:
        return WandError("namespace %s not found; see kubectl get namespaces" % ns, NOT_FOUND)
    try:
        request(flags, "GET", "/api/v1/namespaces/%s" % ns, what="namespace %s" % ns)
    except WandError as exc:
        if exc.code == NOT_FOUND:
            return exc
        # not allowed to read namespaces, or unreachable: say what we know
    rest = parts[parts.index("namespaces") + 2:]
    resource = rest[0] if rest else "pods"
    return WandError("%s not found in namespace %s; see kubectl get %s -n %s" % (what, ns, resource, ns), NOT_FOUND)


def missing_right(text: str) -> str:
    """The right the API server says is missing ("list on pods", "get on deployments.apps"), from its message
    `User "..." cannot list resource "pods" in API group "" ...`; "get/list on it" where it does not say (a
    user with get but not list on pods was told to ask for get/list)."""
    import re
    said = re.search(r'cannot ([a-z]+) resource "([a-z0-9./-]+)" in API group "([a-z0-9.-]*)"', text)
    if not said:
        return "get/list on it"
    verb, resource, group = said.groups()
    return "%s on %s%s" % (verb, resource, "." + group if group else "")


def api_error(stderr, where, what, flags):
    text = " ".join(line.strip() for line in stderr.strip().splitlines())
    low = text.lower()
    if "(notfound)" in low or "not found" in low and "error from server" in low:
        return WandError("%s not found in %s" % (what, where), NOT_FOUND)
    if "(forbidden)" in low:
        fix = ("ask for a ClusterRole granting list on pods, or drop -A" if where.startswith("all namespaces")
               else "ask for %s" % missing_right(text))
        return WandError("forbidden: you may not read %s in %s (RBAC); %s" % (what, where, fix), ENVIRONMENT)
    if "unauthorized" in low or "must be logged in" in low:
        return WandError("unauthorized by the API server: your credentials were refused; check --token/--user",
                         ENVIRONMENT)
    if "connection to the server" in low or "unable to connect" in low or "dial tcp" in low or "timeout" in low:
        if not flags.values.get("server"):
            try:
                flags.effective()
            except WandError as exc:  # no kubeconfig at all: kubectl tried localhost:8080
                return exc
        return WandError("cannot reach the Kubernetes API server at %s (%s); check --server/--context, or raise "
                         "--request-timeout" % (flags.server_name(), short(text)), ENVIRONMENT)
    import re
    missing = re.search(r'(context|cluster|auth info) "([^"]*)" does not exist', text)
    if missing:  # a name the user gave that the kubeconfig lacks: the command line is wrong
        kind = {"auth info": "user"}.get(missing.group(1), missing.group(1))
        return WandError("%s %r not found in kubeconfig; see kubectl config get-%ss" % (
            kind, missing.group(2), kind if kind != "user" else "user"), USAGE)
    if "stat " in text and "no such file" in low:
        return WandError("kubeconfig not found (%s); check --kubeconfig or KUBECONFIG" % short(text), USAGE)
    if text.startswith("error: "):  # kubectl's own
        return WandError("kubectl: %s" % text[len("error: "):], ENVIRONMENT)
    return WandError("API server error reading %s: %s" % (what, text[:300] or "kubectl failed"), ENVIRONMENT)


def short(text) -> str:
    for marker, said in (("was refused", "Connection refused"), ("connection refused", "Connection refused"),
                         ("i/o timeout", "timed out"), ("timeout", "timed out"), ("no such host", "Name or service not known"),
                         ("certificate", "certificate verify failed")):
        if marker in text.lower():
            return said
    return text[:160] or "kubectl failed"
