"""python -m training: list the zoo, train one model or all, write the README table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from training import readme, zoo


def _train(args: argparse.Namespace) -> int:
    names = [e.name for e in zoo.ZOO] if args.all else args.names
    unknown = [n for n in names if n not in zoo.entries()]
    if unknown or not names:
        print(f"unknown model(s) {unknown}; expected --all or some of {list(zoo.entries())}", file=sys.stderr)
        return 2
    names = zoo.build_order(names)
    start = time.perf_counter()
    for name in tqdm(names, desc="zoo", disable=None):
        manifest, _ = zoo.build(name, Path(args.output), quick=args.quick, seed=args.seed)
        print(f"{name}: {readme.headline(manifest)} ({manifest['training']['wall_time_s']} s)", flush=True)
    print(f"trained {len(names)} model(s) in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the zoo")
    train = sub.add_parser("train", help="train, export, verify and write models/<name>/1/")
    train.add_argument("names", nargs="*", help="model names (see `list`)")
    train.add_argument("--all", action="store_true", help="train the whole zoo, in dependency order")
    train.add_argument("--output", default="models", help="model repository root (default: models)")
    train.add_argument("--quick", action="store_true", help="few epochs, same code path (tests)")
    train.add_argument("--seed", type=int, default=0)
    rd = sub.add_parser(
        "readme", help="print (or --write into README.md) the zoo table from model.json files"
    )
    rd.add_argument("--models", default="models")
    rd.add_argument("--write", metavar="README", help="replace the zoo:start/zoo:end section of this file")
    args = parser.parse_args(argv)
    if args.command == "list":
        for e in zoo.ZOO:
            needs = f" (needs {', '.join(e.needs)})" if e.needs else ""
            print(f"{e.name:28} {e.task:26} {e.recap_topic}{needs}")
        return 0
    if args.command == "train":
        return _train(args)
    table = readme.zoo_section(Path(args.models))
    if args.write:
        readme.write_section(Path(args.write), table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
