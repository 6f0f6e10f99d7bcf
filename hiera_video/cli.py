"""``hiera-video``: the command-line tool. It only parses arguments and dispatches to the engines.

    hiera-video demo                                   # generated motion videos, tiny Hiera, CPU, minutes
    hiera-video train CONFIG [key=value ...] [--resume [PATH]]
    hiera-video pretrain CONFIG [key=value ...] [--resume [PATH]]
    hiera-video eval CONFIG_OR_RUN [key=value ...] [--checkpoint PATH]
    hiera-video predict FILE [FILE ...] --model RUN_DIR [--topk 5]
    hiera-video extract [CONFIG] INPUT OUTPUT_DIR [key=value ...] [options]   # clip features
    hiera-video convert SRC DST_DIR [--model NAME] [--to hiera_video|hf|timm]
    hiera-video configs [NAME]                         # list shipped configs / print one resolved

CONFIG is a shipped config name (``hiera-video configs``) or a YAML path; every field can be overridden
with ``section.key=value``. Under ``torchrun`` train / pretrain / eval run data-parallel:
``torchrun --nproc_per_node 8 -m hiera_video train k400_finetune_hiera_base_16x224 data.root=/data/k400``.

Adding a subcommand is one function decorated with :func:`subcommand` that declares its arguments and
returns the handler.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hiera_video.config import DECODERS, ConfigError

__all__ = ["build_parser", "main", "subcommand"]

Handler = Callable[[argparse.Namespace], int]
_SUBCOMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], Handler]]] = []


def subcommand(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], Handler]], Callable]:
    """Register ``configure(parser) -> handler`` as subcommand ``name`` (in definition order)."""

    def register(configure: Callable[[argparse.ArgumentParser], Handler]) -> Callable:
        _SUBCOMMANDS.append((name, help, configure))
        return configure

    return register


def _config_args(p: argparse.ArgumentParser, config_help: str) -> None:
    p.add_argument("config", nargs="?", help=config_help)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _split_config(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """argparse puts a first ``key=value`` into ``config`` when no config is given: move it back."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    return config, overrides


def _load(args: argparse.Namespace, required: bool = True):
    from hiera_video.config import load_config

    config, overrides = _split_config(args)
    if config is None and required:
        from hiera_video.config import list_configs

        raise ConfigError(f"give a config name or YAML path; shipped configs: {', '.join(list_configs())}")
    return load_config(config, overrides)


def _print_config(cfg) -> int:
    import yaml

    from hiera_video.config import config_to_dict

    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None), end="")
    return 0


def _resume_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="PATH",
        help="continue a run: without PATH, from the run folder's latest checkpoint; or a run folder / .pt",
    )
    _overwrite_arg(p)


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's outputs in the run folder and start again (without it such a "
                        "folder is refused, unless --resume)")


@subcommand("train", "supervised training / fine-tuning (video or image)")
def _train(p: argparse.ArgumentParser) -> Handler:
    _config_args(p, "config name or YAML path (hiera-video configs lists them)")
    _resume_arg(p)

    def run(args: argparse.Namespace) -> int:
        cfg = _load(args)
        if args.print_config:
            return _print_config(cfg)
        from hiera_video.engine.train import train

        out = train(cfg, resume=args.resume, overwrite=args.overwrite)
        print(f"top-1 {100 * out['metrics']['top1']:.2f}%  top-5 {100 * out['metrics']['top5']:.2f}%  "
              f"({out['metrics']['num_videos']} items) -> {out['run_dir']}")
        return 0

    return run


@subcommand("pretrain", "MAE pretraining (video or image)")
def _pretrain(p: argparse.ArgumentParser) -> Handler:
    _config_args(p, "config name or YAML path, e.g. k400_mae_pretrain_hiera_base_16x224")
    _resume_arg(p)

    def run(args: argparse.Namespace) -> int:
        cfg = _load(args)
        if args.print_config:
            return _print_config(cfg)
        from hiera_video.engine.pretrain import pretrain

        out = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
        print(f"pretraining done -> {out['model_dir']}")
        return 0

    return run


@subcommand("eval", "multi-view evaluation of a trained model")
def _eval(p: argparse.ArgumentParser) -> Handler:
    _config_args(p, "a run folder (its config.yaml is used), a config name or a YAML path")
    p.add_argument("--checkpoint", help="run folder, .pt checkpoint or save_pretrained folder "
                   "(default: the run folder given as config)")

    def run(args: argparse.Namespace) -> int:
        from hiera_video.engine.evaluate import evaluate_run

        config, overrides = _split_config(args)
        if config is None:
            raise ConfigError("give a run folder, or a config with --checkpoint")
        result = evaluate_run(config, overrides, checkpoint=args.checkpoint, print_config=args.print_config)
        if result is None:
            return 0
        m = result["metrics"]
        print(f"top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  on {m['num_videos']} items "
              f"({m['num_failed']} unreadable, excluded) -> {result['files']['metrics']}")
        return 0

    return run


@subcommand("predict", "top-k labels for video or image files")
def _predict(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("files", nargs="+", help="video or image files")
    p.add_argument("--model", required=True, help="run folder, .pt checkpoint or save_pretrained folder")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--num-clips", type=int, default=1, help="temporal clips averaged per video")
    p.add_argument("--num-crops", type=int, default=1, help="spatial crops averaged per clip (1 or 3)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    def run(args: argparse.Namespace) -> int:
        import json

        from hiera_video.engine.predict import predict_files

        results = predict_files(args.files, args.model, topk=args.topk, num_clips=args.num_clips,
                                num_crops=args.num_crops, device=args.device)
        failed = 0
        for r in results:
            failed += "error" in r
            if args.json:
                print(json.dumps(r))
            elif "error" in r:
                print(f"{r['path']}: ERROR {r['error']}")
            else:
                top = "  ".join(f"{label} {100 * prob:.1f}%" for label, prob in r["topk"])
                print(f"{r['path']}: {top}")
        return 1 if failed else 0

    return run


@subcommand("extract", "clip features for a folder / list of videos or images")
def _extract(p: argparse.ArgumentParser) -> Handler:
    # Settings are the config's (extract.*, model.*, data.*, ...): a YAML file, key=value overrides, and
    # these flags as aliases of its keys (hiera_video.engine.extract.ALIASES). Unset flags stay unset.
    p.add_argument("args", nargs="*", metavar="[CONFIG] INPUT OUTPUT_DIR [key=value]",
                   help="optional config (YAML / shipped name), the input (directory of videos/images, list "
                        "file, Kinetics-style CSV, or tar shards: .tar files, a glob, a folder of *.tar or an "
                        "fsspec URL) and output directory (or extract.input= / "
                        "extract.output_dir=), then config overrides such as extract.stride=16")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    flag = argparse.SUPPRESS
    p.add_argument("--root", default=flag, help="base folder of relative paths in a list / CSV file")
    p.add_argument("--id-root", default=flag, help="video ids are paths relative to this folder (default: "
                   "--root, else the input directory / the list file's folder)")
    p.add_argument("--extensions", default=flag, help="comma-separated extensions for directory inputs")
    g = p.add_argument_group("model (model.*)")
    g.add_argument("--model", default=flag, help="registry name, run folder, .pt checkpoint or save_pretrained "
                   "folder (model.name)")
    g.add_argument("--pretrained", default=flag, help="checkpoint file, directory or hub repo id")
    g.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                   help="model config field, e.g. num_classes=400 (model.overrides.KEY; repeatable)")
    g = p.add_argument_group("clips (data.*, extract.*, eval.num_clips)")
    g.add_argument("--clip-mode", choices=["sliding", "uniform"], default=flag)
    g.add_argument("--num-frames", type=int, default=flag, help="frames per clip (default: the model's)")
    g.add_argument("--sampling-rate", type=int, default=flag, help="frames between samples")
    g.add_argument("--target-fps", type=float, default=flag, help="count the sampling rate at this frame rate")
    g.add_argument("--stride", type=float, default=flag, help="sliding: source frames between clip starts")
    g.add_argument("--stride-seconds", type=float, default=flag, help="sliding: seconds between clip starts")
    g.add_argument("--tail", choices=["drop", "pad", "align"], default=flag)
    g.add_argument("--num-clips", type=int, default=flag, help="uniform: clips per video (eval.num_clips)")
    g = p.add_argument_group("space")
    g.add_argument("--spatial", choices=["center_crop", "full"], default=flag)
    g.add_argument("--crop-size", type=int, default=flag)
    g.add_argument("--short-side", type=int, default=flag, help="data.test_short_side")
    g.add_argument("--decode-resize", action="store_const", const=True, default=flag,
                   help="resize in the decoder (faster, not bitwise)")
    g = p.add_argument_group("outputs")
    g.add_argument("--outputs", default=flag, help="comma-separated: embedding, logits, probs, stageK")
    g.add_argument("--pool-space", action="store_const", const=True, default=flag,
                   help="average stage maps over H and W")
    g.add_argument("--dtype", choices=["fp32", "fp16"], default=flag)
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default=flag,
                   help="train.precision (GPU; on a CPU only where native, see README Precision)")
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, default=flag, help="clips per forward pass (extract.batch_size)")
    g.add_argument("--num-workers", type=int, default=flag)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=flag)
    g.add_argument("--backend", choices=list(DECODERS), default=flag, help="data.decoder")
    g.add_argument("--window-frames", type=int, default=flag)
    g.add_argument("--shard-size-mb", type=float, default=flag)
    g.add_argument("--shard-max-videos", type=int, default=flag)
    g.add_argument("--flush-seconds", type=float, default=flag)
    g.add_argument("--manifest-format", choices=["jsonl", "csv"], default=flag)
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=flag)

    def run(args: argparse.Namespace) -> int:
        from hiera_video.engine.extract import ALIASES, resolve_extract_config, run_extract

        config, paths, overrides = _extract_positionals(args.args)
        settings = {k: v for k, v in vars(args).items() if k in ALIASES}
        if len(paths) > 2:  # several tar shards, then the output folder
            paths = [paths[:-1], paths[-1]]
        settings.update(zip(("input", "output_dir"), paths))
        overrides = [f"model.overrides.{item}" for item in args.model_override] + overrides
        cfg, loaded = resolve_extract_config(config, overrides, settings)
        if args.print_config:
            return _print_config(cfg)
        summary = run_extract(cfg, loaded)
        return 0 if summary.get("failed", 0) == 0 else 2

    return run


def _extract_positionals(items: list[str]) -> tuple[str | None, list[str], list[str]]:
    """``[CONFIG] INPUT OUTPUT_DIR [key=value ...]`` -> (config, [input, output_dir], overrides).

    INPUT may be several ``.tar`` shards (the last path is then the output folder).

    A ``key=value`` item that is not an existing path is an override; a YAML file (or, first, a shipped
    config name that is not an existing path) is the config; the rest are the input and the output folder.
    """
    from hiera_video.config import list_configs

    config, paths, overrides = None, [], []
    for i, item in enumerate(items):
        exists = Path(item).exists()
        if "=" in item and not exists:
            overrides.append(item)
        elif config is None and not paths and (
                (exists and Path(item).is_file() and item.endswith((".yaml", ".yml")))
                or (not exists and i == 0 and item.removesuffix(".yaml") in list_configs())):
            config = item
        else:
            paths.append(item)
    if len(paths) > 2 and not all(p.lower().endswith(".tar") for p in paths[:-1]):
        raise ConfigError(f"extract takes an input (or several .tar shards) and an output directory, got "
                          f"{len(paths)} paths: {paths}")
    return config, paths, overrides


@subcommand("convert", "convert a checkpoint to this library's format, HF transformers' or timm's")
def _convert(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("src", help="original .pth, .safetensors, HF / timm / our folder, run folder, training "
                   "checkpoint or hub repo id")
    p.add_argument("dst", help="output folder")
    p.add_argument("--model", help="registry name (needed when the source carries no config)")
    p.add_argument("--to", choices=["hiera_video", "hf", "timm"], default="hiera_video")

    def run(args: argparse.Namespace) -> int:
        from hiera_video.models.convert import convert_checkpoint

        out = convert_checkpoint(args.src, args.dst, model_name=args.model, to=args.to)
        print(f"wrote {out}")
        return 0

    return run


@subcommand("demo", "the main job on embedded defaults: generated motion videos, tiny video Hiera, CPU")
def _demo(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override the demo config")
    p.add_argument("--output-dir", default=None, help="where the run folder goes (default: runs/)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _overwrite_arg(p)

    def run(args: argparse.Namespace) -> int:
        from hiera_video.config import apply_overrides, demo_config

        overrides = list(args.overrides)
        if args.output_dir:
            overrides.append(f"run.output_dir={args.output_dir}")
        cfg = apply_overrides(demo_config(), overrides)
        if args.print_config:
            return _print_config(cfg)
        from hiera_video.engine.demo import run_demo

        run_demo(cfg, overwrite=args.overwrite)
        return 0

    return run


@subcommand("configs", "list the shipped configs, or print one fully resolved")
def _configs(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("name", nargs="?", help="config name or path to print (with overrides applied)")
    p.add_argument("overrides", nargs="*", metavar="key=value")

    def run(args: argparse.Namespace) -> int:
        from hiera_video.config import find_config, list_configs, load_config

        if args.name is None:
            for name in list_configs():
                print(f"{name:45s} {find_config(name)}")
            return 0
        return _print_config(load_config(args.name, args.overrides))

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiera-video",
        description="Spatio-temporal Hiera: train, pretrain, evaluate, predict, extract, convert.",
        epilog="Run 'hiera-video demo' for a complete example on generated data (CPU, a few minutes).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, configure in _SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=configure(p))
    return parser


def _is_override(token: str) -> bool:
    return "=" in token and not token.startswith("-") and not Path(token).exists()


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parse_args``, with ``key=value`` overrides accepted anywhere on the line.

    argparse stops filling the ``overrides`` positional at the first option, so ``train cfg --print-config
    a.b=c`` would be "unrecognized arguments"; and ``--resume a.b=c`` would take the override as the path.
    """
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        resume = getattr(args, "resume", None)
        if resume is not None and resume != "auto" and _is_override(resume):
            args.resume = "auto"  # `--resume` without a path, followed by an override
            args.overrides = [*args.overrides, resume]
        moved = [t for t in extra if _is_override(t)]
        args.overrides = [*args.overrides, *moved]
        extra = [t for t in extra if t not in moved]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hiera-video`` console script (and ``python -m hiera_video``)."""
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        # Configuration mistakes are the user's to fix: one clear line, no traceback.
        kind = getattr(err, "kind", "config error")
        print(f"hiera-video {args.command}: {kind}: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        if args.verbose:
            raise
        print(f"hiera-video {args.command}: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # the loop's TrainingDiverged: the message says where and what to do
        if args.verbose:
            raise
        print(f"hiera-video {args.command}: training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        checkpoint = getattr(err, "checkpoint", None)
        where = f"; checkpoint saved to {checkpoint}, continue with --resume" if checkpoint else ""
        print(f"hiera-video {args.command}: interrupted{where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
