#!/usr/bin/python3
"""Open-loop load at a fixed rate (fallback when `xksctl bench` is not built).

Schedules request k at t0 + k/RATE and measures each latency from that intended send
time, so a stalled server shows up as latency instead of a lower offered rate (no
coordinated omission). Requests go over CONNECTIONS keep-alive TLS connections opened
before the clock starts; they are pre-signed with botocore in a pool that is re-signed
every 60 s (a SigV4 signature is valid for 5 minutes), so long runs stay valid.
Prints one JSON object shaped like `xksctl bench --json`.

Usage: bench/openloop.py --dir DEMO --port PORT [--api encrypt|mix|health] [--rate 1800]
                         [--duration 30] [--connections 16] [--size 32]
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import presign  # noqa: E402


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def raw(req):
    body = req["body"].encode()
    head = f"{req['method']} {req['path']} HTTP/1.1\r\n"
    for k, v in req["headers"].items():
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Pool:
    def __init__(self, signer, api, size, count=128):
        self.signer, self.api, self.size, self.count = signer, api, size, count
        self.reqs, self.i = [], 0
        self.refresh()

    def refresh(self):
        if self.api == "mix":  # per 20: 9 encrypt, 9 decrypt, 1 health (as xksctl bench's mix, minus metadata)
            enc = presign.build(self.signer, f"enc{self.size}", 9)
            dec = presign.build(self.signer, "decrypt", 9)
            hea = presign.build(self.signer, "health", 2)
            reqs = [r for trio in zip(enc, dec) for r in trio] + hea
        elif self.api == "encrypt":
            reqs = presign.build(self.signer, f"enc{self.size}", self.count)
        else:
            reqs = presign.build(self.signer, self.api, self.count)
        self.reqs = [raw(r) for r in reqs]
        self.signed_at = time.monotonic()

    def next(self):
        if time.monotonic() - self.signed_at > 60:
            self.refresh()
        self.i = (self.i + 1) % len(self.reqs)
        return self.reqs[self.i]


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(args):
    signer = presign.Signer(args.dir, args.host, args.port, args.key)
    pool = Pool(signer, args.api, args.size)
    ctx = ssl.create_default_context(cafile=os.path.join(args.dir, "tls", "ca.pem"))
    conns = [await asyncio.open_connection(args.host, args.port, ssl=ctx, server_hostname="localhost")
             for _ in range(args.connections)]
    queue = asyncio.Queue()
    lat, errors = [], {}
    transport = 0
    total = int(args.rate * args.duration)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1

    async def worker(rw):
        nonlocal transport
        reader, writer = rw
        while True:
            intended = await queue.get()
            if intended is None:
                return
            try:
                writer.write(pool.next())
                status, body = await asyncio.wait_for(read_response(reader), 5)
                if status != 200:
                    try:
                        name = json.loads(body).get("errorName", f"HTTP {status}")
                    except ValueError:
                        name = f"HTTP {status}"
                    errors[name] = errors.get(name, 0) + 1
            except Exception:  # noqa: BLE001 - reconnect and count
                transport += 1
                writer.close()
                reader, writer = await asyncio.open_connection(args.host, args.port, ssl=ctx,
                                                               server_hostname="localhost")
            lat.append(loop.time() - intended)

    workers = [asyncio.create_task(worker(c)) for c in conns]
    k = 0
    while k < total:
        now = loop.time()
        due = min(total, int((now - t0) * args.rate) + 1)
        while k < due:
            queue.put_nowait(t0 + k / args.rate)
            k += 1
        await asyncio.sleep(max(0.0, t0 + k / args.rate - loop.time()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - t0
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "api": args.api, "mode": "open", "generator": "bench/openloop.py", "rate": args.rate,
        "connections": args.connections, "elapsed_s": elapsed, "requests": len(lat),
        "ok": len(lat) - sum(errors.values()) - transport, "errors": errors,
        "transport_errors": transport, "requests_per_second": len(lat) / elapsed,
        "latency_ms": {"p50": percentile(lat_ms, 50), "p90": percentile(lat_ms, 90),
                       "p99": percentile(lat_ms, 99), "p99.9": percentile(lat_ms, 99.9),
                       "max": lat_ms[-1] if lat_ms else 0.0},
        "over_250ms": sum(1 for x in lat_ms if x > 250), "size": args.size,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api", default="encrypt", choices=("encrypt", "mix", "health", "decrypt"))
    ap.add_argument("--key", default="demo-aes-key")
    ap.add_argument("--rate", type=float, default=1800)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
