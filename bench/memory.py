#!/usr/bin/python3
"""Resident memory of a running xks-proxy with N idle keep-alive TLS connections.

Reads VmRSS of PID, opens N TLS connections to 127.0.0.1:PORT (at most --parallel
handshakes at a time), sends one `GET /ping` on each and reads the answer, keeps them all
open (idle keep-alive), waits --settle seconds, reads VmRSS again, checks that every
connection is still open, closes them and reads VmRSS once more. Prints one JSON object.

Usage: bench/memory.py --pid PID[,PID...] --port PORT [--cafile ca.pem] [-n 1000] [--path /ping]
The caller must allow enough open files (ulimit -n) for N sockets here and in the proxy.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in str(pids).split(","):
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length:
        await reader.readexactly(length)
    return status, head


async def open_one(args, ctx, sem, conns, errors):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, ssl=ctx, server_hostname="localhost"), 10)
            writer.write(f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode())
            status, head = await asyncio.wait_for(read_response(reader), 10)
            if status != 200 or b"connection: close" in head.lower():
                errors.append(f"status {status}")
            conns.append((reader, writer))
        except Exception as e:  # noqa: BLE001 - any failure is one error in the report
            errors.append(repr(e))


async def still_open(reader, writer):
    # An idle connection the server closed reads EOF at once; an open one times out.
    try:
        data = await asyncio.wait_for(reader.read(1), 0.05)
        return data != b""
    except asyncio.TimeoutError:
        return True
    except Exception:  # noqa: BLE001
        return False


async def main_async(args):
    ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else ssl._create_unverified_context()
    before = rss_kib(args.pid)
    sem = asyncio.Semaphore(args.parallel)
    conns, errors = [], []
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(args, ctx, sem, conns, errors) for _ in range(args.n)))
    opened_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    with_conns = rss_kib(args.pid)
    alive = sum(await asyncio.gather(*(still_open(r, w) for r, w in conns)))
    after_check = rss_kib(args.pid)
    for _, w in conns:
        w.close()
    await asyncio.sleep(args.settle)
    after_close = rss_kib(args.pid)
    return {
        "connections_requested": args.n,
        "connections_opened": len(conns),
        "connections_alive_after_settle": alive,
        "errors": len(errors),
        "first_errors": errors[:5],
        "open_seconds": round(opened_s, 2),
        "rss_kib_before": before,
        "rss_kib_with_connections": max(with_conns, after_check),
        "rss_kib_after_close": after_close,
        "rss_mib_with_connections": round(max(with_conns, after_check) / 1024, 1),
        "kib_per_connection": round((max(with_conns, after_check) - before) / max(1, len(conns)), 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", required=True, help="PID, or PID,PID,... to sum (nginx workers)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile")
    ap.add_argument("--path", default="/ping")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
