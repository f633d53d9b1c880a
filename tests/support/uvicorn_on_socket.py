"""`uvicorn api:app` on a listening socket the test process made and handed down (its file
descriptor in argv[1]).

Not `uvicorn --fd`: that wraps the descriptor as an AF_UNIX socket, so asyncio never sets
TCP_NODELAY on the connections it accepts, and Nagle's algorithm with delayed ACKs adds ~40 ms
to every request.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # where api.py is
    listener = socket.socket(fileno=int(sys.argv[1]))  # the family is read from the socket
    uvicorn.Server(uvicorn.Config("api:app")).run(sockets=[listener])


if __name__ == "__main__":
    main()
