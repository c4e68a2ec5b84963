"""Runs INSIDE the target (its own interpreter, stdlib only): ``mem``'s census of the live heap.

Travels in the ``mem`` request before heapwindow.py (one namespace; the bootstrap, passengers/bootstrap.py, calls
heapwindow's ``run(request, conn, signals)``), which uses ``census`` for a census and ``count_heap`` for a
window's two type counts.

The census walks gc.get_objects() and what those containers hold that the gc does not track (bytes, str, int,
float, tuples of them: reached through gc.get_referents, shared ones counted once), counting objects and their
shallow size (sys.getsizeof) per type, on the main thread. The walk is bounded: it times its first CALIBRATE
objects, and when the whole heap would take longer than ``max_pause`` it walks every k-th object only and
scales the counts by k (the answer says so). Listing the objects (gc.get_objects) cannot be sampled: when that
alone takes longer than ``max_pause`` the answer says so too (``over_budget``).

Python 3.8 syntax; imports nothing of ours.
"""
import gc
import os
import sys
import time

CALIBRATE = 20000        # objects timed before choosing a stride
MAX_TYPES = 200          # types sent, at most
MAX_TEXT = 300           # characters of a name or a source line
MAX_EXPAND = 8           # depth of untracked containers (tuples of tuples) followed


# -- the census ------------------------------------------------------------------------------------------

def type_name(cls):
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    text = name if module in (None, "builtins") else "%s.%s" % (module, name)
    return str(text)[:MAX_TEXT]


class Walk:
    """Counts objects and shallow bytes per type, each count weighted by the sampling stride in effect."""

    def __init__(self):
        self.counts, self.sizes, self.seen, self.items, self.inner = {}, {}, set(), 0, 1

    def add(self, obj, weight):
        cls = type(obj)
        self.counts[cls] = self.counts.get(cls, 0) + weight
        try:
            self.sizes[cls] = self.sizes.get(cls, 0) + sys.getsizeof(obj) * weight
        except Exception:
            pass

    def visit(self, obj, weight, inner_cap):
        """``obj`` (a gc-tracked object) and the untracked objects it holds (bytes, str, numbers, tuples of
        them), following untracked containers MAX_EXPAND deep. A container holding more than ``inner_cap``
        objects is read with a stride of its own (and those counts weighted by it)."""
        self.add(obj, weight)
        self.items += 1
        is_tracked, referents, getrefcount, seen = gc.is_tracked, gc.get_referents, sys.getrefcount, self.seen
        kind = type(obj)
        if (kind is list or kind is tuple) and len(obj) > inner_cap:
            # A huge list: its items every j-th, without gc.get_referents copying all of them first (that copy,
            # and freeing it, took 45 ms for 5 M items here).
            step = len(obj) // inner_cap + 1
            todo = [(obj[::step], 0, step)]
        else:
            todo = [(referents(obj), 0, 1)]
        while todo:
            held, depth, step = todo.pop()
            if step > 1:
                self.inner = max(self.inner, step)
            elif len(held) > inner_cap:
                step = len(held) // inner_cap + 1
                held = held[::step]
                self.inner = max(self.inner, step)
            w = weight * step
            self.items += len(held)
            for inner in held:
                if is_tracked(inner):
                    continue  # counted as itself (it is in gc.get_objects())
                # Held by this container, the list ``held``, the loop and getrefcount's argument: SHARED_ABOVE
                # (measured on 3.14). More means other holders (or an immortal object): count it once, by id.
                if getrefcount(inner) > SHARED_ABOVE:
                    key = id(inner)
                    if key in seen:
                        continue
                    seen.add(key)
                kind = type(inner)
                if kind is type:
                    continue
                self.add(inner, w)
                if depth < MAX_EXPAND and (kind is tuple or kind is dict or kind is frozenset):
                    more = referents(inner)
                    if more:
                        todo.append((more, depth + 1, 1))
            held = None


SHARED_ABOVE = 5


def count_heap(max_pause, fixed=None):
    """({type: count}, {type: bytes}, facts): the heap, sampled when it is too big to walk within ``max_pause``
    seconds: every k-th gc-tracked object (the stride doubles whenever the walk falls behind its time budget),
    and within a container of more than ``inner_cap`` objects every j-th; each count is weighted by its
    stride (the answer says so). ``fixed`` = (stride, inner_cap) walks with those strides and no budget: a
    window's second census, made comparable with its first (and run in the window's thread, where the app's
    threads share the GIL with it rather than wait for it).

    The budget is what is left of ``max_pause`` once gc.get_objects() has listed the heap (that cannot be
    sampled: 40-95 ms per million objects here); freeing that list (30-40 ms per million, decref of every
    item) is left to a short-lived thread that frees it in slices (``free_later``), outside the pause."""
    started = time.perf_counter()
    objects = gc.get_objects()
    listed = time.perf_counter() - started
    total = len(objects)
    walk = Walk()
    index, stride, inner_cap = 0, 1, CALIBRATE
    if fixed is not None:
        stride, inner_cap = fixed
        while index < total:
            walk.visit(objects[index], stride, inner_cap)
            index += stride
        objects = None
        elapsed = time.perf_counter() - started
        return walk.counts, walk.sizes, {"objects": total, "items": walk.items, "stride": stride,
                                         "inner_cap": inner_cap, "inner_stride": walk.inner,
                                         "sampled": stride > 1 or walk.inner > 1, "pause_ms": round(elapsed * 1000, 1),
                                         "list_ms": round(listed * 1000, 1), "in_thread": True}
    # The list alone may exceed the budget (a huge heap, a small --max-pause): then the walk still gets a
    # tenth of it, and the answer says the budget was exceeded and by what.
    budget = max(max_pause - listed, max_pause * 0.1)
    # Calibrate: the first CALIBRATE objects (or CALIBRATE referents) at stride 1, at most a quarter of the budget.
    check = 64
    while index < total and index < CALIBRATE and walk.items < CALIBRATE:
        walk.visit(objects[index], 1, inner_cap)
        index += 1
        check -= 1
        if not check:
            check = 64
            if time.perf_counter() - started - listed > budget / 4:
                break
    spent = time.perf_counter() - started - listed
    per_item = spent / max(1, walk.items)
    items_per_object = walk.items / max(1, index)
    left = (total - index) * items_per_object * per_item
    room = (budget - spent) * 0.9  # a tenth spare: the walk's own time varies with what it meets
    if left > room:
        stride = int(left / max(room, 1e-3)) + 1
    # One container may take at most a tenth of the budget.
    inner_cap = max(1000, int(budget / 10 / max(per_item, 1e-9)))
    first = index
    check = 256
    while index < total:
        walk.visit(objects[index], stride, inner_cap)
        index += stride
        check -= 1
        if not check:
            check = 256
            used = time.perf_counter() - started - listed
            done = (index - first) / max(1, total - first)
            if used > budget * 0.1 and used > (spent + (budget - spent) * done) * 1.2:
                stride *= 2  # behind: sample more thinly from here on
                inner_cap = max(100, inner_cap // 2)
    walk.seen = None
    elapsed = time.perf_counter() - started
    free_later(objects)
    objects = None
    facts = {"objects": total, "items": walk.items, "stride": stride, "inner_cap": inner_cap,
             "inner_stride": walk.inner, "sampled": stride > 1 or walk.inner > 1,
             "pause_ms": round(elapsed * 1000, 1), "list_ms": round(listed * 1000, 1),
             "per_million_ms": round(per_item * 1e9, 1), "max_pause_ms": round(max_pause * 1000, 1),
             "over_budget": elapsed > max_pause}
    return walk.counts, walk.sizes, facts


FREE_SLICE = 20000  # items of the object list freed at a time: ~1 ms here, then the GIL may pass
OURS = "<kubectl-wand"  # the filename prefix of our code (the bootstrap compiles the op's code under it)


def main_thread_in_ours():
    """Whether the main thread still runs our op's code (the census answering)."""
    import threading
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code.co_filename.startswith(OURS):
            return True
        frame = frame.f_back
    return False


def free_later(objects):
    """Free gc.get_objects()'s list in a daemon thread once the main thread has left our code, a slice at a
    time (the last ones first: no copying), so the main thread's pause does not include decref-ing millions of
    items and the app's threads get the GIL between slices. Small lists are freed by the caller."""
    if len(objects) <= FREE_SLICE * 4:
        return

    def free(held):
        try:
            deadline = time.monotonic() + 60
            while main_thread_in_ours() and time.monotonic() < deadline:
                time.sleep(0.005)
            while held:
                del held[-FREE_SLICE:]
                time.sleep(0.001)
        except BaseException:
            pass
    try:
        import threading
        threading.Thread(target=free, args=(objects,), name="kubectl-wand-mem-free", daemon=True).start()
    except Exception:
        pass  # freed by the caller


def heap_facts():
    """What the process and CPython's allocator say, without walking anything."""
    facts = {"allocated_blocks": sys.getallocatedblocks(), "gc_count": list(gc.get_count()),
             "gc_threshold": list(gc.get_threshold()), "gc_enabled": gc.isenabled(), "rss": None}
    try:
        facts["gc_stats"] = [dict(s) for s in gc.get_stats()]
    except Exception:
        pass
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f.read(65536).decode("ascii", "replace").splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    parts = value.split()
                    if parts and parts[0].isdigit():
                        facts[{"VmRSS": "rss", "VmHWM": "rss_peak", "RssAnon": "rss_anon",
                               "RssFile": "rss_file"}[key]] = int(parts[0]) * 1024
    except OSError:
        pass
    if facts["rss"] is None:
        try:
            import resource
            facts["rss_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            pass
    try:
        import tracemalloc
        facts["tracemalloc"] = tracemalloc.is_tracing()
    except Exception:
        pass
    return facts


def ranked(counts, sizes, top):
    """The ``top`` types by count and the ``top`` by size, as one list of rows (a type in both once)."""
    by_count = sorted(counts, key=lambda c: -counts[c])[:top]
    by_size = sorted(sizes, key=lambda c: -sizes[c])[:top]
    rows = []
    for cls in by_count + [c for c in by_size if c not in by_count]:
        rows.append({"type": type_name(cls), "count": counts.get(cls, 0), "size": sizes.get(cls, 0)})
    return rows[:MAX_TYPES]


def census(max_pause, top):
    counts, sizes, walk_facts = count_heap(max_pause)
    return {"pid": os.getpid(), "types": ranked(counts, sizes, top), "walk": walk_facts, "heap": heap_facts(),
            "total_count": sum(counts.values()), "total_size": sum(sizes.values())}
