"""A userspace TCP link in front of an upstream: delay, loss-like stalls, a cut, and an
ingress log. It stands in for `tc qdisc ... netem`, which this kernel lacks (no sch_netem:
"Specified qdisc kind is unknown").

- delay: every chunk is held DELAY_MS in each direction, pipelined (a chunk's release time
  is its arrival plus the delay, order kept), as netem on both ends of a link would;
- loss: with probability LOSS a chunk is held a further 200 ms more, Linux's minimum TCP
  retransmission timeout, which is what a lost segment costs a loopback TCP stream;
- cut: after CUT bytes from the upstream, both sides are closed (a link that dies
  mid-stream);
- log: every byte sent towards the upstream is appended to LOG: the upstream's own ingress
  record, independent of the router.

Usage: python slowlink.py LISTEN_PORT UPSTREAM_PORT [--delay-ms 50] [--loss 0.01]
       [--cut BYTES] [--log FILE]
"""

import argparse
import asyncio
import random
import time

RTO_S = 0.2


async def pump(reader, writer, delay, loss, cut, log, rng):
    q: asyncio.Queue = asyncio.Queue()

    async def release():
        sent = 0
        while True:
            t, data = await q.get()
            if data is None:
                break
            wait = t - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if cut is not None and sent + len(data) > cut:
                writer.write(data[: max(0, cut - sent)])
                await writer.drain()
                writer.transport.abort()
                return "cut"
            writer.write(data)
            await writer.drain()
            sent += len(data)
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass
        return "eof"

    task = asyncio.create_task(release())
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if log is not None:
                log.write(data)
                log.flush()
            t = time.monotonic() + delay
            if loss > 0 and rng.random() < loss:
                t += RTO_S
            last = max(last, t)
            await q.put((last, data))
    except (ConnectionError, OSError):
        pass
    await q.put((0, None))
    try:
        return await task
    except (ConnectionError, OSError):
        return "reset"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen", type=int)
    ap.add_argument("upstream", type=int)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--cut", type=int, default=None)
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    rng = random.Random(7)
    log = open(a.log, "ab") if a.log else None

    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", a.upstream)
        except OSError:
            cw.transport.abort()
            return
        d = a.delay_ms / 1e3
        up = asyncio.create_task(pump(cr, uw, d, a.loss, None, log, rng))
        down = asyncio.create_task(pump(ur, cw, d, a.loss, a.cut, None, rng))
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if any(t.result() == "cut" for t in done):
            uw.transport.abort()
            cw.transport.abort()
        await asyncio.gather(up, down, return_exceptions=True)
        for w in (uw, cw):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", a.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
