#!/usr/bin/python3
"""HTTPS stand-in for Web Key Directory hosts and a VKS keyserver.

Used by sealpost's integration tests (see ``tests/common/keyserver.rs``); run
with Debian's /usr/bin/python3 (standard library only).

One threaded HTTPS server on 127.0.0.1:PORT (default 0: a port the kernel
picks) serves every test hostname; the virtual host is taken from the Host
header (port stripped), falling back to the TLS SNI name when there is no Host
header.

* ``GET https://HOST/PATH?QUERY`` -> the file ``ROOT/HOST/PATH`` (query
  ignored, percent-decoding applied to the path), 404 if there is no such
  regular file; ``Content-Type: application/octet-stream``.
* ``GET /vks/v1/by-email/<percent-encoded email>`` on any host -> the file
  ``ROOT/HOST/vks/<lower-cased email>.asc`` with ``Content-Type:
  application/pgp-keys``, else 404.
* Per-host controls, re-read on every request:
  ``ROOT/HOST/.delay`` holds seconds (float) to sleep before answering;
  ``ROOT/HOST/.status`` holds an HTTP status answered to every request (with
  a short text body) instead of the normal lookup.
* Every request is appended to the log file as one line
  ``HOST TARGET STATUS`` where TARGET is the request path as sent, including
  ``?QUERY`` when there is one.  The line is written (and flushed) when the
  request arrives, before any ``.delay`` sleep and before the response.
* Responses are HTTP/1.1 with Content-Length and ``Connection: close``; the
  TLS connection is closed with close_notify.

Prints ``PORT n`` (the port bound) and then ``READY`` on stdout once
listening, then serves until killed (or, with ``--exit-on-stdin-eof``, until
its stdin is closed, i.e. the parent died).
"""

import argparse
import http.server
import os
import re
import ssl
import sys
import threading
import time
import urllib.parse

HOST_RE = re.compile(r"^[a-z0-9_-][a-z0-9._-]*$")
CONTROL_FILES = (".delay", ".status")
VKS_BY_EMAIL = "/vks/v1/by-email/"


class KeyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, ctx, root, log_file):
        self.ctx = ctx
        self.root = root
        self.log_file = log_file
        self.log_lock = threading.Lock()
        super().__init__(addr, Handler)

    def get_request(self):
        # The handshake happens in the handler thread (see Handler.setup), so
        # a slow or broken client cannot block the accept loop.
        sock, addr = self.socket.accept()
        tls = self.ctx.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        return tls, addr

    def shutdown_request(self, request):
        try:
            # Send close_notify (do not wait long for the peer's).
            request.settimeout(0.5)
            request.unwrap()
        except (OSError, ValueError):
            pass
        try:
            request.close()
        except OSError:
            pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError)):
            sys.stderr.write("connection from %s: %r\n" % (client_address, exc))
            sys.stderr.flush()
            return
        super().handle_error(request, client_address)

    def log_request_line(self, line):
        with self.log_lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()


def remember_sni(sslsock, server_name, ctx):
    try:
        sslsock.sealpost_sni = server_name
    except AttributeError:
        pass
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sealpost-test-keyserver"
    sys_version = ""
    timeout = 30

    def setup(self):
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()

    def do_GET(self):
        self.respond(True)

    def do_HEAD(self):
        self.respond(False)

    def do_POST(self):
        self.respond(True, allowed=False)

    do_PUT = do_POST
    do_DELETE = do_POST

    # -- helpers ---------------------------------------------------------

    def vhost(self):
        """Lower-cased virtual host name, or None if absent / unusable."""
        h = self.headers.get("Host")
        if not h:
            h = getattr(self.request, "sealpost_sni", None) or ""
        h = h.strip().lower()
        if h.startswith("["):
            return None
        h = h.split(":", 1)[0].rstrip(".")
        if not HOST_RE.match(h) or ".." in h:
            return None
        return h

    def control(self, hostdir, name):
        if hostdir is None:
            return None
        try:
            with open(os.path.join(hostdir, name), "r") as f:
                return f.read().strip()
        except OSError:
            return None

    def lookup(self, hostdir, path):
        """(status, body, content-type) of a normal GET."""
        not_found = (404, b"not found\n", "text/plain")
        if hostdir is None:
            return not_found
        if path.startswith(VKS_BY_EMAIL):
            email = urllib.parse.unquote(path[len(VKS_BY_EMAIL):]).strip().lower()
            if not email or "/" in email or "\0" in email or email.startswith("."):
                return not_found
            fname = os.path.join(hostdir, "vks", email + ".asc")
            ctype = "application/pgp-keys"
        else:
            parts = [p for p in urllib.parse.unquote(path).split("/") if p]
            if not parts or any(p in (".", "..") or "\0" in p for p in parts):
                return not_found
            if len(parts) == 1 and parts[0] in CONTROL_FILES:
                return not_found
            fname = os.path.join(hostdir, *parts)
            ctype = "application/octet-stream"
        if not os.path.isfile(fname):
            return not_found
        try:
            with open(fname, "rb") as f:
                return (200, f.read(), ctype)
        except OSError:
            return not_found

    def respond(self, with_body, allowed=True):
        target = self.path
        split = urllib.parse.urlsplit(target)
        path = split.path or "/"
        host = self.vhost()
        hostdir = os.path.join(self.server.root, host) if host else None

        forced = self.control(hostdir, ".status")
        status = None
        if forced:
            try:
                status = int(forced)
            except ValueError:
                status = None
        if status is not None:
            body, ctype = (b"forced status %d\n" % status, "text/plain")
        elif not allowed:
            status, body, ctype = (405, b"method not allowed\n", "text/plain")
        else:
            status, body, ctype = self.lookup(hostdir, path)

        self.server.log_request_line("%s %s %d" % (host or "-", target, status))

        delay = self.control(hostdir, ".delay")
        if delay:
            try:
                secs = float(delay)
            except ValueError:
                secs = 0.0
            if secs > 0:
                time.sleep(secs)

        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body)
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True, help="leaf (+ chain) PEM")
    ap.add_argument("--key", required=True, help="leaf private key PEM")
    ap.add_argument("--root", required=True, help="ROOT/HOST/PATH files")
    ap.add_argument("--log", required=True, help="request log (appended)")
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=args.cert, keyfile=args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sni_callback = remember_sni

    log_file = open(args.log, "a", encoding="utf-8")
    server = KeyServer(("127.0.0.1", args.port), ctx, os.path.abspath(args.root), log_file)

    if args.exit_on_stdin_eof:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except OSError:
                pass
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()

    print("PORT", server.server_address[1], flush=True)
    print("READY", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
