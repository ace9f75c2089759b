"""Downloads never hang and leave nothing behind: a local HTTP server that stalls, cuts short or
answers 404; the timeout from the environment; the staging folder of a killed process removed."""

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest


class _StallingServer:
    """A local HTTP server: /headers never answers, /body stops mid-body, /short closes early,
    /missing is a 404. Stalled handlers wait on an event released at teardown."""

    def __init__(self):
        release = self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/headers.pth":
                    release.wait(30)
                    return
                if self.path == "/missing.pth":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"\x00" * 1000)
                self.wfile.flush()
                if self.path == "/body.pth":
                    release.wait(30)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = _StallingServer()
    yield s
    s.close()


TIMEOUT = 1.0


@pytest.mark.parametrize(
    "path,words",
    [
        ("/headers.pth", ("sent nothing for 1 s",)),
        ("/body.pth", ("sent nothing for 1 s",)),
        ("/short.pth", ("failed",)),
        ("/missing.pth", ("404",)),
    ],
    ids=["stall_before_headers", "stall_mid_body", "cut_short", "not_found"],
)
def test_download_never_hangs_and_leaves_nothing(path, words, server, tmp_path):
    from model_zoo.hub import DownloadError, fetch_weights

    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        fetch_weights(server.url + path, cache_dir=str(cache), timeout=TIMEOUT)
    assert time.perf_counter() - t0 < 2 * TIMEOUT + 0.5
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert os.listdir(cache) == []


def test_download_timeout_from_environment(server, tmp_path, monkeypatch):
    from model_zoo.hub import DownloadError, fetch_weights

    monkeypatch.setenv("FBNET_DOWNLOAD_TIMEOUT", "0.5")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="sent nothing for 0.5 s"):
        fetch_weights(server.url + "/body.pth", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 1.5


def test_abandoned_download_of_a_killed_process_is_removed(server, tmp_path):
    from model_zoo.hub import DownloadError, fetch_weights

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".download-{dead.pid}-abcd"
    stale.mkdir()
    (stale / "model.pth").write_bytes(b"\x00" * 1000)
    with pytest.raises(DownloadError):
        fetch_weights(server.url + "/missing.pth", cache_dir=str(tmp_path), timeout=TIMEOUT)
    assert os.listdir(tmp_path) == []
