"""An asyncio app with a known task tree: main awaits two named workers, each running two named fetches in a
TaskGroup; every fetch waits in asyncio.sleep."""
import asyncio
import os


async def fetch(n):
    await asyncio.sleep(3600)


async def worker(n):
    async with asyncio.TaskGroup() as group:
        group.create_task(fetch(n), name="fetch-%d-a" % n)
        group.create_task(fetch(n), name="fetch-%d-b" % n)


async def main():
    workers = [asyncio.create_task(worker(i), name="worker-%d" % i) for i in range(2)]
    await asyncio.sleep(0)  # let the workers start their task groups before we announce ourselves
    await asyncio.sleep(0)
    print("READY pid=%d" % os.getpid(), flush=True)
    await asyncio.gather(*workers)


asyncio.run(main(), debug=False)
