"""A target whose main thread waits in a function and a file whose names hold lone surrogates (a str Python
accepts, no encoder does: "\\ud800") and an invalid-UTF-8 byte smuggled as "\\udcff". Prints READY."""
import os
import time

NAME = "\ud800evil\udcff"
source = "def spin():\n    while True:\n        time.sleep(0.05)\n"
namespace = {"time": time}
exec(compile(source, "/srv/" + NAME + ".py", "exec"), namespace)
spin = namespace["spin"]
spin.__code__ = spin.__code__.replace(co_name=NAME, co_qualname=NAME)
print("READY pid=%d" % os.getpid(), flush=True)
spin()
