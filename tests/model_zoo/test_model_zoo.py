"""The model zoo: entries against the published table, loading over HTTP from a local
server (never the internet), bad downloads, bundled weights, and timm."""

import hashlib
import io
import json
import logging
import os
import pickle
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import timm
import torch

import mobile_cv
import model_zoo
from mobile_cv import RegistryError, WeightsMismatchError
from model_zoo import ChecksumError, DownloadError, WeightsFormatError, ZooEntry, ZooEntryError
from tests.helpers import DATA

PUBLISHED = {m["name"]: m for m in json.load(open(os.path.join(DATA, "published_models.json")))["models"]}

TINY = {
    "input_size": 32,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 8, 2, 1]],
        [["ir_k3_sehsig_hs", 16, 2, 1, {"expansion": 2}]],
        [["ir_pool_hs", 32, 1, 1, {"expansion": 2}]],
    ],
}
OTHER = {**TINY, "blocks": [[["conv_k3_hs", 8, 2, 1]], [["ir_k5", 24, 2, 2, {"expansion": 3}]], TINY["blocks"][2]]}


# --- helpers ------------------------------------------------------------------------------


class Server:
    """A local HTTP server whose routes the test sets; counts the requests of each path."""

    def __init__(self):
        self.routes = {}
        self.requests = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] = server.requests[self.path] + 1
                status, body, length = server.routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)  # fewer bytes than Content-Length: the connection just closes

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def serve(self, path, body, status=200, content_length=None):
        self.routes[path] = (status, body, content_length)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("no_proxy", "NO_PROXY"):  # a proxy configured on the machine must not see 127.0.0.1
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


@pytest.fixture
def zoo_add():
    """Register zoo entries for one test only."""
    added = []

    def add(entry):
        model_zoo.register(entry)
        added.append(entry.name)
        return entry

    yield add
    for name in added:
        model_zoo.unregister(name)


def to_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def published_layout(model, seed=0):
    """A checkpoint laid out like the published ones: EMA weights under "model_ema" with a
    DDP "module." prefix, other weights under "state_dict", and non-tensor extras."""
    torch.manual_seed(seed)
    ema = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    other = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ema.items()}
    return {"model_ema": ema, "state_dict": other, "iteration": 300000}


def random_model(arch, num_classes=10, seed=0, **overrides):
    torch.manual_seed(seed)
    model = mobile_cv.build_model(arch, num_classes=num_classes, **overrides)
    with torch.no_grad():  # non-default BN statistics, so loading them is checked too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def logits(model, size, batch=2, in_chans=3):
    x = torch.randn(batch, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def cache_files(cache_dir):
    return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


class Evil:
    """Unpickling this creates a file: the proof that pickle code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def tiny_arch_file(tmp_path):
    path = tmp_path / "tiny_arch.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture
def tiny(tiny_arch_file):
    """``(source model, published-layout checkpoint bytes)`` of the tiny arch."""
    model = random_model(TINY)
    return model, to_bytes(published_layout(model))


def tiny_entry(arch_file, name="zoo_test_tiny", **fields):
    defaults = dict(
        name=name, arch=arch_file, input_size=32, resize=32, num_classes=10, url="http://127.0.0.1:9/unused.pth"
    )
    return ZooEntry(**{**defaults, **fields})


@pytest.fixture(scope="module")
def f1_source(tmp_path_factory):
    """A randomly initialized FBNetV2_F1 (1000 classes) and its checkpoint in the published layout."""
    model = random_model("FBNetV2_F1", num_classes=1000)
    path = str(tmp_path_factory.mktemp("f1") / "FBNetV2_F1.pth")
    torch.save(published_layout(model), path)
    return model, path


# --- entries ------------------------------------------------------------------------------


def test_published_entries_copy_the_public_table():
    assert [e.name for e in model_zoo.PUBLISHED] == list(PUBLISHED)
    for entry in model_zoo.PUBLISHED:
        ref = PUBLISHED[entry.name]
        assert entry.arch == entry.name and entry.url == ref["model_path"]
        assert entry.input_size == ref["resolution"] and entry.resize == ref.get("resize", 256)
        assert entry.flops_m == pytest.approx(ref["flops_m"]) and entry.params_m == pytest.approx(ref["params_m"])
        assert entry.top1 == pytest.approx(ref["top_1_accuracy"]) and entry.top5 == pytest.approx(ref["top_5_accuracy"])
        assert entry.sha256 is None and entry.num_classes == 1000 and not entry.is_bundled
        assert "mobile-vision" in entry.license


@pytest.mark.parametrize("name", model_zoo.list_models())
def test_every_entry_builds_with_its_recorded_size(name):
    entry = model_zoo.get_entry(name)
    model = model_zoo.create_model(name)
    assert model.input_size == entry.input_size and model.num_classes == entry.num_classes
    assert model.in_chans == entry.in_chans
    params = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert params / 1e6 == pytest.approx(entry.params_m, rel=1e-5)  # FLOPs: tests/arch/test_published.py
    first_conv = model.get_submodule(model_zoo.timm_models.FIRST_CONV)
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == entry.in_chans


def test_list_models_and_lookup_ignore_case():
    assert model_zoo.list_models("fbnetv2*") == [f"FBNetV2_{v}" for v in ("F1", "F2", "F3", "F4", "L1", "L2")]
    assert model_zoo.list_models("fbnet_?") == ["fbnet_a", "fbnet_b", "fbnet_c"]
    assert model_zoo.get_entry("fbnetv2_f1") is model_zoo.get_entry("FBNetV2_F1")


def test_unknown_name_suggests_close_names():
    with pytest.raises(RegistryError, match=r'no zoo entry named "FBNetV2_F9"; did you mean "fbnetv2_f\d"'):
        model_zoo.create_model("FBNetV2_F9")


def test_names_are_unique_ignoring_case(tiny_arch_file):
    with pytest.raises(RegistryError, match='clashes with the registered "FBNetV2_F1"'):
        model_zoo.register(tiny_entry(tiny_arch_file, name="fbnetv2_f1"))


@pytest.mark.parametrize(
    "fields,needle",
    [
        (dict(url=None), "exactly one of url="),
        (dict(file="x.pth"), "exactly one of url="),
        (dict(url="ftp://host/x.pth"), "must start with http"),
        (dict(sha256="ABC"), "64 lower-case hex"),
        (dict(url=None, file="x.pth", sha256="0" * 64, top1=1.0), "must record how_made"),
        (dict(arch="net.py"), "ship arch defs as .json"),
        (dict(name="fbnet-v2"), "only letters, digits and '_'"),
        (dict(resize=16), "resize (16) must be >= input_size (32)"),
        (dict(in_chans=1), "one value per input channel"),
    ],
)
def test_malformed_entries_are_refused(tiny_arch_file, fields, needle):
    with pytest.raises(ZooEntryError) as e:
        tiny_entry(tiny_arch_file, **fields)
    assert needle in str(e.value)


def test_cache_dir_from_env_else_torch_hub(monkeypatch, tmp_path):
    monkeypatch.setenv(model_zoo.CACHE_ENV, str(tmp_path / "c"))
    assert model_zoo.default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv(model_zoo.CACHE_ENV)
    assert model_zoo.default_cache_dir() == os.path.join(torch.hub.get_dir(), "checkpoints", "fbnetv2")


# --- loading over HTTP --------------------------------------------------------------------


def test_published_layout_over_http_loads_once_and_reproduces_logits(server, cache, f1_source):
    source, path = f1_source
    url = server.serve("/fbnet/models/FBNetV2_F1/model.pth", open(path, "rb").read())
    expected = logits(source, 128)
    model = model_zoo.create_model("FBNetV2_F1", pretrained=url, cache_dir=cache)
    assert torch.equal(logits(model, 128), expected)  # model_ema chosen, module. stripped
    assert server.requests["/fbnet/models/FBNetV2_F1/model.pth"] == 1
    (cached,) = cache_files(cache)
    assert cached.startswith("FBNetV2_F1-") and cached.endswith(".pth")

    again = model_zoo.create_model("FBNetV2_F1", pretrained=url, cache_dir=cache)
    assert server.requests["/fbnet/models/FBNetV2_F1/model.pth"] == 1  # served from the cache
    assert torch.equal(logits(again, 128), expected)
    assert cache_files(cache) == [cached]


def test_pretrained_true_downloads_the_entry_url_and_checks_its_sha256(server, cache, tiny, tiny_arch_file, zoo_add):
    source, body = tiny
    url = server.serve("/tiny.pth", body)
    zoo_add(tiny_entry(tiny_arch_file, url=url, sha256=hashlib.sha256(body).hexdigest()))
    model = model_zoo.create_model("zoo_test_tiny", pretrained=True, cache_dir=cache)
    assert torch.equal(logits(model, 32), logits(source, 32))
    model_zoo.create_model("zoo_test_tiny", pretrained=True, cache_dir=cache)
    assert server.requests["/tiny.pth"] == 1


def test_sha256_mismatch_is_refused_and_not_cached(server, cache, tiny, tiny_arch_file, zoo_add):
    url = server.serve("/tiny.pth", tiny[1])
    zoo_add(tiny_entry(tiny_arch_file, url=url, sha256="0" * 64))
    with pytest.raises(ChecksumError, match=f"download of {url}: sha256 is [0-9a-f]{{64}}, expected 0{{64}}"):
        model_zoo.create_model("zoo_test_tiny", pretrained=True, cache_dir=cache)
    assert cache_files(cache) == []


def _bad_bodies(good):
    unreadable = "not a readable PyTorch file"
    return {
        "http404": (dict(body=b"gone", status=404), DownloadError, "HTTP Error 404"),
        "http500": (dict(body=b"oops", status=500), DownloadError, "HTTP Error 500"),
        "cut_short": (
            dict(body=good[: len(good) // 2], content_length=len(good)),
            DownloadError,
            "retrieval incomplete",
        ),
        "truncated": (dict(body=good[: len(good) // 2]), WeightsFormatError, unreadable),
        "corrupt": (dict(body=bytes(b ^ 0x5A for b in good)), WeightsFormatError, unreadable),
        "html": (dict(body=b"<html><body>Sign in</body></html>"), WeightsFormatError, unreadable),
        "tensor": (dict(body=to_bytes(torch.zeros(3))), WeightsFormatError, "expected a dict of tensors"),
    }


@pytest.mark.parametrize("case", list(_bad_bodies(b"x")))
def test_bad_download_gets_a_clear_error_and_leaves_nothing(server, cache, tiny, tiny_arch_file, zoo_add, case):
    zoo_add(tiny_entry(tiny_arch_file))
    kwargs, error, needle = _bad_bodies(tiny[1])[case]
    url = server.serve("/bad.pth", **kwargs)
    with pytest.raises(error) as e:
        model_zoo.create_model("zoo_test_tiny", pretrained=url, cache_dir=cache)
    assert needle in str(e.value) and url in str(e.value)
    assert cache_files(cache) == []  # no partial file, no staging folder, no lock file


def test_checkpoint_of_another_arch_names_the_first_keys(server, cache, tiny_arch_file, zoo_add):
    zoo_add(tiny_entry(tiny_arch_file))
    url = server.serve("/other.pth", to_bytes(published_layout(random_model(OTHER))))
    with pytest.raises(WeightsMismatchError) as e:
        model_zoo.create_model("zoo_test_tiny", pretrained=url, cache_dir=cache)
    msg = str(e.value)
    assert "does not fit model 'zoo_test_tiny'" in msg and "backbone.stages.xif1_0." in msg
    assert "weights [" in msg and "missing from the weights" in msg
    assert cache_files(cache) == []


@pytest.mark.parametrize("via", ["http", "file"])
@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_pickled_code_is_refused_and_never_runs(server, cache, tmp_path, tiny_arch_file, zoo_add, via, fmt):
    zoo_add(tiny_entry(tiny_arch_file))
    marker = str(tmp_path / "pwned")
    payload = {"model_ema": {"head.conv.weight": Evil(marker)}}
    body = to_bytes(payload) if fmt == "torch.save" else pickle.dumps(payload, protocol=2)
    if via == "http":
        source = server.serve("/evil.pth", body)
    else:
        source = str(tmp_path / "evil.pth")
        open(source, "wb").write(body)
    with pytest.raises(WeightsFormatError) as e:
        model_zoo.create_model("zoo_test_tiny", pretrained=source, cache_dir=cache)
    assert "weights_only=True" in str(e.value)
    if fmt == "torch.save":
        assert "refused to load: it references the Python object io.open" in str(e.value)
    assert not os.path.exists(marker)
    assert cache_files(cache) == []


@pytest.mark.parametrize("case", ["http404", "cut_short", "corrupt", "other_arch"])
def test_failed_download_never_replaces_a_good_cached_file(server, cache, tiny, tiny_arch_file, zoo_add, case):
    source, good = tiny
    zoo_add(tiny_entry(tiny_arch_file))
    url = server.serve("/m.pth", good)
    model_zoo.create_model("zoo_test_tiny", pretrained=url, cache_dir=cache)
    (cached,) = cache_files(cache)
    digest = hashlib.sha256(open(os.path.join(cache, cached), "rb").read()).hexdigest()

    if case == "other_arch":
        server.serve("/m.pth", to_bytes(published_layout(random_model(OTHER))))
    else:
        kwargs, _, _ = _bad_bodies(good)[case]
        server.serve("/m.pth", **kwargs)
    with pytest.raises((DownloadError, WeightsFormatError, WeightsMismatchError)):
        model_zoo.create_model("zoo_test_tiny", pretrained=url, cache_dir=cache, force_download=True)
    assert cache_files(cache) == [cached]
    assert hashlib.sha256(open(os.path.join(cache, cached), "rb").read()).hexdigest() == digest

    model = model_zoo.create_model("zoo_test_tiny", pretrained=url, cache_dir=cache)
    assert torch.equal(logits(model, 32), logits(source, 32)) and server.requests["/m.pth"] == 2


def test_damaged_cached_file_is_downloaded_again(server, cache, tiny, tiny_arch_file, zoo_add):
    source, good = tiny
    url = server.serve("/m.pth", good)
    zoo_add(tiny_entry(tiny_arch_file, url=url, sha256=hashlib.sha256(good).hexdigest()))
    model_zoo.create_model("zoo_test_tiny", pretrained=True, cache_dir=cache)
    (cached,) = cache_files(cache)
    with open(os.path.join(cache, cached), "r+b") as f:
        f.write(b"garbage")
    model = model_zoo.create_model("zoo_test_tiny", pretrained=True, cache_dir=cache)
    assert torch.equal(logits(model, 32), logits(source, 32)) and server.requests["/m.pth"] == 2


@pytest.fixture
def served_tiny(server, tiny, tiny_arch_file, zoo_add):
    """``(source model, url)``: the tiny model's weights served, its zoo entry added."""
    source, body = tiny
    zoo_add(tiny_entry(tiny_arch_file))
    return source, server.serve("/tiny.pth", body)


def test_other_num_classes_drops_the_classifier_and_says_so(served_tiny, cache, caplog):
    source, url = served_tiny
    with caplog.at_level(logging.INFO, logger="model_zoo"):
        model = model_zoo.create_model("zoo_test_tiny", pretrained=url, num_classes=3, cache_dir=cache)
    assert "classifier has 10 classes, the model 3: head.conv.bias, head.conv.weight not loaded" in caplog.text
    assert model.head.conv.weight.shape[0] == 3
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)


def test_other_in_chans_adapts_the_first_conv(served_tiny, cache, caplog):
    source, url = served_tiny
    with caplog.at_level(logging.INFO, logger="model_zoo"):
        model = model_zoo.create_model("zoo_test_tiny", pretrained=url, in_chans=1, cache_dir=cache)
    key = "backbone.stages.xif0_0.conv.weight"
    assert f"adapted {key} from 3 to 1 input channels" in caplog.text
    torch.testing.assert_close(model.state_dict()[key], source.state_dict()[key].sum(1, keepdim=True))


def test_missing_local_file_is_reported(tiny_arch_file, zoo_add, tmp_path):
    zoo_add(tiny_entry(tiny_arch_file))
    with pytest.raises(model_zoo.ModelZooError, match="neither an existing file nor an http"):
        model_zoo.create_model("zoo_test_tiny", pretrained=str(tmp_path / "nope.pth"))


# --- bundled weights ----------------------------------------------------------------------


@pytest.fixture
def bundled(tmp_path, zoo_add):
    """A bundled entry as another engineer would add one: arch def and weights side by side."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "zoo_test_bundled.json").write_text(json.dumps({**TINY, "input_size": 28}))
    source = random_model({**TINY, "input_size": 28}, num_classes=10, in_chans=1)
    torch.save({"state_dict": source.state_dict()}, weights / "zoo_test_bundled.pth")
    entry = zoo_add(
        ZooEntry(
            name="zoo_test_bundled",
            arch=str(weights / "zoo_test_bundled.json"),
            file=str(weights / "zoo_test_bundled.pth"),
            sha256=hashlib.sha256((weights / "zoo_test_bundled.pth").read_bytes()).hexdigest(),
            input_size=28,
            resize=28,
            num_classes=10,
            in_chans=1,
            mean=(0.1307,),
            std=(0.3081,),
            top1=11.0,
            eval_set="random weights, made by the test",
            how_made="tests/model_zoo/test_model_zoo.py::bundled",
        )
    )
    return entry, source.eval()


def test_bundled_entry_loads_offline(bundled):
    entry, source = bundled
    model = model_zoo.create_model(entry.name, pretrained=True)
    assert torch.equal(logits(model, 28, in_chans=1), logits(source, 28, in_chans=1))
    assert model_zoo.format_table([entry.name]).splitlines()[1].split()[-1] == "bundled"


def test_tampered_bundled_file_is_refused(bundled):
    entry, _ = bundled
    with open(entry.weights_path(), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError, match=f"{entry.weights_path()}: sha256 is"):
        model_zoo.create_model(entry.name, pretrained=True)


def test_bundled_entry_through_timm(bundled):
    entry, source = bundled
    assert entry.timm_name in model_zoo.register_timm()
    model = timm.create_model(entry.timm_name, pretrained=True)
    assert model.pretrained_cfg["file"] == entry.weights_path() and model.pretrained_cfg["input_size"] == (1, 28, 28)
    assert torch.equal(logits(model, 28, in_chans=1), logits(source, 28, in_chans=1))
    features = timm.create_model(entry.timm_name, features_only=True)  # 2 feature levels, not timm's default 5
    assert features.feature_info.reduction() == [2, 4]


# --- timm ---------------------------------------------------------------------------------


def test_timm_lists_every_entry_without_clashing_with_its_own_models():
    assert timm.list_models("fbnetv2*") == [
        "fbnetv2_f1",
        "fbnetv2_f2",
        "fbnetv2_f3",
        "fbnetv2_f4",
        "fbnetv2_l1",
        "fbnetv2_l2",
    ]
    assert {"fbnet_a", "fbnet_b", "fbnet_c", "fbnetc_100"} <= set(timm.list_models("fbnet*"))
    assert timm.models.get_pretrained_cfg("fbnetc_100").architecture == "fbnetc_100"  # timm's own, untouched
    assert model_zoo.register_timm() == []  # idempotent


def _conv_shapes(model):
    """(in, out, kernel, stride, groups, output side) of every Conv2d, in forward order, at 224 px."""
    shapes = []

    def hook(m, inputs, out):
        shapes.append((m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, out.shape[-1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    return shapes


def test_fbnet_c_and_timm_fbnetc_100_differ_only_in_three_expansion_convs():
    """docs/model_zoo.md and docs/benchmarks.md: the same FBNet-C layout (stem, widths, kernels,
    strides, expansions, 1984-wide head), but timm's three expansion-1 blocks keep a 1x1 expansion
    conv that the published fbnet_c omits; our classifier is a 1x1 conv, timm's a Linear (same MACs)."""
    ours, theirs = mobile_cv.build_model("fbnet_c"), timm.create_model("fbnetc_100")
    a, b = _conv_shapes(ours), _conv_shapes(theirs)
    assert [s for s in a if s[4] > 1] == [s for s in b if s[4] > 1]  # every depthwise conv, in order
    assert Counter(b) - Counter(a) == Counter({(16, 16, 1, 1, 1, 112): 1, (24, 24, 1, 1, 1, 56): 2})
    assert Counter(a) - Counter(b) == Counter({(1984, 1000, 1, 1, 1, 1): 1})
    assert mobile_cv.count_flops_params(ours, 224) == pytest.approx((378.23344, 5.525424))
    assert mobile_cv.count_flops_params(theirs, 224) == pytest.approx((385.057376, 5.526832))
    # our fbnet_c with those three expansion convs counts exactly as timm's
    from arch_defs.fbnet import fbnet_c

    def add_pw(row):
        return [*row[:4], {**row[4], "expansion_conv": True}, *row[5:]]

    e1 = [r for stage in fbnet_c["blocks"] for r in stage if r[0].startswith("ir_") and r[4]["expansion"] == 1]
    assert len(e1) == 3
    with_pw = {**fbnet_c, "blocks": [[add_pw(r) if r in e1 else r for r in stage] for stage in fbnet_c["blocks"]]}
    assert mobile_cv.count_flops_params(mobile_cv.build_model(with_pw), 224) == pytest.approx((385.057376, 5.526832))


def test_timm_pretrained_cfg():
    cfg = timm.models.get_pretrained_cfg("fbnetv2_f1")
    entry = model_zoo.get_entry("FBNetV2_F1")
    assert cfg.url == entry.url and cfg.input_size == (3, 128, 128) and cfg.num_classes == 1000
    assert cfg.crop_pct == pytest.approx(128 / 151) and cfg.mean == (0.485, 0.456, 0.406)
    assert cfg.first_conv == "backbone.stages.xif0_0.conv" and cfg.classifier == "head.conv"
    assert timm.models.is_model_pretrained("fbnetv2_f1")


def test_timm_pretrained_cfg_is_complete_for_every_registered_model():
    """What timm's own test_model_default_cfgs checks of a model's cfg, on every model this
    package registers (tests/external/run_timm_model_tests.sh runs that test itself): every key
    timm's cfgs carry is set, pool_size is the forward_features map at the cfg's input size (and
    what forward returns once pooling and classifier are removed), and first_conv / classifier
    name weights of the model."""
    names = [e.lower() for e in model_zoo.list_models()]
    assert names and set(names) <= set(model_zoo.timm_models.registered_names())
    keys = ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "num_classes")
    for name in names:
        cfg, entry = timm.models.get_pretrained_cfg(name), model_zoo.get_entry(name)
        assert cfg.has_weights and cfg.license and cfg.first_conv and cfg.classifier, name
        assert all(getattr(cfg, k) not in (None, "", ()) for k in keys), (name, cfg)
        assert cfg.input_size == (entry.in_chans, entry.input_size, entry.input_size) and not cfg.fixed_input_size
        assert cfg.num_classes == entry.num_classes and len(cfg.mean) == len(cfg.std) == entry.in_chans
        assert len(cfg.pool_size) == 2 and all(isinstance(s, int) and s > 0 for s in cfg.pool_size), name
        model = timm.create_model(name).eval()
        assert model.pretrained_cfg["pool_size"] == cfg.pool_size
        params = model.state_dict()
        assert cfg.first_conv + ".weight" in params and cfg.classifier + ".weight" in params, name
        assert model.get_submodule(cfg.first_conv).in_channels == entry.in_chans
        assert model.get_submodule(cfg.classifier).out_channels == cfg.num_classes == model.num_classes
        x = torch.randn(1, *cfg.input_size)
        with torch.no_grad():
            feats = model.forward_features(x)
            assert tuple(feats.shape[1:]) == (model.num_features, *cfg.pool_size), name
            assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
            model.reset_classifier(0)
            assert model(x).shape == (1, model.num_features)
            model.reset_classifier(0, "")  # timm: no classifier, no pooling -> the feature map
            assert model(x).shape == feats.shape
            unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
            assert unpooled(x).shape == feats.shape, name


def test_timm_global_pool():
    """global_pool "avg" (default) is the FBNet head, logits identical to mobile_cv's model;
    "" removes the pooling (per-position logits of the 1x1-conv classifier); others are refused."""
    model = timm.create_model("fbnet_c", num_classes=5).eval()
    assert isinstance(model, mobile_cv.FBNet) and model.head.global_pool == "avg"
    plain = mobile_cv.build_model("fbnet_c", num_classes=5).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    unpooled = timm.create_model("fbnet_c", num_classes=5, global_pool="").eval()
    unpooled.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, plain(x), rtol=0, atol=0)
        per_position = unpooled(x)
        assert per_position.shape == (2, 5, 2, 2)
        torch.testing.assert_close(per_position.mean((2, 3)), logits)  # a 1x1 conv commutes with the mean
        assert unpooled.forward_head(unpooled.forward_features(x), pre_logits=True).shape == (2, 1984, 2, 2)
        unpooled.reset_classifier(5, "avg")
        assert unpooled(x).shape == (2, 5)
    with pytest.raises(ValueError, match="global_pool 'max'"):
        model.reset_classifier(0, "max")
    with pytest.raises(ValueError, match="global_pool 'max'"):
        timm.create_model("fbnet_c", global_pool="max")


def test_timm_create_model_with_a_local_checkpoint(f1_source):
    source, path = f1_source
    model = timm.create_model("fbnetv2_f1", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert torch.equal(logits(model, 128), logits(source, 128))
    head = timm.create_model("fbnetv2_f1", pretrained=True, num_classes=7, pretrained_cfg_overlay=dict(file=path))
    assert logits(head, 128).shape == (2, 7)
    gray = timm.create_model("fbnetv2_f1", pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=path))
    assert gray.backbone.stages.xif0_0.conv.in_channels == 1


def test_timm_features_only(f1_source):
    source, path = f1_source
    model = timm.create_model(
        "fbnetv2_f1", features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=path)
    ).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feats = model(x)
        first = source.backbone.stages[:2](x)
    shapes = [(1, 8, 64, 64), (1, 24, 32, 32), (1, 24, 16, 16), (1, 80, 8, 8), (1, 224, 4, 4)]
    assert [tuple(f.shape) for f in feats] == shapes
    assert model.feature_info.channels() == [8, 24, 24, 80, 224]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert torch.equal(feats[0], first)
    picked = timm.create_model("fbnet_c", features_only=True, out_indices=(3, 4))
    assert picked.feature_info.channels() == [112, 1984]  # fbnet's last conv_k1 stage keeps its 7x7 map


# --- tools --------------------------------------------------------------------------------


def test_tool_lists_and_describes(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "zoo_tool", os.path.join(os.path.dirname(DATA), "..", "tools", "model_zoo.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["list", "fbnetv2_f*", "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out]
    assert cells[0] == ["name", "resolution", "MFLOPs", "Mparams", "top-1 (%)", "weights"]
    assert cells[2] == ["FBNetV2_F1", "128x128", "56.41", "5.9994", "68.28", "URL"] and len(out) == 6
    assert tool.main(["info", "fbnet_c"]) == 0
    assert "counted now    378.233 MFLOPs, 5.5254 Mparams at 224x224" in capsys.readouterr().out
    assert tool.main(["info", "fbnet_d"]) == 2


def test_timm_model_contract_for_every_registered_model():
    """timm's conventions on every model it lists from this package: features and pre-logits
    widths, classifier access and reset, and FX tracing followed by TorchScript (the path of
    timm's FX feature extraction)."""
    import warnings

    names = [e.lower() for e in model_zoo.list_models()]
    assert names and all(timm.is_model(n) for n in names)
    for name in names:
        model = timm.create_model(name, num_classes=7).eval()
        size = model.pretrained_cfg["input_size"]
        x = torch.randn(2, *size[:1], 64, 64)
        feats = model.forward_features(x)
        assert feats.shape[:2] == (2, model.num_features), name
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size) and model.head_hidden_size == model.num_features, name
        assert model.forward_head(feats).shape == (2, 7) and model.get_classifier().out_channels == 7
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(torch.fx.symbolic_trace(model))
        torch.testing.assert_close(scripted(x), model(x))
