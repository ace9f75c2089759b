"""A model as one folder, in the Hugging Face Hub's layout: weights, config and model card together.

::

    DIR/
      model.safetensors   the weights (a plain state dict)
      config.json         what rebuilds the model: the arch def, classes, channels, input size,
                          mean/std, FLOPs/params and the measured accuracy (timm's ``pretrained_cfg``
                          keys inside, so timm users find what they expect)
      README.md           the model card

``save_model_folder`` writes one (``tools/model_zoo.py save`` from the command line);
``load_model_folder`` rebuilds the architecture from ``config.json`` and loads the weights, so a
searched architecture travels with its weights without being registered anywhere.
``model_zoo.create_model("path/to/DIR")`` and ``create_model("hf-hub:org/name")`` use it; the hub
form downloads the folder's files through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and tokens apply).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Optional, Sequence

import mobile_cv
from mobile_cv.arch.arch_def import ArchDefError
from mobile_cv.arch.weights import check_values, load_state_dict, safetensors_bytes
from mobile_cv.atomic_files import staging_folder

from .fit import CLASSIFIER, fit_state_dict
from .hub import ModelZooError, read_state_dict

FORMAT = "fbnetv2-dmasking/model-folder/1"
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
# the timm model a folder's config.json names ("architecture"): it builds the arch def of the folder's
# "model_args" (model_zoo.timm_models.fbnet_arch_def), so timm's local-dir: and hf-hub: read our folders
ARCH_DEF_MODEL = "fbnet_arch_def"
HUB_PREFIX = "hf-hub:"


class ModelFolderError(ModelZooError):
    """A model folder (or hub repository) is missing a file, or its config.json is malformed."""


def is_model_folder(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike)) and os.path.isfile(os.path.join(spec, CONFIG_FILE))


def is_hub_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def folder_config(
    model: mobile_cv.FBNet,
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    name: Optional[str] = None,
    crop_pct: float = 0.875,
    interpolation: str = "bilinear",
    metrics: Optional[Dict[str, Any]] = None,
    license: Optional[str] = None,
    source: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``config.json`` of ``model``: everything :func:`load_model_folder` needs, and timm's keys."""
    if len(mean) != model.in_chans or len(std) != model.in_chans:
        raise ModelFolderError(f"mean and std need one value per input channel ({model.in_chans}), got {mean}, {std}")
    flops_m, params_m = mobile_cv.count_flops_params(model, input_size)
    config = {
        "format": FORMAT,
        "library": "fbnetv2-dmasking",
        "library_version": mobile_cv.__version__,
        "name": name or getattr(model, "arch_name", None) or "fbnet",
        # timm's key: the timm model that rebuilds this folder from model_args (timm_models.fbnet_arch_def)
        "architecture": ARCH_DEF_MODEL,
        "model_args": {"arch_def": model.arch_def},
        "arch_def": model.arch_def,
        "num_classes": model.num_classes,
        "in_chans": model.in_chans,
        "num_features": model.num_features,
        "flops_m": flops_m,
        "params_m": params_m,
        "pretrained_cfg": {
            "input_size": [model.in_chans, input_size, input_size],
            "crop_pct": crop_pct,
            "interpolation": interpolation,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "num_classes": model.num_classes,
            "first_conv": "backbone.stages.xif0_0.conv",
            "classifier": CLASSIFIER,
        },
    }
    if metrics:
        config["metrics"] = metrics
    if license:
        config["license"] = license
    if source:
        config["source"] = source
    return config


def _license_id(terms: Optional[str]) -> str:
    return terms if terms and " " not in terms and len(terms) < 40 else "other"


def model_card(config: Dict[str, Any]) -> str:
    """The model card (``README.md``), built with ``huggingface_hub.ModelCard``: Hub metadata (license id,
    ``pipeline_tag: image-classification``, ``library_name: timm``, tags, the measured accuracy as eval
    results) and what the model is and how to load it."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cfg, metrics = config["pretrained_cfg"], config.get("metrics") or {}
    name = config.get("name", config["architecture"])
    dataset = str(metrics.get("eval_set") or "evaluation set")
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset.lower().replace(" ", "-"),
            dataset_name=dataset,
            dataset_split=key[: -len("top1")].rstrip("_") or None,
            metric_type="accuracy",
            metric_name=f"top-{k[-1]} accuracy",
            metric_value=float(metrics[k]),
        )
        for key in metrics
        if key.endswith("top1") and isinstance(metrics[key], (int, float))
        for k in (key, key[:-1] + "5")
        if isinstance(metrics.get(k), (int, float))
    ]
    license_id = _license_id(config.get("license"))
    data = ModelCardData(
        model_name=name,
        license=license_id,
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "fbnet", "dmaskingnas", "fbnetv2-dmasking"],
        eval_results=results or None,
        # the Hub wants a license id; prose terms go to license_name
        **({"license_name": config["license"]} if config.get("license") and license_id == "other" else {}),
    )
    lines = [
        f"# {name}",
        "",
        f"An FBNet-style model made with fbnetv2-dmasking: {config['flops_m']:.3f} MFLOPs, {config['params_m']:.4f} M "
        f"parameters at {cfg['input_size'][1]} px, {config['num_classes']} classes, {config['in_chans']} input "
        "channel(s).",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()] + [""]
    if config.get("source"):
        lines += [f"Made by: {config['source']}", ""]
    lines += [
        "Load it with timm (`pip install fbnetv2-dmasking`: importing `model_zoo` registers the model):",
        "",
        "```python",
        "import timm, model_zoo",
        'model = timm.create_model("hf-hub:<org>/<name>", pretrained=True)  # or "local-dir:path/to/folder"',
        "```",
        "",
        'or with the package itself: `model_zoo.create_model("hf-hub:<org>/<name>")`.',
        "",
        f"Inputs: RGB/grey images scaled to [0, 1], normalised with mean {cfg['mean']} and std {cfg['std']}, "
        f"resized to {cfg['input_size'][1]} px (crop_pct {cfg['crop_pct']:.3f}, {cfg['interpolation']}). "
        "The architecture is in `config.json` (`arch_def`).",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).content


def push_model_folder(
    folder: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
) -> str:
    """Upload a model folder to the Hugging Face Hub repo ``repo_id`` ("org/name"), created if it does
    not exist (``private`` then), through ``huggingface_hub.HfApi.upload_folder``; the token comes from
    where huggingface_hub reads it (``HF_TOKEN``, ``huggingface-cli login``) unless given. Returns the
    commit's URL."""
    from huggingface_hub import HfApi

    if not is_model_folder(folder):
        raise ModelFolderError(
            f"{folder} is not a model folder (no {CONFIG_FILE}): write one with tools/model_zoo.py save"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelFolderError(f"the Hub repo must be <org>/<name>, got {repo_id!r}")
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    where = f"the Hub at {api.endpoint}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            revision=revision,
            commit_message=f"Upload {read_folder_config(folder).get('name', 'model')} (fbnetv2-dmasking)",
        )
    except HfHubHTTPError as e:  # the Hub answered: no token, a refused token, no such org, ...
        status = getattr(getattr(e, "response", None), "status_code", "?")
        hint = " (a token with write access: HF_TOKEN or huggingface-cli login)" if status in (401, 403) else ""
        raise ModelFolderError(
            f"push to {repo_id}: {where} refused it (HTTP {status}: {_first_line(e)}){hint}"
        ) from None
    except Exception as e:
        if not _is_network_error(e):
            raise  # a bug keeps its traceback
        raise ModelFolderError(
            f"push to {repo_id}: cannot reach {where} ({type(e).__name__}: {_first_line(e)}); "
            f"check the network and --endpoint / HF_ENDPOINT"
        ) from None
    return str(info)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _is_network_error(e: Exception) -> bool:
    """A connection that failed or timed out, in whichever HTTP library huggingface_hub uses."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (OSError, TimeoutError)) or bool(names & {"TransportError", "RequestError", "ConnectionError"})


def save_model_folder(out_dir: str, model: mobile_cv.FBNet, *, overwrite: bool = False, **config_kwargs: Any) -> str:
    """Write ``model`` (its architecture and current weights) as a model folder; returns ``out_dir``.

    The three files are written into a staging folder beside ``out_dir`` and moved into place
    together, so a failure leaves nothing half-written; an existing model folder is replaced only
    with ``overwrite``. ``config_kwargs``: see :func:`folder_config` (``input_size``, ``mean`` and
    ``std`` are required).
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ModelFolderError(f"{out_dir} is a file, not a folder: pick another path")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not (overwrite and is_model_folder(out_dir)):
        what = "a model folder" if is_model_folder(out_dir) else "a folder with other files"
        hint = "pass --overwrite (overwrite=True) to replace it" if is_model_folder(out_dir) else "pick an empty folder"
        raise ModelFolderError(f"{out_dir} is already {what}: {hint}")
    config = folder_config(model, **config_kwargs)
    weights = safetensors_bytes(model.state_dict())
    staging = staging_folder(out_dir)  # written whole, then moved into place by one rename
    try:
        with open(os.path.join(staging, WEIGHTS_FILE), "wb") as f:
            f.write(weights)
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=1)
            f.write("\n")
        with open(os.path.join(staging, CARD_FILE), "w") as f:
            f.write(model_card(config))
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)  # empty, or a model folder the caller asked to replace
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def read_folder_config(folder: str) -> Dict[str, Any]:
    """``config.json`` of a model folder, checked for what :func:`load_model_folder` needs."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ModelFolderError(
            f"{folder} is not a model folder: it has no {CONFIG_FILE} (write one with "
            f"python tools/model_zoo.py save DIR ...)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelFolderError(
            f"{path}: format is {got!r}, expected {FORMAT!r} (a folder written by tools/model_zoo.py save)"
        )
    for key, kind in (("arch_def", dict), ("num_classes", int), ("in_chans", int), ("pretrained_cfg", dict)):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise ModelFolderError(f"{path}: {key!r} must be a {kind.__name__}, got {config.get(key)!r}")
    size = config["pretrained_cfg"].get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ModelFolderError(f"{path}: pretrained_cfg.input_size must be [channels, height, width], got {size!r}")
    return config


def load_model_folder(
    folder: str, pretrained: bool = True, num_classes: Optional[int] = None, **overrides: Any
) -> mobile_cv.FBNet:
    """The model of a folder: the architecture from ``config.json``, the weights from ``model.safetensors``.

    With ``num_classes`` other than the folder's, the classifier is left at its initialisation;
    every other tensor must fit (keys, shapes, float dtypes, finite values).
    """
    config = read_folder_config(folder)
    try:
        model = mobile_cv.build_model(
            config["arch_def"],
            num_classes=config["num_classes"] if num_classes is None else num_classes,
            in_chans=config["in_chans"],
            **overrides,
        )
    except ArchDefError as e:
        raise ModelFolderError(f"{os.path.join(folder, CONFIG_FILE)}: arch_def: {e}") from None
    model.arch_name = config.get("name", config.get("architecture"))
    model.pretrained_cfg = dict(config["pretrained_cfg"])
    if not pretrained:
        return model
    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise ModelFolderError(f"{folder} has no {WEIGHTS_FILE} (pretrained=False builds the architecture alone)")
    state_dict = fit_state_dict(model, read_state_dict(weights), weights)
    check_values(model, state_dict, source=weights)
    load_state_dict(model, state_dict, strict=True, source=weights)
    return model


def hub_folder(
    spec: str, cache_dir: Optional[str] = None, force_download: bool = False, endpoint: Optional[str] = None
) -> str:
    """Download ``hf-hub:org/name[@revision]``'s config.json and model.safetensors; the local folder.

    Through ``huggingface_hub.hf_hub_download`` (its cache; ``HF_HUB_OFFLINE=1`` uses only the
    cache). ``endpoint`` defaults to ``$HF_ENDPOINT`` as set now (huggingface_hub reads it once, at
    import).
    """
    import huggingface_hub  # deferred: only the hub form needs it (installed with timm)

    repo = spec[len(HUB_PREFIX) :]
    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelFolderError(f"{spec!r}: expected hf-hub:<org>/<name>[@<revision>]")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    paths = []
    for filename in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            paths.append(
                huggingface_hub.hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision or None,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    endpoint=endpoint,
                )
            )
        except Exception as e:  # huggingface_hub raises its own HTTP, offline and not-found errors
            where = endpoint or huggingface_hub.constants.ENDPOINT
            raise ModelFolderError(
                f"{spec}: cannot fetch {filename} from {where} ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
            ) from None
    folder = os.path.dirname(paths[0])
    if os.path.dirname(paths[1]) != folder:  # both files of one snapshot sit in one folder of the cache
        raise ModelFolderError(f"{spec}: config.json and model.safetensors come from different revisions")
    return folder
