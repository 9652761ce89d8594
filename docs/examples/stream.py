#!/usr/bin/env python3
"""Follows tollbook's live event stream (a WebSocket) and prints each message on a line.

Python's standard library only, so it runs on a stock Debian or Ubuntu:

    python3 docs/examples/stream.py -H 'Authorization: Bearer KEY' \\
        'ws://localhost:8080/api/v1/stream?from=1&account=C-1'

`--events N` stops after N events (the `subscribed` message is not one). To resume
after a disconnect, reconnect with `from` = the last `position` printed + 1.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import struct
import sys
import urllib.parse

OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x0, 0x1, 0x8, 0x9, 0xA


def connect(url, headers):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        sys.exit(f"stream.py: {url}: a ws:// or wss:// URL is needed")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    sock = socket.create_connection((parts.hostname, port))
    if parts.scheme == "wss":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    reader = sock.makefile("rb")
    status = reader.readline().decode(errors="replace").strip()
    response_headers = []
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        response_headers.append(line)
    if " 101 " not in f"{status} ":
        # The refusal's JSON body says why (401, 404, 400 with the field at fault).
        length = next((int(h.split(b":")[1]) for h in response_headers if h.lower().startswith(b"content-length:")), 0)
        body = reader.read(length).decode(errors="replace") if length else ""
        sys.exit(f"stream.py: {status} {body}")
    return sock, reader


def send_frame(sock, opcode, payload=b""):
    # A client's frames are masked (RFC 6455, 5.3).
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_exactly(reader, count):
    data = reader.read(count)
    if len(data) < count:
        sys.exit("stream.py: the server closed the connection")
    return data


def messages(sock, reader):
    """Yields each text message; answers pings; ends at the server's close."""
    parts = []
    while True:
        first, second = read_exactly(reader, 2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", read_exactly(reader, 2))
        elif length == 127:
            (length,) = struct.unpack("!Q", read_exactly(reader, 8))
        payload = read_exactly(reader, length)
        if opcode == OPCODE_PING:
            send_frame(sock, OPCODE_PONG, payload)
        elif opcode == OPCODE_CLOSE:
            send_frame(sock, OPCODE_CLOSE, payload[:2])
            return
        elif opcode in (OPCODE_TEXT, OPCODE_CONTINUATION):
            parts.append(payload)
            if first & 0x80:
                yield b"".join(parts).decode()
                parts = []


def main():
    parser = argparse.ArgumentParser(description="Print tollbook's live event stream, a message a line.")
    parser.add_argument("-H", "--header", action="append", default=[], help="a request header, as for curl")
    parser.add_argument("--events", type=int, help="stop after this many events")
    parser.add_argument("url", help="ws://HOST/api/v1/stream?from=&book=&account=&kinds=")
    args = parser.parse_args()
    sock, reader = connect(args.url, args.header)
    events = 0
    for message in messages(sock, reader):
        print(message, flush=True)
        if "event" in json.loads(message):
            events += 1
            if args.events is not None and events >= args.events:
                send_frame(sock, OPCODE_CLOSE, struct.pack("!H", 1000))
                return


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
