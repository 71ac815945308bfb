#!/usr/bin/env python3
"""Opens N keep-alive caller connections to a proxy, sends one valid init on each (one at a
time, so the proxy needs only one upstream connection), keeps them all open, then prints the
proxy's VmRSS.

usage: idle_conns.py HOST PORT N PID [PID...]   (VmRSS is summed over the PIDs, in KiB)
prints: BENCH idle_conns=N non200=K rss_kib=R
"""
import socket
import sys
import time

BODY = b'{"handshake_id":"bench-idle","callback_url":"https://app.example.com/dl/cb"}'


def request(host, port):
    return (
        b"POST /verification/v2/digilocker/init HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"Content-Type: application/json\r\nX-Caller-Id: bench-idle\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )


def read_response(sock):
    """Reads one Content-Length framed response; returns its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked response; expected Content-Length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    req = request(host, port)
    socks, non200 = [], 0
    deadline = time.monotonic() + 60
    for _ in range(n):
        if time.monotonic() > deadline:
            raise SystemExit("idle_conns: took longer than 60 s to open the connections")
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req)
        if read_response(s) != 200:
            non200 += 1
        socks.append(s)
    time.sleep(1.0)  # let the proxy settle; every connection is now idle keep-alive
    # Still open? A closed connection would read EOF without blocking.
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
    rss = sum(vm_rss_kib(p) for p in pids)
    print(f"BENCH idle_conns={n} closed_by_proxy={closed} non200={non200} rss_kib={rss}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
