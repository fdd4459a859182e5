"""Slow clients are closed; the serve command wires the timeouts, the guard and the key file."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.testing import fake_cards
from imagine_edge.server import cli
from imagine_edge.server.app import create_app
from imagine_edge.server.connections import RequestTimeoutH11Protocol, request_timeout_protocol


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory, serve):
    engine = Engine(fake_cards(), data_dir=tmp_path_factory.mktemp("slow"))
    with serve(create_app(engine), http=request_timeout_protocol(0.5)) as root:
        yield root
    engine.close()


def _connect(root: str) -> socket.socket:
    url = urlsplit(root)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    # Bounded by the socket timeout: a server that never closes fails the test, not hangs it.
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_client_that_never_finishes_its_headers_is_closed(slow_root):
    with _connect(slow_root) as sock:
        sock.sendall(b"GET /api/v2/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _read_until_closed(sock) == b""


def test_a_client_that_never_finishes_its_body_gets_a_408(slow_root):
    with _connect(slow_root) as sock:
        sock.sendall(
            b"POST /api/v2/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"'
        )
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"took too long to arrive" in answer


def test_an_idle_connection_that_sends_nothing_is_closed(slow_root):
    with _connect(slow_root) as sock:
        assert _read_until_closed(sock) == b""


def test_normal_and_keep_alive_requests_still_work(slow_root):
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(slow_root + "/api/v2/ping").status_code == 200


def test_serve_wires_the_protections(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        Engine,
        "from_catalog",
        staticmethod(lambda names, **kw: Engine(fake_cards(), data_dir=tmp_path, **kw)),
    )
    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw, app=app))
    monkeypatch.setenv("IMAGINE_EDGE_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.delenv("IMAGINE_EDGE_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    argv = ["--host", "0.0.0.0", "--api-key-file", str(key_file), "--request-timeout", "7"]
    assert cli.serve_command(argv) == 0
    protocol = ran["http"]
    assert isinstance(protocol, type)
    assert issubclass(protocol, RequestTimeoutH11Protocol)
    assert protocol.request_timeout == 7
    assert ran["timeout_keep_alive"] == 5
    assert "from-file" not in capsys.readouterr().out
    # The key came from the file: a request without it is refused.
    from fastapi.testclient import TestClient

    with TestClient(ran["app"]) as client:  # type: ignore[arg-type]
        assert client.get("/api/v2/ping").status_code == 401
        ok = client.get("/api/v2/ping", headers={"Authorization": "Bearer from-file"})
        assert ok.status_code == 200


def test_serve_on_loopback_guards_host_and_origin(monkeypatch, tmp_path):
    monkeypatch.setattr(
        Engine,
        "from_catalog",
        staticmethod(lambda names, **kw: Engine(fake_cards(), data_dir=tmp_path, **kw)),
    )
    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app))
    monkeypatch.setenv("IMAGINE_EDGE_ORIGINS", "https://a.example")
    assert cli.serve_command(["--allow-host", "testserver"]) == 0
    from fastapi.testclient import TestClient

    with TestClient(ran["app"]) as client:  # type: ignore[arg-type]
        assert client.get("/api/v2/ping").status_code == 200
        assert (
            client.get("/api/v2/ping", headers={"Origin": "https://a.example"}).status_code == 200
        )
        assert (
            client.get("/api/v2/ping", headers={"Origin": "https://c.example"}).status_code == 403
        )
        assert client.get("/api/v2/ping", headers={"Host": "evil.example"}).status_code == 403


def test_missing_key_file_is_a_clear_error(tmp_path, capsys):
    assert cli.serve_command(["--api-key-file", str(tmp_path / "none")]) == 2
    assert "cannot read the API key file" in capsys.readouterr().err


def test_help_says_how_to_keep_the_key_out_of_the_process_list(capsys):
    with pytest.raises(SystemExit):
        cli.serve_command(["--help"])
    text = capsys.readouterr().out
    assert "IMAGINE_EDGE_API_KEY" in text
    assert "--api-key-file" in text
    assert "/proc/PID/cmdline" in text
    assert "IMAGINE_EDGE_ORIGINS" in text
