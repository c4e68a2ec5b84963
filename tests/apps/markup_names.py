"""A target whose function and file names are hostile to XML and to the browser that shows a flame graph: NUL and
the controls XML 1.0 forbids, markup (``<``, ``&``, ``]]>``, quotes), terminal escapes, a name 5000 characters
long, U+FFFE, and a file name that is not UTF-8 (bytes 0xff 0xfe, as the file system hands them to Python:
lone surrogates). Each name is a thread waiting in a function of that name compiled from a file of that name,
so a profile with --idle has every name in it.

Prints READY once every thread runs. tests/test_render_local.py renders its flame graphs in a browser.
"""
import os
import threading

LONG = "long<&" + "x" * 5000 + "]]>end"
NAMES = {
    "nul": "nul\x00name",
    "markup": "<svg:script>&amp;&lt;]]><![CDATA[\"quoted' &",
    "controls": "c\x01\x08\x0b\x0c\x1f\x7f\ufffe\uffff",
    "terminal": "\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\rFAKE\n\x9b31m\u202eevil",
    "long": LONG,
    "not-utf8": os.fsdecode(b"bad-\xff\xfe-bytes"),
}
never = threading.Event()


def named(kind):
    """A function named NAMES[kind] from a file of that name (under /srv) that waits for its argument."""
    name = NAMES[kind]
    scope = {}
    exec(compile("def f(event):\n    event.wait()\n", "/srv/f.py", "exec"), scope)
    code = scope["f"].__code__.replace(co_name=name, co_qualname=name, co_filename="/srv/" + name + ".py")
    return type(scope["f"])(code, scope)


for kind in NAMES:
    threading.Thread(target=named(kind), args=(never,), name=NAMES[kind], daemon=True).start()
print("READY pid=%d" % os.getpid(), flush=True)
never.wait()
