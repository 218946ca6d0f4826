"""Prelude for python imaplib sessions driven from the Rust tests.

Run by `common::imapclients::imaplib_script` / `imaplib_spawn` as

    /usr/bin/python3 imap_prelude.py PORT MODE CAFILE USER PASSWORD  < script-body

MODE is "tls" (implicit TLS, IMAP4_SSL), "starttls" (IMAP4 + STARTTLS) or
"plain" (no TLS at all).  The server certificate is verified against CAFILE
for the name 127.0.0.1 (the test CA's leaf has an IP SAN for it).  USER "-"
means: connect but do not log in.

The script body (read from stdin, dedented, run with exec) sees these names:

    c                  the connection, already logged in (unless USER is "-")
    connect(login=True)  -> a new connection made the same way
    imaplib, ssl, sys, time, base64, re, socket   (modules)
    PORT, MODE, CAFILE, USER, PASSWORD

    ok(res)            res is (typ, data) from any imaplib call; asserts
                       typ == "OK" and returns data
    emit(label, x)     prints "label=<base64 of x>" (x: bytes or str); read it
                       back exactly in Rust with imapclients::script_value
    show(*args)        print(*args) (stdout is line buffered)
    literal(data)      the first literal (bytes) in imaplib response data,
                       e.g. literal(ok(c.uid("FETCH", "1", "(BODY.PEEK[])")))
    literals(data)     all literals in response data, in order
    fetch_body(c, uid) BODY.PEEK[] of message UID in the selected mailbox
    uids(c)            list of UIDs (ints) in the selected mailbox
    idle_start(c)      sends IDLE, waits for the "+" continuation, returns tag
    idle_wait(c, want=b"EXISTS", timeout=10)
                       reads untagged lines until one contains `want`;
                       returns the list of lines read (raises on timeout)
    idle_done(c, tag)  sends DONE, reads to the tagged OK, returns the lines

After the body returns, the prelude logs out.  An exception exits non-zero
with the traceback on stderr (imaplib_script then panics showing it).
"""

import base64
import imaplib
import re
import socket
import ssl
import sys
import textwrap
import time

PORT = int(sys.argv[1])
MODE = sys.argv[2]
CAFILE = sys.argv[3]
USER = sys.argv[4]
PASSWORD = sys.argv[5]
TIMEOUT = 60

sys.stdout.reconfigure(line_buffering=True)


def _ctx():
    return ssl.create_default_context(cafile=CAFILE)


def connect(login=True):
    if MODE == "tls":
        conn = imaplib.IMAP4_SSL("127.0.0.1", PORT, ssl_context=_ctx(), timeout=TIMEOUT)
    elif MODE == "starttls":
        conn = imaplib.IMAP4("127.0.0.1", PORT, timeout=TIMEOUT)
        ok(conn.starttls(ssl_context=_ctx()))
    elif MODE == "plain":
        conn = imaplib.IMAP4("127.0.0.1", PORT, timeout=TIMEOUT)
    else:
        raise ValueError("MODE must be tls, starttls or plain, not %r" % MODE)
    if login and USER != "-":
        ok(conn.login(USER, PASSWORD))
    return conn


def ok(res):
    typ, data = res
    if typ != "OK":
        raise AssertionError("IMAP command failed: %r" % (res,))
    return data


def emit(label, x):
    if isinstance(x, str):
        x = x.encode("utf-8")
    print(label + "=" + base64.b64encode(bytes(x)).decode("ascii"))


def show(*args):
    print(*args)


def literals(data):
    return [part[1] for part in data if isinstance(part, tuple)]


def literal(data):
    lits = literals(data)
    if not lits:
        raise AssertionError("no literal in response data %r" % (data,))
    return lits[0]


def fetch_body(conn, uid):
    return literal(ok(conn.uid("FETCH", str(uid), "(BODY.PEEK[])")))


def uids(conn):
    data = ok(conn.uid("SEARCH", None, "ALL"))
    return [int(x) for x in b" ".join(data).split()]


def idle_start(conn):
    tag = conn._new_tag()
    conn.send(tag + b" IDLE\r\n")
    while True:
        line = conn.readline()
        if not line:
            raise AssertionError("connection closed while starting IDLE")
        if line.startswith(b"+"):
            return tag
        if line.startswith(tag + b" "):
            raise AssertionError("IDLE refused: %r" % line)


def idle_wait(conn, want=b"EXISTS", timeout=10):
    if isinstance(want, str):
        want = want.encode()
    deadline = time.monotonic() + timeout
    lines = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %r within %ss during IDLE; got %r" % (want, timeout, lines))
            conn.sock.settimeout(left)
            try:
                line = conn.readline()
            except (socket.timeout, TimeoutError):
                raise TimeoutError("no %r within %ss during IDLE; got %r" % (want, timeout, lines))
            if not line:
                raise AssertionError("connection closed during IDLE; got %r" % (lines,))
            lines.append(line)
            if want in line:
                return lines
    finally:
        conn.sock.settimeout(TIMEOUT)


def idle_done(conn, tag):
    conn.send(b"DONE\r\n")
    lines = []
    while True:
        line = conn.readline()
        if not line:
            raise AssertionError("connection closed after DONE; got %r" % (lines,))
        lines.append(line)
        if line.startswith(tag + b" "):
            conn.tagged_commands.pop(tag, None)
            if not line.startswith(tag + b" OK"):
                raise AssertionError("IDLE ended badly: %r" % line)
            return lines


c = connect()
_body = textwrap.dedent(sys.stdin.read())
exec(compile(_body, "<test script>", "exec"))
try:
    c.logout()
except Exception:
    pass
