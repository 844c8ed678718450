"""ImageNet weights: downloaded from a (local) HTTP server into torch's hub cache, or a
clear one-line error when they cannot be fetched."""
import functools
import http.server
import socket
import threading

import pytest
import torch

from dipkd.models.pretrained import PretrainedWeightsError, cached_path, ensure_pretrained


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    torch.save({"conv1.weight": torch.ones(2)}, root / "resnet18-test.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_into_the_hub_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = f"{server}/resnet18-test.pth"
    path = ensure_pretrained(18, url)
    assert path == cached_path(url) and path.parent.name == "checkpoints"
    assert torch.equal(torch.load(path)["conv1.weight"], torch.ones(2))
    assert not list(path.parent.glob("*.partial"))
    assert ensure_pretrained(18, url) == path  # cached: no second download


def test_unreachable_weights_give_one_clear_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError) as err:
        ensure_pretrained(50, f"{server}/missing.pth")
    msg = str(err.value)
    assert "\n" not in msg and "set pretrained: false" in msg and "HTTPError" in msg
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    with pytest.raises(PretrainedWeightsError, match="could not be downloaded"):
        ensure_pretrained(50, f"http://127.0.0.1:{port}/resnet50.pth")
    assert not any((tmp_path / "torch").rglob("*.partial"))
