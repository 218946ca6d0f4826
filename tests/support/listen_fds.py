"""Hands listening sockets on ports the kernel picked to a server that takes them over
by systemd's socket-activation protocol (sd_listen_fds(3)): no port is ever free
between being chosen and being listened on, so parallel tests never race for one.

    listen_fds.py PORTS_FILE N -- COMMAND ARGS...

Binds N TCP sockets on 127.0.0.1 port 0 and listens on them, writes their ports (one
line, space-separated, in order) to PORTS_FILE, then waits for the line "go" on stdin
(the caller writes the server's config naming those ports meanwhile) and executes COMMAND
with the sockets as descriptors 3, 4, ... and LISTEN_FDS / LISTEN_PID set. The process
keeps its PID across exec, which LISTEN_PID names.
"""

import fcntl
import os
import socket
import sys


def main() -> None:
    ports_file, count, sep, *command = sys.argv[1:]
    if sep != "--" or not command:
        sys.exit("usage: listen_fds.py PORTS_FILE N -- COMMAND ARGS...")
    count = int(count)
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        sockets.append(s)
    tmp = ports_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(str(s.getsockname()[1]) for s in sockets) + "\n")
    os.rename(tmp, ports_file)
    if sys.stdin.readline() != "go\n":
        # The caller gave up (its end of the pipe closed): no server without a config.
        sys.exit("listen_fds.py: no go from the caller")
    # Out of the way of 3, 4, ... first, then into place, inheritable.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 64) for s in sockets]
    for s in sockets:
        s.close()
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(count)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ.pop("LISTEN_FDNAMES", None)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
