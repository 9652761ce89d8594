#!/usr/bin/env python3
"""Offers mod_json_cdr posts at a constant rate, each a distinct call, and reports latency.

oha cannot do this: its `-Z FILE` picks a random line of the file for each request
(oha 1.16, src/request_generator.rs, `BodyGenerator::Random`), so a run repeats documents,
and a repeated uuid is a duplicate that tollbook answers without writing anything.

Request i is due at start + i / rate. Its latency runs from when it was due, not from when a
connection was free to send it, so a slow server is not hidden by requests that waited to be
sent (coordinated omission; oha's `--latency-correction` does the same). Connections are
kept alive and reused; a request waits for a free one.

A WebSocket on the live stream (`/api/v1/stream`, opened before the first post) times when
each call's `CallCharged` event arrives, also from when its post was due: that is issue
17's "charged and on the live stream".

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


async def follow_stream(target, credential, arrivals, subscribed):
    """Records when each CDR's CallCharged event arrives on the live stream."""
    import base64, os, struct
    reader, writer = await asyncio.open_connection(target.hostname, target.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /api/v1/stream?kinds=CallCharged HTTP/1.1\r\nHost: {target.netloc}\r\n"
                  f"Authorization: Bearer {credential}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Protocol: tollbook\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if int(head.split(b" ", 2)[1]) != 101:
        sys.exit(f"the stream refused: {head[:200]!r}")
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
        opcode = first & 0x0F
        if opcode == 9:  # ping: a client's pong is masked
            writer.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        elif opcode == 1:
            now = time.perf_counter()
            message = json.loads(payload)
            if message.get("status") == "subscribed":
                subscribed.set()
                continue
            cdr = message.get("event", {}).get("data", {}).get("cdr", {})
            if "id" in cdr:
                arrivals[cdr["id"]] = now
        elif opcode == 8:
            return


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
    arrivals, subscribed = {}, asyncio.Event()
    stream = asyncio.create_task(follow_stream(target, credential, arrivals, subscribed))
    await asyncio.wait_for(subscribed.wait(), 10)
    dues = [0.0] * total

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
        dues[i] = due
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(i, due)))
    offered = time.perf_counter() - start
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start

    # The last events' way to the stream.
    for _ in range(100):
        if len(arrivals) >= total:
            break
        await asyncio.sleep(0.05)
    stream.cancel()
    on_stream = sorted(arrivals[f"bench-{run}-{i}"] - dues[i] for i in range(total) if f"bench-{run}-{i}" in arrivals)

    latencies.sort()
    at = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(f"requests {total} offered over {offered:.2f} s ({total / offered:.0f}/s), all answered after {elapsed:.2f} s")
    print(f"statuses {dict(sorted(statuses.items()))}")
    print(f"latency ms: p50 {at(0.50):.2f}  p90 {at(0.90):.2f}  p99 {at(0.99):.2f}  p99.9 {at(0.999):.2f}  max {latencies[-1] * 1000:.2f}")
    if on_stream:
        on = lambda q: on_stream[min(len(on_stream) - 1, int(q * len(on_stream)))] * 1000
        print(f"on the stream ({len(on_stream)} of {total}) ms: p50 {on(0.50):.2f}  p90 {on(0.90):.2f}  "
              f"p99 {on(0.99):.2f}  p99.9 {on(0.999):.2f}  max {on_stream[-1] * 1000:.2f}")
    if len(on_stream) != total:
        sys.exit(f"{total - len(on_stream)} charged calls never came on the stream")
    if set(statuses) != {201}:
        sys.exit("some posts were not charged (201)")


asyncio.run(main())
