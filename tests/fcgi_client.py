"""A minimal FastCGI client (stdlib only): talks to aigw's socket without a web server.

Used by the leak test and the benchmarks to send requests straight to
`aigw serve` or to a worker started with a listening socket on fd 0.
"""
import socket
import struct

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 1, 3, 4, 5, 6, 7


def _record(kind, req_id, content):
    out = b""
    for i in range(0, max(len(content), 1), 65535):
        chunk = content[i:i + 65535]
        pad = (8 - len(chunk) % 8) % 8
        out += struct.pack("!BBHHBx", 1, kind, req_id, len(chunk), pad) + chunk + b"\0" * pad
        if not content:
            break
    return out


def _pair(name, value):
    def length(n):
        return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
    name, value = name.encode(), value.encode()
    return length(len(name)) + length(len(value)) + name + value


def connect(addr, timeout=30):
    """An open connection to addr ((host, port) or a path), for request(..., conn=)."""
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def send_request(s, method, uri, body=b"", headers=None, keep_conn=False):
    """Writes one request (id 1) to the open connection s."""
    path, _, query = uri.partition("?")
    params = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": path, "QUERY_STRING": query,
              "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1"}
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            params["CONTENT_TYPE"] = v
        else:
            params["HTTP_" + k.upper().replace("-", "_")] = v
    pairs = b"".join(_pair(k, v) for k, v in params.items())
    msg = _record(FCGI_BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 1 if keep_conn else 0))
    msg += _record(FCGI_PARAMS, 1, pairs) + _record(FCGI_PARAMS, 1, b"")
    msg += (_record(FCGI_STDIN, 1, body) if body else b"") + _record(FCGI_STDIN, 1, b"")
    s.sendall(msg)


def read_response(s):
    """Reads the answer to the request on s up to its FCGI_END_REQUEST; returns
    (status, headers dict, body bytes)."""
    out = bytearray()
    buf = bytearray()
    done = False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        pos = 0
        while len(buf) - pos >= 8:
            _, kind, _, clen, pad = struct.unpack_from("!BBHHBx", buf, pos)
            if len(buf) - pos < 8 + clen + pad:
                break
            if kind == FCGI_STDOUT:
                out += buf[pos + 8:pos + 8 + clen]
            elif kind == FCGI_END_REQUEST:
                done = True
            pos += 8 + clen + pad
        del buf[:pos]
    head, _, payload = bytes(out).partition(b"\r\n\r\n")
    hdrs = {}
    for line in head.decode(errors="replace").split("\r\n"):
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    status = int(hdrs.get("status", "200").split()[0])
    return status, hdrs, payload


def request(addr, method, uri, body=b"", headers=None, timeout=30, conn=None):
    """Sends one request; returns (status, headers dict, body bytes). addr is (host, port) or a path.
    With conn (from connect()) the request asks the application to keep the connection
    open (FCGI_KEEP_CONN, as nginx's fastcgi_keep_conn does) and leaves it open."""
    s = conn or connect(addr, timeout)
    try:
        send_request(s, method, uri, body, headers, keep_conn=conn is not None)
        return read_response(s)
    finally:
        if not conn:
            s.close()
