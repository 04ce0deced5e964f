"""HTTP/1.1 by hand, for tests that control how the bytes of V2 infer requests arrive (in pieces,
pipelined, cut off) and read the answers off the socket in order."""

from __future__ import annotations

import socket

import numpy as np
import orjson

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def binary_infer(model: str, tensors: dict[str, np.ndarray], request_id: str = "") -> bytes:
    """A whole HTTP/1.1 request of the binary tensor extension, binary outputs asked for; the JSON
    header's length varies with `request_id`, so the tensor data lands at any offset."""
    header = orjson.dumps(
        {
            "id": request_id,
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in tensors.items()
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body = header + b"".join(array.tobytes() for array in tensors.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def json_infer(document: object) -> bytes:
    body = orjson.dumps(document)
    head = (
        f"POST /v2/models/iris-like/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Responses:
    """HTTP/1.1 responses read off one socket, in order (each with a Content-Length)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body


def binary_output(headers: dict[str, str], body: bytes, name: str) -> np.ndarray:
    header_length = int(headers["inference-header-content-length"])
    document = orjson.loads(body[:header_length])
    offset = header_length
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == name:
            data = np.frombuffer(body[offset : offset + size], dtype=np.float32)
            return data.reshape(output["shape"])
        offset += size
    raise AssertionError(f"no output {name}")
