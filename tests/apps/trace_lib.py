"""The trace tests' library module: trace_app reloads it on GET /reload."""


def render(user):
    text = "hello %s" % user["name"]  # trace:lib
    return text
