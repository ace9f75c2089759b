"""pytest plugin that points timm's own model tests (``timm_test_models.py``) at this package's models.

Loaded with ``-p timm_zoo_plugin`` by ``run_timm_model_tests.sh``, never by this repo's own
suite (it is no conftest.py, and its name matches no test pattern). It

* imports ``model_zoo`` when pytest loads plugins, i.e. before the vendored module is
  imported: that module parametrizes its tests with ``timm.list_models(...)`` at import, so
  our models must be registered with timm by then;
* keeps only the items whose ``model_name`` is a model this package registered with timm
  (``model_zoo.timm_models.registered_names()``) and deselects the rest: timm's own
  ~1,300 models, and its tests that take no model (``test_naflexvit_*``, ...) or a fixed one
  of timm's (``test_model_forward_torchscript_with_features_fx[regnetx_002]``);
* registers the markers timm's pyproject.toml declares (``base``, ``cfg``, ...) and, where
  pytest-timeout is not installed, ``timeout``, so that they don't warn;
* with ``TIMM_ZOO_STANDIN_WEIGHTS=1`` (``run_timm_model_tests.sh --offline``), points
  ``$FBNET_CACHE`` at a temporary folder holding, for every entry with a URL, a checkpoint of
  random weights in the published layout under the name the zoo caches that URL as: timm's
  ``test_model_load_pretrained`` / ``test_model_features_pretrained`` then run this package's
  whole loading path (in_chans=1 adaptation, classifier replaced or removed) without the
  network. They check loading, not the weights' values; without the variable those tests
  download the real checkpoints (or read them from ``$FBNET_CACHE``).
"""

import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import model_zoo  # noqa: E402  (registers every zoo entry with timm)

OURS = frozenset(model_zoo.timm_models.registered_names())
TIMM_MARKERS = ("base", "cfg", "torchscript", "features", "fxforward", "fxbackward")


STANDIN_ENV = "TIMM_ZOO_STANDIN_WEIGHTS"
_standin_dir = None


def _write_standin_cache(cache_dir):
    """A random-weight checkpoint, in the published layout, for every registered entry with a URL."""
    import torch

    from model_zoo import hub, zoo

    names = []
    for timm_name in sorted(OURS):
        entry = zoo.get_entry(timm_name)  # zoo names are unique ignoring case
        if entry.url is None:
            continue  # bundled: the real file is in the repo
        torch.manual_seed(0)
        model = zoo.build_entry_model(entry)
        ema = {"module." + k: v for k, v in model.state_dict().items()}  # EMA weights, DDP prefix
        path = os.path.join(cache_dir, hub.cache_filename(entry.url, entry.name))
        torch.save({"model_ema": ema, "iteration": 0}, path)
        names.append(timm_name)
    return names


def pytest_configure(config):
    global _standin_dir
    if os.environ.get(STANDIN_ENV) == "1":
        _standin_dir = tempfile.mkdtemp(prefix="timm-zoo-standin-")
        os.environ[model_zoo.hub.CACHE_ENV] = _standin_dir
        config._timm_zoo_standins = _write_standin_cache(_standin_dir)
    for marker in TIMM_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a test group of timm's tests/test_models.py")
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's marker (not installed here)")


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("model_name") if callspec is not None else None
        (keep if name in OURS else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_unconfigure(config):
    if _standin_dir is not None:
        shutil.rmtree(_standin_dir, ignore_errors=True)


def pytest_report_header(config):
    lines = [f"timm tests against this package's timm models: {', '.join(sorted(OURS))}"]
    standins = getattr(config, "_timm_zoo_standins", None)
    if standins:
        lines.append(f"{STANDIN_ENV}=1: random stand-in checkpoints, not the published weights: {', '.join(standins)}")
    return lines
