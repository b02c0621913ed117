"""``python -m dprl.experts list`` | ``export --sac-run DIR --robot ROBOT``: dprl's shipped experts."""
from __future__ import annotations

import argparse
import json
import sys

from dprl.experts import MANIFEST, SHIPPED_DIR, export, manifest


def _print_table() -> None:
    rows = manifest()
    if not rows:
        print(f"no shipped policies in {SHIPPED_DIR}")
        return
    print(f"{'robot':<12} {'level':<10} {'env steps':>10} {'return (mean ± std)':>22} "
          f"{'D4RL-normalized':>16}  file")
    for robot, entry in rows.items():
        for level, info in entry["levels"].items():
            for item in info if isinstance(info, list) else [info]:
                if item["file"] is None or "eval_return_mean" not in item:
                    continue
                ret = f"{item['eval_return_mean']:.0f} ± {item['eval_return_std']:.0f}"
                print(f"{robot:<12} {level:<10} {item['env_steps']:>10} {ret:>22} "
                      f"{item['normalized_score']:>16.1f}  {item['file']}")
    print(f"returns: {next(iter(rows.values()))['eval_episodes']} deterministic episodes each; "
          f"provenance in {MANIFEST}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dprl.experts", description=__doc__)
    sub = p.add_subparsers(dest="subcommand", required=True)
    sub.add_parser("list", help="the shipped policies, their env steps and returns")
    e = sub.add_parser("export", help="pick and ship the expert/medium/replay snapshots of a "
                                      "`python -m dprl.sac` run")
    e.add_argument("--sac-run", required=True, help="the SAC run's --out directory")
    e.add_argument("--robot", required=True, choices=["hopper", "walker2d", "halfcheetah", "ant"])
    e.add_argument("--sac-command", default=None,
                   help="the SAC command line to record as provenance (default: rebuilt from the "
                        "run's env id, seed and --out)")
    args = p.parse_args(argv)
    if args.subcommand == "list":
        _print_table()
        return 0
    try:
        entry = export(args.sac_run, args.robot, command=args.sac_command)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(entry, indent=1))
    print(f"wrote {', '.join(sorted({i['file'] for i in _files(entry)}))} and {MANIFEST}",
          file=sys.stderr)
    return 0


def _files(entry: dict) -> list[dict]:
    out = []
    for info in entry["levels"].values():
        out += [i for i in (info if isinstance(info, list) else [info]) if i["file"]]
    return out


if __name__ == "__main__":
    sys.exit(main())
