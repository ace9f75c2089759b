#!/usr/bin/env python
"""List the model zoo, show one entry, save a model as a Hugging Face Hub-layout folder, push one.

python tools/model_zoo.py list                 # name, resolution, MFLOPs, Mparams, top-1, weights
python tools/model_zoo.py list "fbnetv2*" --markdown
python tools/model_zoo.py info FBNetV2_F1      # every field, and FLOPs/params counted now
python tools/model_zoo.py save DIR mnist_dmasking_1p5m                 # a zoo entry with its weights
python tools/model_zoo.py save DIR --arch RUN/arch_def.json --weights RUN/model_final.safetensors
python tools/model_zoo.py push DIR org/name [--private] [--revision BRANCH]   # to the Hugging Face Hub

``save`` writes DIR/model.safetensors, DIR/config.json (arch def, classes, channels, input size,
mean/std, FLOPs/params, measured accuracy) and DIR/README.md (the model card);
``model_zoo.create_model("DIR")`` (or ``"hf-hub:org/name"`` once DIR is uploaded) loads it back.
With --arch/--weights, the training run's config.yaml and eval.json beside the weights supply the
input size, normalisation and accuracy unless --config-file / --eval-json name others. ``push``
uploads DIR with huggingface_hub (the token from ``HF_TOKEN`` or ``huggingface-cli login``; the repo
is created, private with --private, when it does not exist); ``--endpoint`` names another Hub.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mobile_cv  # noqa: E402
import model_zoo  # noqa: E402
from mobile_cv import engine  # noqa: E402
from mobile_cv.arch.arch_registry import is_arch_file, resolve_arch_def  # noqa: E402
from mobile_cv.data import NORMALIZATION  # noqa: E402
from mobile_cv.errors import UserError  # noqa: E402
from model_zoo.folder import push_model_folder, save_model_folder  # noqa: E402
from model_zoo.zoo import computed_flops_params  # noqa: E402


def _check_file(path: str, flag: str) -> None:
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder; give the file itself")
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path} does not exist")


def _beside(weights: str, given: Optional[str], name: str, flag: str) -> Optional[str]:
    if given:
        _check_file(given, flag)
        return given
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), name)
    return path if os.path.isfile(path) else None


def _trained_model(args) -> Tuple[Any, Dict[str, Any]]:
    """The model of --arch with --weights loaded, and the folder settings of its training run."""
    if not args.weights:
        raise UserError("save with --arch needs --weights (the trained model_final.safetensors or .pth)")
    named = ((args.weights, "--weights"), (args.config_file, "--config-file"), (args.eval_json, "--eval-json"))
    for path, flag in named:
        if path:  # every named file checked before any is read
            _check_file(path, flag)
    state_dict = model_zoo.read_state_dict(args.weights)
    arch, _ = resolve_arch_def(args.arch)
    head, first = state_dict.get("head.conv.weight"), next((v for v in state_dict.values() if v.ndim == 4), None)
    num_classes = int(head.shape[0]) if head is not None else 0
    in_chans = int(first.shape[1]) if first is not None else 3
    model = mobile_cv.build_model(arch, num_classes=num_classes, in_chans=in_chans)
    model.arch_name = os.path.splitext(os.path.basename(args.arch))[0] if is_arch_file(args.arch) else args.arch
    model_zoo.load_pretrained(model, args.weights)
    cfg_file = _beside(args.weights, args.config_file, "config.yaml", "--config-file")
    input_size, data = model.arch_def.get("input_size") or 224, "imagefolder"
    if cfg_file:
        cfg = engine.setup_cfg(cfg_file, ("MODEL.ARCH", args.arch))
        input_size, data = cfg.DATA.INPUT_SIZE, cfg.DATA.NAME
    elif in_chans != 3:
        raise UserError(
            f"no config.yaml beside {args.weights}: pass --config-file (the training run's) so the folder records "
            f"the input size and the normalisation of this {in_chans}-channel model"
        )
    mean, std = NORMALIZATION[data]
    settings: Dict[str, Any] = {"input_size": input_size, "mean": mean, "std": std}
    settings["crop_pct"] = 0.875 if data == "imagefolder" else 1.0  # timm's eval crop; the others resize whole
    settings["source"] = f"trained weights {args.weights}" + (f" (config {cfg_file}, data {data})" if cfg_file else "")
    eval_file = _beside(args.weights, args.eval_json, "eval.json", "--eval-json")
    if eval_file:
        with open(eval_file) as f:
            summary = json.load(f)
        split = "test" if "test" in summary else "val"
        settings["metrics"] = {f"{split}_top1": summary[split]["acc1"], f"{split}_top5": summary[split]["acc5"]}
        settings["metrics"][f"{split}_images"] = summary[split].get("images")
    return model, settings


def _zoo_model(name: str) -> Tuple[Any, Dict[str, Any]]:
    entry = model_zoo.get_entry(name)
    model = model_zoo.create_model(entry.name, pretrained=True)
    settings: Dict[str, Any] = {
        "input_size": entry.input_size,
        "mean": entry.mean,
        "std": entry.std,
        "crop_pct": entry.crop_pct,
        "interpolation": entry.interpolation,
        "name": entry.name,
        "license": entry.license or None,
        "source": f"model zoo entry {entry.name}",
    }
    if entry.top1 is not None:
        settings["metrics"] = {"top1": entry.top1, "top5": entry.top5, "eval_set": entry.eval_set}
    return model, settings


def save_folder(args) -> str:
    if bool(args.name) == bool(args.arch):
        raise UserError("save takes a zoo entry NAME or --arch ARCH --weights W (one of them)")
    model, settings = _zoo_model(args.name) if args.name else _trained_model(args)
    return save_model_folder(args.dir, model.eval(), overwrite=args.overwrite, **settings)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the zoo table")
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, case-insensitive")
    ls.add_argument("--markdown", action="store_true", help="print a Markdown table")
    info = sub.add_parser("info", help="one entry in full")
    info.add_argument("name")
    save = sub.add_parser("save", help="a model as a Hub-layout folder (model.safetensors, config.json, README.md)")
    save.add_argument("dir", help="the folder to write (must be new or empty; see --overwrite)")
    save.add_argument("name", nargs="?", help="a zoo entry (its weights are downloaded or bundled)")
    save.add_argument("--arch", help="an arch-def .json/.py file or registered arch (with --weights)")
    save.add_argument("--weights", help="trained weights (.safetensors or .pth state dict) for --arch")
    save.add_argument("--config-file", help="the training config (default: config.yaml beside --weights)")
    save.add_argument("--eval-json", help="measured accuracy (default: eval.json beside --weights, if there)")
    save.add_argument("--overwrite", action="store_true", help="replace DIR if it already is a model folder")
    push = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    push.add_argument("dir", help="a folder written by save")
    push.add_argument("repo", help="the Hub repo, <org>/<name> (created if it does not exist)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="the branch to commit to (default: main)")
    push.add_argument("--endpoint", help="another Hub than huggingface.co (default: $HF_ENDPOINT or the Hub)")
    args = p.parse_args(argv)

    def body() -> None:
        if args.command == "save":
            out = save_folder(args)
            print(f"wrote {out}: {', '.join(sorted(os.listdir(out)))}")
            return
        if args.command == "push":
            url = push_model_folder(
                args.dir, args.repo, private=args.private, revision=args.revision, endpoint=args.endpoint
            )
            print(f"pushed {args.dir} to {args.repo}: {url}")
            return
        if args.command == "list":
            names = model_zoo.list_models(args.pattern)
            if not names:
                raise UserError(
                    f"no zoo entry matches {args.pattern!r} (python tools/model_zoo.py list shows them all)"
                )
            print(model_zoo.format_table(names, markdown=args.markdown))
            return
        entry = model_zoo.get_entry(args.name)
        for field in dataclasses.fields(entry):
            print(f"{field.name:<14} {getattr(entry, field.name)}")
        print(f"{'crop_pct':<14} {entry.crop_pct:.4f}")
        print(f"{'timm name':<14} {entry.timm_name}")
        flops, params = computed_flops_params(entry)
        print(f"{'counted now':<14} {flops:.3f} MFLOPs, {params:.4f} Mparams at {entry.input_size}x{entry.input_size}")

    return engine.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
