"""``python -m dprl.datasets make <task> [--steps N] [--seed S] [--policy FILE]``, ``... list``
and ``... verify <dataset id> [--replay N]``.

``make`` writes dprl's stand-in dataset of a task preset (``dprl/envs/tasks.py``) into
``$MINARI_DATASETS_PATH`` (Minari's default: ``~/.minari/datasets``), atomically, under the
``dprl/`` namespace. ``list`` shows every task, which of its datasets are stored here, their
size and which one a run would use. ``verify`` checks a stored dataset (``dprl.datasets.verify``:
the runner's loading checks, then spaces, reference scores and replayed episodes), one line per
check, and exits 1 at the first problem.

The OGBench manipulation tasks (cube-single, cube-double, scene, puzzle-3x3) are collected
resumably: episodes are saved in chunks under ``<root>/dprl/<task>/.partial-play-*``; run the
same command again after an interruption and it goes on from the last saved chunk.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def make(task: str, *, steps: int | None = None, seed: int = 0, policy: str | None = None,
         sac_run: str | None = None, noise: float | None = None, episodes: int | None = None,
         overwrite: bool = False, progress: bool = True, chunk_episodes: int | None = None,
         episode_length: int | None = None, workers: int | None = None,
         fmt: str = "minari", out: str | None = None) -> dict:
    """Make the dataset of ``task``; returns a summary dict (ids, sizes, timings, scores).
    OGBench envs: ``workers`` processes collect (default: the cores); ``fmt='ogbench'`` also
    writes the play data as an OGBench npz file (``out``, default beside the stand-in). Over a
    stored dataset (without ``overwrite``): the same arguments leave it unchanged (``unchanged``
    in the summary), others are refused; a killed make's leftovers are removed first."""
    from dprl.envs.tasks import get_task

    preset = get_task(task)  # a clear error for an unknown task
    if not preset["has_recipe"]:
        from dprl.data.formats import download_command
        from dprl.data.registry import official_sources
        raise ValueError(f"Task {task!r} has no stand-in dprl can make; get its released data: "
                         + " or ".join(f"`{download_command(s)}`"
                                       for s in official_sources(preset)))
    if preset["dataset_task"]:  # a preset that shares another's dataset (OGBench task ids)
        task, preset = preset["dataset_task"], get_task(preset["dataset_task"])
    if fmt not in ("minari", "ogbench"):
        raise ValueError(f"--format must be minari or ogbench, got {fmt!r}")
    t0 = time.perf_counter()
    from dprl.data.registry import making
    with making(preset["dataset_id"]):
        if not overwrite and fmt == "minari":
            existing = _existing(preset["dataset_id"], seed=seed, steps=steps,
                                 episodes=episodes, noise=noise, policy=policy, sac_run=sac_run)
            if existing is not None:
                return {**existing, "wall_s": time.perf_counter() - t0}
        return _make(task, preset, t0, steps=steps, seed=seed, policy=policy, sac_run=sac_run,
                     noise=noise, episodes=episodes, overwrite=overwrite, progress=progress,
                     chunk_episodes=chunk_episodes, episode_length=episode_length,
                     workers=workers, fmt=fmt, out=out)


def _existing(dataset_id: str, **asked) -> dict | None:
    """``{'dataset_id', 'unchanged': True}`` when ``dataset_id`` is stored already and was made
    with the arguments this command gives (those its provenance records); ``FileExistsError`` in
    one line when it was made with others; None when it is not stored."""
    from dprl.data.io import dataset_dir, dataset_exists
    from dprl.data.registry import read_metadata

    if not dataset_exists(dataset_id):
        return None
    meta = read_metadata(dataset_id)
    made = meta.get("dprl") or {}
    recorded = {"seed": made.get("seed"), "episodes": made.get("num_episodes"),
                "noise": made.get("noise")}
    differ = [f"{k} {v} (it was made with {k} {recorded[k]})" for k, v in asked.items()
              if v is not None and recorded.get(k) is not None and recorded[k] != v]
    if asked.get("steps") is not None and asked["steps"] != meta.get("total_steps"):
        differ.append(f"--steps {asked['steps']} (it holds {meta.get('total_steps')} steps)")
    differ += [f"--{k.replace('_', '-')} {v} (its provenance cannot tell whether it was made "
               f"with that)" for k, v in asked.items() if v is not None and k in
               ("policy", "sac_run")]
    if differ:
        raise FileExistsError(
            f"dataset {dataset_id} already exists at {dataset_dir(dataset_id)} and this command "
            f"asks for {'; '.join(differ)}: pass --overwrite to make it again with this "
            f"command's arguments, or delete that directory")
    return {"dataset_id": dataset_id, "unchanged": True}


def _make(task, preset, t0, *, steps, seed, policy, sac_run, noise, episodes, overwrite,
          progress, chunk_episodes, episode_length, workers, fmt, out) -> dict:
    import os

    from dprl.envs.tasks import LOCOMOTION_ENVS, LOCOMOTION_RECIPES, get_task
    if fmt == "ogbench":
        from dprl.data.io import dataset_exists
        from dprl.datasets.ogbench_recipes import MANIPULATION_TASKS, export_play_ogbench
        if task not in MANIPULATION_TASKS:
            raise ValueError(f"--format ogbench is for the OGBench manipulation envs "
                             f"({', '.join(MANIPULATION_TASKS)}), not {task!r}")
        if dataset_exists(f"dprl/{task}/play-v0") and not overwrite:
            path = export_play_ogbench(task, out)   # the stored stand-in, in OGBench's layout
            return {"play_dataset_id": f"dprl/{task}/play-v0", "ogbench_file": str(path),
                    "ogbench_dataset_flag": f"--dataset=ogbench:{path}",
                    "wall_s": time.perf_counter() - t0}
    robot, _, recipe = task.partition("-")
    if robot in LOCOMOTION_ENVS and recipe in LOCOMOTION_RECIPES:
        from dprl.datasets.locomotion import make_locomotion_dataset
        out = make_locomotion_dataset(task, steps or 1_000_000, seed=seed, policy_path=policy,
                                      sac_run=sac_run, noise=noise, overwrite=overwrite,
                                      progress=progress)
    elif preset["generator"]:
        from dprl.data.registry import run_generator
        kwargs = {} if episodes is None else {"num_episodes": episodes}
        out = {"dataset_id": run_generator(task, preset, seed=seed, overwrite=overwrite, **kwargs)}
    else:
        from dprl.datasets.ogbench_recipes import MANIPULATION_TASKS, make_manipulation_dataset
        if task not in MANIPULATION_TASKS:
            # Presets added elsewhere (e.g. toy tasks) name their own generator.
            raise ValueError(f"Task {task!r} is not made by this CLI; run: "
                             f"{get_task(task)['make_command']}")
        kwargs = {k: v for k, v in (("chunk_episodes", chunk_episodes),
                                    ("episode_length", episode_length)) if v is not None}
        target = out
        out = make_manipulation_dataset(task, steps or 1_000_000, seed=seed, overwrite=overwrite,
                                        progress=progress, num_episodes=episodes,
                                        workers=workers or os.cpu_count() or 1, **kwargs)
        if fmt == "ogbench":
            from dprl.datasets.ogbench_recipes import export_play_ogbench
            out["ogbench_file"] = str(export_play_ogbench(task, target))
            out["ogbench_dataset_flag"] = f"--dataset=ogbench:{out['ogbench_file']}"
    out["wall_s"] = time.perf_counter() - t0
    return out


def _dir_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_tasks() -> list[dict]:
    """One row per task: its datasets, whether each is stored here, size, and what a run uses."""
    from dprl.envs.tasks import TASKS
    from dprl.data.io import dataset_dir
    from dprl.data.formats import download_command, source_exists
    from dprl.data.registry import DatasetError, official_sources, resolve_dataset

    rows = []
    for name, preset in sorted(TASKS.items()):
        row = {"task": name, "env_id": preset["env_id"]}
        for key in ("official_dataset_id", "dataset_id"):
            ds = preset.get(key)
            if not ds:
                continue
            path = dataset_dir(ds)
            info = {"id": ds, "present": path.is_dir()}
            if path.is_dir():
                info["size_mib"] = round(_dir_size(path) / 2**20, 1)
                try:
                    meta = json.loads((path / "data" / "metadata.json").read_text())
                    info["steps"] = meta.get("total_steps")
                except (OSError, ValueError):
                    info["steps"] = None
            row["official" if key == "official_dataset_id" else "generated"] = info
        row["sources"] = [{"source": src.ref, "present": source_exists(src),
                           "get": download_command(src)} for src in official_sources(preset)]
        try:
            ds, source = resolve_dataset(name)
            row["uses"] = f"{source}: {ds}"
        except DatasetError as e:
            msg = str(e)
            if "No dataset for task" not in msg:
                row["uses"] = "broken: " + msg.split(". ")[0]
            elif preset["has_recipe"]:
                row["uses"] = "missing: run " + preset["make_command"] + "".join(
                    f" (or get the released data: {s['get']})" for s in row["sources"])
            else:
                row["uses"] = "missing: run " + " or ".join(s["get"] for s in row["sources"])
        except Exception as e:  # noqa: BLE001  list must show every task whatever is broken
            row["uses"] = f"error: {e}"
        from dprl.datasets.ogbench_recipes import unfinished_collections
        for path, done in unfinished_collections(name):
            row.setdefault("collecting", []).append({"dir": str(path), "episodes_saved": done})
        rows.append(row)
    return rows


def _print_table(rows: list[dict]) -> None:
    from dprl.data.io import datasets_root
    print(f"datasets root: {datasets_root()}")
    print(f"{'task':26s} {'official (released data)':46s} {'dprl stand-in':50s} uses")
    for r in rows:
        def cell(info):
            if not info:
                return "-"
            if not info["present"]:
                return f"{info['id']} (absent)"
            return f"{info['id']} ({info['size_mib']} MiB, {info.get('steps')} steps)"
        official = ", ".join(f"{s['source']} ({'present' if s['present'] else 'absent'})"
                             for s in r.get("sources", [])) or "-"
        print(f"{r['task']:26s} {official:46s} {cell(r.get('generated')):50s} {r['uses']}")
        for c in r.get("collecting", []):
            print(f"{'':26s} unfinished collection: {c['episodes_saved']} episodes saved in "
                  f"{c['dir']} (run the same `make` command to go on)")


def verify(dataset_id: str, replay_episodes: int = 2) -> int:
    """Print one line per passing check, then ``FAIL`` and the problem (exit 1), or ``verified``."""
    from dprl.datasets.verify import verify_steps

    try:
        for check, found in verify_steps(dataset_id, replay_episodes):
            print(f"ok    {check}: {found}", flush=True)
    except (FileNotFoundError, ValueError, KeyError, AssertionError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"FAIL  {message}", flush=True)
        return 1
    print(f"verified {dataset_id}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dprl.datasets", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="generate a task's dataset")
    m.add_argument("task", help="a task preset, e.g. hopper-medium, cube-double, pole")
    m.add_argument("--steps", type=int, default=None, help="transitions (default 1M)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--policy", default=None,
                   help="your own expert policy .npz (default: $DPRL_EXPERTS_DIR/<robot>.npz if "
                        "set, else dprl's shipped SAC policies: python -m dprl.experts list)")
    m.add_argument("--sac-run", default=None,
                   help="a `python -m dprl.sac` output dir: medium.npz and "
                        "medium_replay.npz are used for medium / medium-replay")
    m.add_argument("--noise", type=float, default=None,
                   help="override the Gaussian action-noise std of the recipe")
    m.add_argument("--episodes", type=int, default=None,
                   help="episodes (toy tasks: pole, pole-right, chain; OGBench manipulation: "
                        "overrides --steps, default 1000 episodes of 1001 steps)")
    m.add_argument("--chunk-episodes", type=int, default=None,
                   help="OGBench manipulation: episodes per saved chunk of a resumable "
                        "collection (default 10)")
    m.add_argument("--episode-length", type=int, default=None,
                   help="OGBench manipulation: env steps per episode (OGBench's: 1001, the "
                        "default; shorter only for quick looks and tests)")
    m.add_argument("--workers", type=int, default=None,
                   help="OGBench manipulation: processes collecting episodes (default: the "
                        "cores); the data are the same for any number")
    m.add_argument("--format", dest="fmt", choices=("minari", "ogbench"), default="minari",
                   help="ogbench: also write the play data as an OGBench npz file (train on it "
                        "with --dataset=ogbench:<file>)")
    m.add_argument("--out", default=None, help="--format ogbench: the npz file to write")
    m.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    lp = sub.add_parser("list", help="show tasks and their local datasets")
    lp.add_argument("--json", action="store_true")
    vp = sub.add_parser("verify", help="check a stored dataset; exit 1 at the first problem")
    vp.add_argument("dataset_id", help="e.g. dprl/hopper/medium-v0 (python -m dprl.datasets list)")
    vp.add_argument("--replay", type=int, default=2, help="episodes to replay in their env")
    args = p.parse_args(argv)
    if args.command == "verify":
        return verify(args.dataset_id, args.replay)
    if args.command == "make":
        try:
            out = make(args.task, steps=args.steps, seed=args.seed, policy=args.policy,
                       sac_run=args.sac_run, noise=args.noise, episodes=args.episodes,
                       overwrite=args.overwrite, progress=not args.quiet,
                       chunk_episodes=args.chunk_episodes, episode_length=args.episode_length,
                       workers=args.workers, fmt=args.fmt, out=args.out)
        except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(out, indent=1, default=str))
        from dprl.data.io import dataset_dir
        written = [out[k] for k in ("dataset_id", "play_dataset_id") if out.get(k)]
        if out.get("unchanged"):
            print(f"{written[0]} already exists ({dataset_dir(written[0])}), made with the same "
                  f"arguments: unchanged (--overwrite makes it again)", file=sys.stderr)
            return 0
        print("wrote " + ", ".join(f"{d} ({dataset_dir(d)})" for d in written), file=sys.stderr)
        return 0
    rows = list_tasks()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
