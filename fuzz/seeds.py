#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the test mail and traces.

Each target reads a few option bytes, then its subject (see the layout comment above
each `fuzz_target!`): a seed is the test's bytes behind the option bytes PREFIX gives.
imap_session's input is a structured event list (arbitrary), not bytes from a trace:
its corpus grows from nothing.

The string literals of tests/*.rs, tests/common/*.rs and tests/support/* (messages,
IMAP and SMTP conversations, Autocrypt headers, SEARCH commands, configs) and
config.example.toml are sorted by what they look like and written one file each,
named by content hash, at most MAX_SEEDS per target and MAX_BYTES each. Run it again
after the tests change: `python3 fuzz/seeds.py` (the output is deterministic).
"""
import hashlib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"
MAX_SEEDS = 40
MAX_BYTES = 16 * 1024

# Option bytes in front of the subject, per target (see each target's layout).
PREFIX = {
    # client-side settings, literals honoured, whole input in one chunk
    "imap_framer": b"\x00\x00\x00",
    # STARTTLS offered, plaintext AUTH allowed; upstream accepts all; 64-byte chunks
    "smtp_session": b"\x06\x00\x3f",
    # not sealed, partials of 8 bytes; sections 1 and HEADER.FIELDS (SUBJECT FROM)
    "mime_view": b"\x00\x00\x07\x02" + b"\x00\x01\x00" + b"\x04\x00\x10",
    # a whole message, limit about 1 MiB
    "pgp_unwrap": b"\x00\xff\xff",
    # no header protection
    "outbound_roundtrip": b"\x00",
    # size 4096, no command, no leaves
    "search_doc": b"\x00\x00\x10\x00\x00\x00",
    # a key field for bob, signed-good for bob and dave, with an authserv-id
    "autocrypt_header": b"\x19\x30\x00\x00",
    "config": b"",
}

# "..." and b"..." (escapes), r"..." / r#"..."# (raw), Python b'...' / '...'.
RUST_STR = re.compile(rb'(?<![A-Za-z0-9_#])b?"((?:[^"\\]|\\.)*)"', re.S)
RUST_RAW = re.compile(rb'(?<![A-Za-z0-9_])b?r(#*)"(.*?)"\1', re.S)
PY_STR = re.compile(rb"(?<![A-Za-z0-9_])b?'((?:[^'\\\n]|\\.)*)'")


def unescape(s: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != 0x5C or i + 1 == len(s):
            out.append(c)
            i += 1
            continue
        e = s[i + 1 : i + 2]
        i += 2
        simple = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0", b"\\": b"\\", b'"': b'"', b"'": b"'"}
        if e in simple:
            out += simple[e]
        elif e == b"x":
            out.append(int(s[i : i + 2], 16))
            i += 2
        elif e == b"u" and s[i : i + 1] == b"{":
            end = s.index(b"}", i)
            out += chr(int(s[i + 1 : end], 16)).encode()
            i = end + 1
        elif e == b"\n":
            # A Rust line continuation: the line break and the next line's indent go.
            while i < len(s) and s[i] in b" \t\r\n":
                i += 1
        else:
            out += b"\\" + e
    return bytes(out)


def literals(path: pathlib.Path):
    text = path.read_bytes()
    if path.suffix == ".rs":
        for m in RUST_RAW.finditer(text):
            yield m.group(2)
        for m in RUST_STR.finditer(text):
            try:
                s = unescape(m.group(1))
            except ValueError:
                continue
            # format! placeholders stay; `{{` is a brace.
            yield s.replace(b"{{", b"{").replace(b"}}", b"}")
    else:
        for m in PY_STR.finditer(text):
            try:
                yield unescape(m.group(1))
            except ValueError:
                continue


HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]", re.M)
IMAP = re.compile(rb"^(\*|\+|[A-Za-z0-9.]+) (OK|NO|BAD|BYE|PREAUTH|CAPABILITY|LOGIN|SELECT|EXAMINE|FETCH|UID|SEARCH|SORT|APPEND|STORE|IDLE|AUTHENTICATE|STARTTLS|LIST|STATUS|NOOP|LOGOUT|ID|ENABLE|[0-9]+ (FETCH|EXISTS|EXPUNGE))\b", re.M)
SMTP = re.compile(rb"^(EHLO|HELO|MAIL FROM|RCPT TO|DATA|AUTH|STARTTLS|QUIT|RSET)\b", re.M)


def kinds(s: bytes):
    if len(s) < 4 or len(s) > MAX_BYTES:
        return
    is_message = bool(HEADER.match(s)) and (b"\r\n\r\n" in s or b"\n\n" in s)
    if is_message:
        yield from ("mime_view", "pgp_unwrap", "outbound_roundtrip", "search_doc")
    if b"Autocrypt" in s and HEADER.match(s):
        yield "autocrypt_header"
    if IMAP.search(s) and (b"\r\n" in s or s.endswith(b"\n")):
        yield "imap_framer"
    if SMTP.search(s):
        yield "smtp_session"
    if b"[[account]]" in s or b"state_dir" in s:
        yield "config"


def main():
    sources = sorted(
        p
        for pattern in ("tests/*.rs", "tests/common/*.rs", "tests/support/*")
        for p in ROOT.glob(pattern)
        if p.is_file()
    )
    seeds = {}
    for path in sources:
        for s in literals(path):
            for k in kinds(s):
                seeds.setdefault(k, {})[hashlib.sha1(s).hexdigest()[:16]] = s
    def add(target, s):
        seeds.setdefault(target, {})[hashlib.sha1(s).hexdigest()[:16]] = s

    add("config", (ROOT / "config.example.toml").read_bytes())
    # SEARCH and SORT commands from the tests, against a small message.
    message = b"From: Bob <bob@example.org>\r\nSubject: hello\r\nDate: 1 Nov 2026 09:00:00 +0000\r\n\r\nhello world\r\n"
    for path in sources:
        for s in literals(path):
            for line in re.findall(rb"^(?:[A-Za-z0-9.]+ )?(?:UID )?(?:SEARCH|SORT) [^\r\n]*", s, re.M):
                if not re.match(rb"[A-Za-z0-9.]+ ", line) or line.startswith((b"UID", b"SEARCH", b"SORT")):
                    line = b"s1 " + line
                line += b"\r\n"
                if len(line) < 256:
                    leaf = b"\x01\x07Subject\x05hello"
                    add("search_doc_commands", b"\x00\x00\x00\x40" + bytes([len(line)]) + line + b"\x01" + leaf + message)
    # Ciphertext made with sq 0.27 for fuzz/keys/alice.pgp (see fuzz/README.md).
    keys = ROOT / "fuzz" / "keys"
    signed = (keys / "sample-signed.asc").read_bytes()
    armored = (keys / "sample.asc").read_bytes()
    body = armored.split(b"\n\n", 1)[1].rsplit(b"-----END", 1)[0]
    pgp_mime = (
        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: ...\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + signed + b"\r\n--b--\r\n"
    )
    inline = b"From: bob@example.org\r\nSubject: x\r\n\r\n" + armored
    for shape, data in ((b"\x00", pgp_mime), (b"\x00", inline), (b"\x01", signed), (b"\x02", body),
                        (b"\x03", (keys / "sample.bin").read_bytes()), (b"\x03", signed)):
        add("pgp_unwrap_samples", shape + b"\xff\xff" + data)
    add("mime_view_samples", PREFIX["mime_view"] + pgp_mime)
    for group, found in sorted(seeds.items()):
        # `<target>_<more>` groups are complete seeds for <target>, prefix included.
        target = next(t for t in PREFIX if group == t or group.startswith(t + "_"))
        if group == target:
            found = {name: PREFIX[target] + s for name, s in found.items()}
        d = OUT / target
        d.mkdir(parents=True, exist_ok=True)
        # Spread over the sizes found: short seeds are cheap to mutate, long ones carry
        # the structure (multipart, literals); the cap keeps the repository small.
        ordered = sorted(found.items(), key=lambda kv: (len(kv[1]), kv[0]))
        step = max(1, len(ordered) / MAX_SEEDS)
        chosen = [ordered[int(i * step)] for i in range(min(MAX_SEEDS, len(ordered)))]
        for name, s in chosen:
            (d / name).write_bytes(s)
        print(f"{group}: {len(chosen)} seeds ({len(found)} found)", file=sys.stderr)


if __name__ == "__main__":
    main()
