#!/usr/bin/python3
"""Upstream SMTP sink for sealpost integration tests.

Must be run with Debian's /usr/bin/python3 (python3-aiosmtpd).

Listens on 127.0.0.1:PORT (default 0: a port the kernel picks) either with
implicit TLS (``--mode tls``) or plain text + mandatory STARTTLS (``--mode
starttls``), or in the clear throughout (``--mode plain``, for the fault tests).  AUTH PLAIN / LOGIN with the given credentials is required before
MAIL.  Every accepted message is stored as
``OUTDIR/NNNN.eml`` (raw bytes as received, after dot-unstuffing) followed by
``OUTDIR/NNNN.json`` (envelope), the json being written atomically last so that
its presence means "message complete".

Prints ``PORT n`` (the port bound) and then ``READY`` on stdout once
listening, then runs until killed.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class SinkHandler:
    def __init__(self, outdir, reject_rcpt, reject_data, close_after=None):
        self.close_after = close_after
        self.outdir = outdir
        self.reject_rcpt = reject_rcpt
        self.reject_data = reject_data.encode("utf-8") if reject_data else None
        self.counter = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for needle in self.reject_rcpt:
            if needle in address:
                return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        if data is None:
            data = envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        if self.reject_data is not None and self.reject_data in data:
            return "554 5.6.0 rejected by test sink"
        with self.lock:
            self.counter += 1
            num = self.counter
        base = os.path.join(self.outdir, "%04d" % num)
        with open(base + ".eml", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        auth_user = None
        if session.auth_data is not None:
            login = getattr(session.auth_data, "login", None)
            if isinstance(login, bytes):
                auth_user = login.decode("utf-8", errors="replace")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "smtp_utf8": bool(envelope.smtp_utf8),
            "auth_user": auth_user,
            "size": len(data),
        }
        tmp = base + ".json.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            json.dump(meta, f, ensure_ascii=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, base + ".json")
        if self.close_after is not None:
            # As a provider's idle timeout does: 421, then the connection closes (once
            # the 250 below has gone out).
            session.sink_count = getattr(session, "sink_count", 0) + 1
            if session.sink_count >= self.close_after:
                transport = server.transport

                def close():
                    transport.write(b"421 4.4.2 sink closing the connection\r\n")
                    transport.close()

                asyncio.get_running_loop().call_later(0.05, close)
        return "250 2.0.0 Message accepted for delivery"


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False -> aiosmtpd replies "535 5.7.8 Authentication
        # credentials invalid"
        return AuthResult(success=False, handled=False)


def make_smtp_class(max_line):
    class SinkSMTP(SMTP):
        line_length_limit = max_line

    return SinkSMTP


class SinkController(Controller):
    def __init__(self, handler, smtp_class, **kwargs):
        self.smtp_class = smtp_class
        super().__init__(handler, **kwargs)

    def factory(self):
        return self.smtp_class(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        # Asked for port 0, the server is on the port the kernel picked: keep that one,
        # which start() then connects to (and main() prints).
        creating = super()._create_server()

        async def create():
            server = await creating
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


def main():
    p = argparse.ArgumentParser(description="sealpost test SMTP sink")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", choices=["tls", "starttls", "plain"], required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--reject-rcpt", action="append", default=[])
    p.add_argument("--reject-data", default=None)
    p.add_argument("--close-after", type=int, default=None)
    p.add_argument("--size-limit", type=int, default=128 * 1024 * 1024)
    # RFC 5321: 998 octets + CRLF + possible transparency dot.
    p.add_argument("--max-line", type=int, default=1001)
    args = p.parse_args()

    os.makedirs(args.outdir, exist_ok=True)
    # aiosmtpd warns (stderr) about auth_require_tls=False in tls mode;
    # that's intended here because the whole connection is TLS.
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    handler = SinkHandler(args.outdir, args.reject_rcpt, args.reject_data, args.close_after)
    common = dict(
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="sink.test",  # avoid socket.getfqdn() DNS lookups
        data_size_limit=args.size_limit,
        enable_SMTPUTF8=True,
        decode_data=False,  # keeps 8BITMIME advertised, raw bytes kept
        auth_required=True,
        authenticator=Authenticator(args.user, args.password),
        auth_exclude_mechanism=[],
    )
    if args.mode == "tls":
        # Implicit TLS: the listener wraps every connection. aiosmtpd does not
        # consider such a session "TLS" for AUTH purposes (it only tracks
        # STARTTLS), so auth_require_tls must be off here.
        controller = SinkController(
            handler,
            make_smtp_class(args.max_line),
            ssl_context=ctx,
            auth_require_tls=False,
            **common,
        )
    elif args.mode == "plain":
        # No TLS at all, AUTH in the clear: only for tests that must see the bytes
        # (the fault-injecting relay sits between sealpost and this sink).
        controller = SinkController(
            handler,
            make_smtp_class(args.max_line),
            auth_require_tls=False,
            **common,
        )
    else:
        controller = SinkController(
            handler,
            make_smtp_class(args.max_line),
            tls_context=ctx,
            require_starttls=True,
            auth_require_tls=True,
            **common,
        )

    controller.start()
    sys.stdout.write("PORT %d\nREADY\n" % controller.port)
    sys.stdout.flush()

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.is_set():
            stop.wait(1.0)
    finally:
        try:
            controller.stop()
        except Exception:
            pass


if __name__ == "__main__":
    main()
