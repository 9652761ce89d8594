#!/usr/bin/env python3
"""Offers mod_json_cdr posts at a constant rate, each a distinct call, and reports latency.

oha cannot do this: its `-Z FILE` picks a random line of the file for each request
(oha 1.16, src/request_generator.rs, `BodyGenerator::Random`), so a run repeats documents,
and a repeated uuid is a duplicate that tollbook answers without writing anything.

Request i is due at start + i / rate. Its latency runs from when it was due, not from when a
connection was free to send it, so a slow server is not hidden by requests that waited to be
sent (coordinated omission; oha's `--latency-correction` does the same). Connections are
kept alive and reused; a request waits for a free one.

    freeswitch_load.py URL CREDENTIAL RATE SECONDS CONNECTIONS ACCOUNTCODES

ACCOUNTCODES is a comma-separated list the calls go round. Standard library only.
"""

import asyncio
import json
import sys
import time
import urllib.parse
import uuid


def document(call_id, accountcode, start):
    """A mod_json_cdr document as the switch posts it (`encode-values` on: URL-encoded)."""
    answer, end = start + 2, start + 67
    return json.dumps({
        "core-uuid": "3b4c8e0a-1f2b-4c5d-8e9f-0a1b2c3d4e5f", "switchname": "fs-bench",
        "channel_data": {"state": "CS_REPORTING", "direction": "inbound"},
        "variables": {
            "uuid": call_id, "direction": "inbound", "accountcode": accountcode,
            "caller_id_number": "4940111", "destination_number": "4930123456",
            "start_epoch": str(start), "answer_epoch": str(answer), "end_epoch": str(end),
            "start_uepoch": str(start * 1_000_000), "answer_uepoch": str(answer * 1_000_000),
            "end_uepoch": str(end * 1_000_000), "duration": "67", "billsec": "65",
            "hangup_cause": "NORMAL_CLEARING", "hangup_cause_q850": "16",
            "sip_hangup_disposition": "recv_bye",
        },
        "callflow": [{"caller_profile": {"caller_id_number": "4940111", "destination_number": "4930123456"}}],
    }, separators=(",", ":")).encode()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def main():
    url, credential, rate, seconds, connections, codes = sys.argv[1:7]
    rate, seconds, connections = int(rate), int(seconds), int(connections)
    codes = codes.split(",")
    target = urllib.parse.urlsplit(url)
    total = rate * seconds
    run = uuid.uuid4().hex[:8]
    # Built ahead, so that building a body never delays sending one.
    bodies = [document(f"bench-{run}-{i}", codes[i % len(codes)], 1_777_888_800 + i) for i in range(total)]
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Authorization: Bearer {credential}\r\nContent-Type: application/json\r\n").encode()

    free = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection(target.hostname, target.port))
    latencies, statuses = [], {}

    async def post(i, due):
        reader, writer = await free.get()
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(bodies[i]) + bodies[i])
        status = await read_response(reader)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        free.put_nowait((reader, writer))

    tasks = []
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(i, due)))
    offered = time.perf_counter() - start
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start

    latencies.sort()
    at = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(f"requests {total} offered over {offered:.2f} s ({total / offered:.0f}/s), all answered after {elapsed:.2f} s")
    print(f"statuses {dict(sorted(statuses.items()))}")
    print(f"latency ms: p50 {at(0.50):.2f}  p90 {at(0.90):.2f}  p99 {at(0.99):.2f}  p99.9 {at(0.999):.2f}  max {latencies[-1] * 1000:.2f}")
    if set(statuses) != {201}:
        sys.exit("some posts were not charged (201)")


asyncio.run(main())
