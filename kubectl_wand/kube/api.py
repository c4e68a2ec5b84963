"""Raw reads from the Kubernetes API (JSON dicts, no model classes: fewer imports, less work per call)."""
from __future__ import annotations

import json

from ..errors import ENVIRONMENT, NOT_FOUND, WandError


def request(flags, method: str, path: str, query=None, body=None, what: str = ""):
    """One API call; JSON dict back. 404 -> NOT_FOUND, 403 -> RBAC hint, unreachable -> server and timeout."""
    api = flags.api()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    import urllib3
    try:
        if hasattr(api, "param_serialize"):  # kubernetes >= 31 (openapi-generator 7)
            args = api.param_serialize(method, path, query_params=list((query or {}).items()), header_params=headers,
                                       body=body, auth_settings=["BearerToken"])
            resp = api.call_api(*args, _request_timeout=flags.timeout_s)
            resp.read()
            status, reason, data = resp.status, resp.reason, resp.data
        else:  # older clients
            from kubernetes.client.rest import ApiException
            try:
                raw = api.call_api(path, method, query_params=list((query or {}).items()), header_params=headers,
                                   body=body, auth_settings=["BearerToken"], _preload_content=False,
                                   _request_timeout=flags.timeout_s)[0]
                status, reason, data = raw.status, raw.reason, raw.data
            except ApiException as exc:
                status, reason, data = exc.status, exc.reason, exc.body
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise WandError("cannot reach the Kubernetes API server at %s (%s); check --server/--context, or raise "
                        "--request-timeout" % (api.configuration.host, short(exc)), ENVIRONMENT)
    if status >= 400:
        raise api_error(status, reason, scope(path), what or path)
    return json.loads(data)


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


def api_error(status, reason, where, what):
    if status == 404:
        return WandError("%s not found in %s" % (what, where), NOT_FOUND)
    if status == 403:
        fix = ("ask for a ClusterRole granting list on pods, or drop -A" if where.startswith("all namespaces")
               else "ask for get/list on it")
        return WandError("forbidden: you may not read %s in %s (RBAC); %s" % (what, where, fix), ENVIRONMENT)
    if status == 401:
        return WandError("unauthorized by the API server: your credentials were refused; check --token/--user",
                         ENVIRONMENT)
    return WandError("API server error %s reading %s: %s" % (status, what, reason), ENVIRONMENT)


def short(exc) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "certificate verify failed"):
        if marker in text:
            return marker
    return text.splitlines()[0][:160] if text else type(exc).__name__
