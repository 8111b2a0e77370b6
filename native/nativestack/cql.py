"""Just enough of Cassandra's CQL native protocol (v4) to ask a node a query and read its rows.

The tests need two things from Cassandra that no HTTP endpoint gives: "the node serves CQL"
(readiness) and "what did Jaeger create" (keyspace, tables, TTLs). A Python driver would be one
more dependency for a few SELECTs; this speaks the documented wire format instead:
https://github.com/apache/cassandra/blob/cassandra-5.0/doc/native_protocol_v4.spec
One connection per query, no paging, no compression, no authentication (our nodes have none).
"""

import socket
import struct
import uuid
from typing import Any

VERSION = 0x04  # request frame of protocol v4 (responses carry 0x84)
OPCODES = {"ERROR": 0x00, "STARTUP": 0x01, "READY": 0x02, "QUERY": 0x07, "RESULT": 0x08}
CONSISTENCY_ONE = 0x0001
ROWS = 0x0002  # RESULT kind
WARNING = 0x08  # frame header flag
# Column type ids (spec section 4.2.5.2) that _value decodes.
_TEXT, _INT, _BIGINT, _BOOLEAN, _BLOB, _UUID = (0x000D, 0x0001), 0x0009, 0x0002, 0x0004, 0x0003, (0x000C, 0x000F)
_LIST, _MAP, _SET = 0x0020, 0x0021, 0x0022


class CQLError(RuntimeError):
    """The node answered with an ERROR frame (its code and message)."""


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def take(self, n: int) -> bytes:
        chunk = self.body[self.at : self.at + n]
        if len(chunk) != n:
            raise CQLError(f"truncated frame: wanted {n} bytes at {self.at} of {len(self.body)}")
        self.at += n
        return chunk

    def read_int(self) -> int:
        value: int = struct.unpack(">i", self.take(4))[0]
        return value

    def read_short(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def read_string(self) -> str:
        return self.take(self.read_short()).decode()

    def read_bytes(self) -> bytes | None:
        n = self.read_int()
        return None if n < 0 else self.take(n)

    def read_option(self) -> tuple[Any, ...]:
        """A column type: (id,) or (id, element types...) for collections."""
        kind = self.read_short()
        if kind in (_LIST, _SET):
            return (kind, self.read_option())
        if kind == _MAP:
            return (kind, self.read_option(), self.read_option())
        return (kind,)


def _value(kind: tuple[Any, ...], raw: bytes | None) -> Any:
    if raw is None:
        return None
    if kind[0] in _TEXT:
        return raw.decode()
    if kind[0] == _INT:
        return struct.unpack(">i", raw)[0]
    if kind[0] == _BIGINT:
        return struct.unpack(">q", raw)[0]
    if kind[0] == _BOOLEAN:
        return raw != b"\x00"
    if kind[0] == _BLOB:
        return raw.hex()
    if kind[0] in _UUID:
        return str(uuid.UUID(bytes=raw))
    if kind[0] in (_LIST, _SET, _MAP):
        reader = _Reader(raw)
        count = reader.read_int()
        if kind[0] == _MAP:
            return {_value(kind[1], reader.read_bytes()): _value(kind[2], reader.read_bytes()) for _ in range(count)}
        items = [_value(kind[1], reader.read_bytes()) for _ in range(count)]
        return set(items) if kind[0] == _SET else items
    raise CQLError(f"column type 0x{kind[0]:04x} is not decoded here")


def _string_map(values: dict[str, str]) -> bytes:
    body = struct.pack(">H", len(values))
    for key, value in values.items():
        for text in (key, value):
            encoded = text.encode()
            body += struct.pack(">H", len(encoded)) + encoded
    return body


def _exchange(sock: socket.socket, opcode: str, body: bytes) -> tuple[int, bytes]:
    sock.sendall(struct.pack(">BBhBi", VERSION, 0, 0, OPCODES[opcode], len(body)) + body)
    header = _recv_exactly(sock, 9)
    _, flags, _, answer, length = struct.unpack(">BBhBi", header)
    payload = _recv_exactly(sock, length)
    if flags & WARNING:  # a [string list] before the body, e.g. for an aggregate over a whole table
        reader = _Reader(payload)
        for _ in range(reader.read_short()):
            reader.read_string()
        payload = payload[reader.at :]
    if flags & ~WARNING:
        raise CQLError(f"frame flags 0x{flags:02x}: tracing, custom payload or compression were never asked for")
    if answer == OPCODES["ERROR"]:
        reader = _Reader(payload)
        code = reader.read_int()
        raise CQLError(f"error 0x{code:04x}: {reader.read_string()}")
    return answer, payload


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the node closed the connection mid-frame")
        data += chunk
    return data


def query(host: str, port: int, statement: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run one CQL statement at consistency ONE; its rows as {column: value} (none for DDL)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        answer, _ = _exchange(sock, "STARTUP", _string_map({"CQL_VERSION": "3.0.0"}))
        if answer != OPCODES["READY"]:
            raise CQLError(f"STARTUP answered opcode 0x{answer:02x}, not READY (authentication on?)")
        encoded = statement.encode()
        body = struct.pack(">i", len(encoded)) + encoded + struct.pack(">HB", CONSISTENCY_ONE, 0)
        _, payload = _exchange(sock, "QUERY", body)
    reader = _Reader(payload)
    if reader.read_int() != ROWS:
        return []
    flags, count = reader.read_int(), reader.read_int()
    if flags & 0x0002:  # has_more_pages: never set, since no page size is asked for
        reader.read_bytes()
    global_table = bool(flags & 0x0001)
    if global_table:
        reader.read_string(), reader.read_string()
    columns = []
    for _ in range(count):
        if not global_table:
            reader.read_string(), reader.read_string()
        columns.append((reader.read_string(), reader.read_option()))
    return [{name: _value(kind, reader.read_bytes()) for name, kind in columns} for _ in range(reader.read_int())]
