"""safetensors weights, the Hub-layout model folder, and loading it by path and through a hub endpoint.

The hub path is tested offline against a local HTTP server on 127.0.0.1 that answers as the
Hugging Face Hub does for ``hf_hub_download`` (HEAD with X-Repo-Commit / ETag, then GET), set as
the endpoint; a second load with the server stopped comes from huggingface_hub's cache.
"""

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest
import torch

import mobile_cv
import model_zoo
from model_zoo.folder import CONFIG_FILE, WEIGHTS_FILE, ModelFolderError, load_model_folder, save_model_folder
from tests.helpers import ROOT

ENTRY = "mnist_dmasking_1p5m"  # a searched architecture (DMaskingNAS), trained, bundled: no download


def tool(*args, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "model_zoo.py"), *args], capture_output=True, text=True, env=env
    )


def logits(model, size=24, chans=1):
    x = torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("folders") / "searched"
    p = tool("save", str(out), ENTRY)
    assert p.returncode == 0, p.stderr
    return out


def test_the_folder_holds_weights_config_and_card(saved):
    assert sorted(os.listdir(saved)) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((saved / CONFIG_FILE).read_text())
    entry = model_zoo.get_entry(ENTRY)
    assert config["arch_def"] == model_zoo.build_entry_model(entry).arch_def
    assert (config["num_classes"], config["in_chans"]) == (10, 1)
    assert config["pretrained_cfg"]["input_size"] == [1, 24, 24]
    assert config["pretrained_cfg"]["mean"] == [0.1307] and config["pretrained_cfg"]["std"] == [0.3081]
    assert config["flops_m"] == pytest.approx(entry.flops_m, rel=1e-3) and config["metrics"]["top1"] == entry.top1
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(saved / "README.md"))  # the Hub's own parser
    assert (card.data.pipeline_tag, card.data.library_name) == ("image-classification", "timm")
    assert "fbnetv2-dmasking" in card.data.tags and card.data.license == "other" and card.data.license_name
    (top1,) = [r for r in card.data.eval_results if r.metric_name == "top-1 accuracy"]
    assert top1.metric_value == entry.top1 and top1.task_type == "image-classification" and ENTRY in card.text


class _HubWrites(http.server.BaseHTTPRequestHandler):
    """The Hub's write API as huggingface_hub's upload_folder uses it: create a repo, validate the card's
    metadata, preupload (every file "regular": inlined in the commit), commit (NDJSON, base64
    contents); files land in ``root``."""

    root, requests = "", []

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append((self.path, self.headers.get("authorization")))
        if self.path == "/api/validate-yaml":  # the Hub checks a README's metadata before the upload
            return self._reply({"warnings": [], "errors": []})
        if self.path == "/api/repos/create":
            repo = json.loads(body)
            return self._reply({"url": f"http://{self.headers['Host']}/{repo.get('organization')}/{repo['name']}"})
        m = re.match(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^?]+)", self.path)
        if m and m.group(2) == "preupload":
            files = json.loads(body)["files"]
            return self._reply(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if m:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    path = os.path.join(self.root, m.group(1), m.group(3), item["value"]["path"])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(base64.b64decode(item["value"]["content"]))
            commit = f"http://{self.headers['Host']}/{m.group(1)}/commit/{'0' * 40}"
            return self._reply({"commitUrl": commit, "commitOid": "0" * 40})
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_push_uploads_the_folder_to_a_hub(saved, tmp_path):
    """tools/model_zoo.py push against a local stand-in of the Hub's write API: nothing leaves the machine."""
    handler = type("HubWrites", (_HubWrites,), {"root": str(tmp_path / "hub"), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HF_TOKEN": "hf_stand_in"}
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        p = tool("push", str(saved), "org/searched", "--private", "--endpoint", endpoint, env=env)
        bad = tool("push", str(tmp_path), "org/searched", "--endpoint", endpoint, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert p.returncode == 0, p.stderr
    assert "pushed" in p.stdout and "org/searched" in p.stdout
    pushed = tmp_path / "hub" / "org/searched" / "main"
    for name in sorted(os.listdir(saved)):
        assert (pushed / name).read_bytes() == (saved / name).read_bytes(), name
    assert all(auth == "Bearer hf_stand_in" for _, auth in handler.requests)
    assert bad.returncode == 2 and "is not a model folder" in bad.stderr and len(bad.stderr.splitlines()) == 1


class _HubRefuses(_HubWrites):
    """A Hub that refuses the token: 401 to every write."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_push_to_an_unreachable_or_refusing_hub_is_one_line(saved):
    with socket.socket() as s:  # a port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"HF_TOKEN": "hf_stand_in"}
    p = tool("push", str(saved), "org/x", "--endpoint", f"http://127.0.0.1:{closed}", env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"cannot reach the Hub at http://127.0.0.1:{closed}" in p.stderr and "--endpoint" in p.stderr
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubRefuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = tool("push", str(saved), "org/x", "--endpoint", f"http://127.0.0.1:{server.server_address[1]}", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "refused it (HTTP 401" in p.stderr and "HF_TOKEN" in p.stderr


def test_a_folder_loads_back_by_path_with_identical_logits(saved):
    original = model_zoo.create_model(ENTRY, pretrained=True)
    loaded = model_zoo.create_model(str(saved))
    assert loaded.arch_def == original.arch_def
    assert torch.equal(logits(loaded), logits(original))
    fresh = model_zoo.create_model(str(saved), pretrained=False)  # the architecture alone
    assert not torch.equal(logits(fresh), logits(original))
    ten_way = model_zoo.create_model(str(saved), num_classes=3)  # the classifier is left at its init
    assert logits(ten_way).shape == (2, 3)


def test_safetensors_and_pth_weights_load_alike(saved, tmp_path):
    entry = model_zoo.get_entry(ENTRY)
    a = model_zoo.create_model(ENTRY, pretrained=str(saved / WEIGHTS_FILE))
    b = model_zoo.create_model(ENTRY, pretrained=entry.weights_path())
    assert torch.equal(logits(a), logits(b))
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes((saved / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(model_zoo.WeightsFormatError, match="not a readable safetensors file"):
        model_zoo.create_model(ENTRY, pretrained=str(bad))


def test_timm_pretrained_cfg_file_takes_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    changed = model_zoo.create_model(ENTRY, pretrained=True)
    with torch.no_grad():
        changed.head.conv.bias.add_(1.0)  # weights that differ from the bundled ones
    save_file(changed.state_dict(), str(tmp_path / "w.safetensors"))
    overlay = {"file": str(tmp_path / "w.safetensors")}
    m = timm.create_model(ENTRY.lower(), pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(logits(m), logits(changed))


def test_saving_from_an_arch_file_and_weights_with_the_tool(tmp_path):
    arch = {"input_size": 32, "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k3", 16, 2, 1, {"expansion": 2}]]]}
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    model = mobile_cv.build_model(arch, num_classes=5, in_chans=3)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "model_final.safetensors"))
    p = tool(
        "save",
        str(tmp_path / "out"),
        "--arch",
        str(tmp_path / "arch.json"),
        "--weights",
        str(tmp_path / "model_final.safetensors"),
    )
    assert p.returncode == 0, p.stderr
    config = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())
    assert (config["num_classes"], config["in_chans"], config["pretrained_cfg"]["input_size"]) == (5, 3, [3, 32, 32])
    assert torch.equal(logits(load_model_folder(str(tmp_path / "out")), 32, 3), logits(model, 32, 3))


def test_bad_folders_are_one_clear_error_and_nothing_is_overwritten(saved, tmp_path):
    before = {n: (saved / n).read_bytes() for n in os.listdir(saved)}
    p = tool("save", str(saved), ENTRY)  # already a model folder
    assert p.returncode == 2 and "already a model folder" in p.stderr and "--overwrite" in p.stderr
    assert "Traceback" not in p.stderr
    assert {n: (saved / n).read_bytes() for n in os.listdir(saved)} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    p = tool("save", str(tmp_path / "other"), ENTRY)
    assert p.returncode == 2 and "other files" in p.stderr and (tmp_path / "other" / "notes.txt").read_text() == "mine"
    p = tool("save", str(tmp_path / "x"))
    assert p.returncode == 2 and "NAME or --arch" in p.stderr
    arch, weights = os.path.join(ROOT, "model_zoo", "weights", ENTRY + ".json"), saved / WEIGHTS_FILE
    for flags, words in [
        (["--weights", str(tmp_path)], "--weights .* is a folder"),
        (["--weights", str(tmp_path / "none.pth")], "--weights .* does not exist"),
        (["--weights", str(weights), "--eval-json", str(tmp_path)], "--eval-json .* is a folder"),
        (["--weights", str(weights)], "pass --config-file"),  # 1 channel: no ImageNet normalisation guessed
    ]:
        p = tool("save", str(tmp_path / "y"), "--arch", arch, *flags)
        assert p.returncode == 2 and re.search(words, p.stderr) and "Traceback" not in p.stderr, p.stderr
        assert not (tmp_path / "y").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_model_folder(str(broken))
    (broken / CONFIG_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelFolderError, match="format is 'something else'"):
        load_model_folder(str(broken))
    config = json.loads((saved / CONFIG_FILE).read_text())
    (broken / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="has no model.safetensors"):
        load_model_folder(str(broken))
    config["arch_def"]["blocks"][0][0][0] = "no_such_op"
    (broken / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="arch_def.*no_such_op"):
        load_model_folder(str(broken), pretrained=False)


def test_overwrite_replaces_a_model_folder(saved, tmp_path):
    out = tmp_path / "again"
    model = model_zoo.create_model(ENTRY, pretrained=True)
    save_model_folder(str(out), model, input_size=24, mean=(0.1,), std=(0.3,))
    save_model_folder(str(out), model, input_size=24, mean=(0.2,), std=(0.3,), overwrite=True)
    assert json.loads((out / CONFIG_FILE).read_text())["pretrained_cfg"]["mean"] == [0.2]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


class _Hub(http.server.BaseHTTPRequestHandler):
    """``/<org>/<name>/resolve/<revision>/<file>`` of one folder, with the Hub's metadata headers."""

    folder = ""
    commit = "0123456789abcdef0123456789abcdef01234567"

    def _file(self):
        parts = self.path.split("/")
        if len(parts) != 6 or parts[1:3] != ["org", "searched"] or parts[3] != "resolve":
            return None
        path = os.path.join(self.folder, parts[5])
        return path if os.path.isfile(path) else None

    def _headers(self, path):
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", self.commit)
        self.end_headers()
        return data

    def do_HEAD(self):  # noqa: N802
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self._headers(path)

    def do_GET(self):  # noqa: N802
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        self.wfile.write(self._headers(path))

    def log_message(self, *args):
        pass


def test_a_folder_loads_through_a_hub_endpoint_and_then_from_the_cache(saved, tmp_path, monkeypatch):
    handler = type("Hub", (_Hub,), {"folder": str(saved)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    cache = str(tmp_path / "hf-cache")
    try:
        hub = model_zoo.create_model("hf-hub:org/searched", cache_dir=cache)
        with pytest.raises(ModelFolderError, match="hf-hub:org/missing: cannot fetch config.json"):
            model_zoo.create_model("hf-hub:org/missing", cache_dir=cache)
    finally:
        server.shutdown()
        server.server_close()
    original = model_zoo.create_model(ENTRY, pretrained=True)
    assert torch.equal(logits(hub), logits(original))
    again = model_zoo.create_model("hf-hub:org/searched", cache_dir=cache)  # the server is gone: the cache
    assert torch.equal(logits(again), logits(original))
    with pytest.raises(ModelFolderError, match="expected hf-hub:<org>/<name>"):
        model_zoo.create_model("hf-hub:no-slash")


def test_timm_loads_our_folder_from_a_local_dir_and_a_hub_to_identical_logits(saved, tmp_path, monkeypatch):
    """timm's own loaders: config.json names timm's fbnet_arch_def (model_args: the arch def) and
    timm reads model.safetensors itself."""
    import huggingface_hub.constants as hub_constants
    import timm

    ours = model_zoo.create_model(str(saved))
    local = timm.create_model(f"local-dir:{saved}", pretrained=True)
    assert torch.equal(logits(local), logits(ours))
    assert local.pretrained_cfg["mean"] == (0.1307,) or list(local.pretrained_cfg["mean"]) == [0.1307]
    handler = type("Hub", (_Hub,), {"folder": str(saved)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # huggingface_hub builds download URLs from constants read at its import: point them here
    monkeypatch.setattr(hub_constants, "ENDPOINT", url)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    try:
        hub = timm.create_model("hf-hub:org/searched", pretrained=True, cache_dir=str(tmp_path / "hf"))
    finally:
        server.shutdown()
        server.server_close()
    assert torch.equal(logits(hub), logits(ours))
    with pytest.raises(model_zoo.ModelZooError, match="pass arch_def="):
        timm.create_model("fbnet_arch_def")
