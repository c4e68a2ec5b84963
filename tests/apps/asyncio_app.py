"""An asyncio app whose loop wakes regularly (a periodic task)."""
import asyncio
import os

TICKS = 0


async def ticker():
    global TICKS
    while True:
        TICKS += 1
        await asyncio.sleep(0.05)


async def main():
    task = asyncio.create_task(ticker(), name="ticker")
    print("READY pid=%d" % os.getpid(), flush=True)
    await task


asyncio.run(main())
