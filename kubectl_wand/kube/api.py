"""Raw reads from the Kubernetes API (JSON dicts, no model classes: fewer imports, less work per call)."""
from __future__ import annotations

import json

from ..errors import ENVIRONMENT, NOT_FOUND, WandError


def get(flags, path: str, query=None, what: str = ""):
    """GET an API path; 404 -> NOT_FOUND, 403 -> RBAC hint, unreachable -> the server and the timeout."""
    api = flags.api()
    from kubernetes.client.rest import ApiException
    try:
        resp = api.call_api(path, "GET", query_params=list((query or {}).items()), header_params={
            "Accept": "application/json"}, auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=flags.timeout_s)
    except ApiException as exc:
        raise api_error(exc, flags, what or path)
    except Exception as exc:  # urllib3 connection / TLS / timeout errors
        raise WandError("cannot reach the Kubernetes API server at %s (%s); check --server/--context, or raise "
                        "--request-timeout" % (api.configuration.host, short(exc)), ENVIRONMENT)
    return json.loads(resp[0].data)


def post(flags, path: str, body: dict):
    api = flags.api()
    from kubernetes.client.rest import ApiException
    try:
        resp = api.call_api(path, "POST", body=body, header_params={"Accept": "application/json",
                            "Content-Type": "application/json"}, auth_settings=["BearerToken"],
                            _preload_content=False, _request_timeout=flags.timeout_s)
    except ApiException as exc:
        raise api_error(exc, flags, path)
    except Exception as exc:
        raise WandError("cannot reach the Kubernetes API server at %s (%s)" % (api.configuration.host, short(exc)),
                        ENVIRONMENT)
    return json.loads(resp[0].data)


def api_error(exc, flags, what):
    if exc.status == 404:
        return WandError("%s not found in namespace %s" % (what, flags.namespace()), NOT_FOUND)
    if exc.status == 403:
        return WandError("forbidden: you may not read %s in namespace %s (RBAC); ask for get/list on it"
                         % (what, flags.namespace()), ENVIRONMENT)
    if exc.status == 401:
        return WandError("unauthorized by the API server: your credentials were refused; check --token/--user",
                         ENVIRONMENT)
    return WandError("API server error %s reading %s: %s" % (exc.status, what, exc.reason), ENVIRONMENT)


def short(exc) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "certificate verify failed"):
        if marker in text:
            return marker
    return text.splitlines()[0][:160] if text else type(exc).__name__
