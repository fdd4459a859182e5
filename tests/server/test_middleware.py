"""The loopback guard (Host and Origin), the exact image-file exemption from the API key, and
image files that are symbolic links."""

from __future__ import annotations

import os

import httpx
import imagine
import pytest

from imagine_edge.server.middleware import is_loopback


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from .conftest import live_server

    with live_server(
        tmp_path_factory.mktemp("guard"),
        loopback_guard=True,
        allowed_hosts=["*.devbox.test"],
        allowed_origins=["https://app.example", "http://*.trusted.test:*"],
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"Host": "localhost:1234"}, 200),
        ({"Host": "127.0.0.2"}, 200),
        ({"Host": "[::1]:8000"}, 200),
        ({"Host": "my.devbox.test:8000"}, 200),
        # DNS rebinding: the page's own name, resolving to 127.0.0.1.
        ({"Host": "evil.example:8000"}, 403),
        ({"Host": "localhost.evil.example"}, 403),
        ({"Origin": "http://localhost:3000"}, 200),
        ({"Origin": "http://127.0.0.1:8000"}, 200),
        ({"Origin": "https://app.example"}, 200),
        ({"Origin": "http://a.trusted.test:9000"}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "file://"}, 403),
    ],
)
def test_foreign_host_or_origin_is_refused(guarded, headers, status):
    response = httpx.get(guarded.endpoint + "/ping", headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "--allow-origin" in response.json()["detail"]


def test_a_page_cannot_post_a_multipart_upload(guarded):
    # A form post needs no CORS preflight: only the Origin check stops it.
    response = httpx.post(
        guarded.endpoint + "/transcribe",
        files={"file": ("a.wav", b"RIFF")},
        data={"model": "byte-transcriber"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    v1 = httpx.get(guarded.root + "/v1/models", headers={"Origin": "https://evil.example"})
    assert v1.status_code == 403
    assert v1.json()["error"]["code"] == "Forbidden"


def test_is_loopback():
    assert is_loopback("127.0.0.1")
    assert is_loopback("[::1]")
    assert is_loopback("LOCALHOST")
    assert is_loopback("api.localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("localhost.example")


def test_only_the_image_file_routes_skip_the_key(make_live):
    with make_live(api_key="k3y") as server:
        # Used to reach the /v1/models handler without a key: any path ending like a file.
        for path in ("/v1/models/x/files/x.png", "/api/v2/models/files/a.png",
                     "/api/v2/chat/completions/files/a.png", "/x/v2/files/a.png"):  # fmt: skip
            assert httpx.get(server.root + path).status_code == 401, path
        client = imagine.ImagineClient(endpoint=server.endpoint, api_key="k3y")
        url = client.images_generate("x", size="64x64", response_format="url").data[0].url
        assert httpx.get(url).status_code == 200
        file_name = url.rsplit("/", 1)[1]
        for folder in ("/v2/files/", "/api/v2/files/", "/api/v2/v2/files/"):
            assert httpx.get(server.root + folder + file_name).status_code == 200
        assert httpx.post(server.root + "/v2/files/" + file_name).status_code == 401


def test_an_image_file_that_is_a_symlink_is_not_served(make_live, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    with make_live() as server:
        client = imagine.ImagineClient(endpoint=server.endpoint, api_key="k")
        url = client.images_generate("x", size="64x64", response_format="url").data[0].url
        folder = server.engine.data_dir / "images"
        link = folder / "img-link-0.png"
        os.symlink(secret, link)
        response = httpx.get(server.root + "/v2/files/img-link-0.png")
        assert response.status_code == 404
        assert "private" not in response.text
        assert httpx.get(url).status_code == 200
