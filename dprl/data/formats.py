"""The benchmarks' released files, read as they are, and the ``--dataset=`` strings that name them.

A *source* is where a task's offline data come from:

  ``minari:<id>``            a Minari dataset stored under ``$MINARI_DATASETS_PATH`` (official ports
                             such as ``mujoco/hopper/medium-v0``, ``D4RL/antmaze/umaze-v1``, and
                             dprl's own stand-ins ``dprl/...``); a bare id means the same
  ``ogbench:<name>``         an OGBench file ``$OGBENCH_DATA_DIR/<name>.npz`` (ogbench's default
                             directory ``~/.ogbench/data``), e.g. ``ogbench:scene-play-v0``; a name
                             with a size token (``cube-quadruple-play-100m-v0``) is a directory of
                             npz shards (``@K`` after it: only the first K shards);
                             ``ogbench:/path/file.npz`` and ``ogbench:/path/dir`` name a file or
                             a shard directory anywhere
  ``robomimic:<task>/<type>`` robomimic's low-dim file ``$ROBOMIMIC_DATASET_ROOT/<task>/<type>/
                             low_dim_v15.hdf5`` (default root ``~/.robomimic``),
                             ``robomimic:<task>/<type>/image`` its image file ``image_v15.hdf5``
                             (84x84 agentview and eye-in-hand cameras), or
                             ``robomimic:/path/file.hdf5``

File layouts (the facts dprl relies on; ``check_source`` checks them before any work):

* OGBench npz: ``observations [M, O]`` float32, ``actions [M, A]`` float32, ``terminals [M]``
  bool (True on the last row of every episode), and for the manipulation envs ``qpos [M, nq]``,
  ``qvel [M, nv]`` float32 and ``button_states [M, B]`` int64 (the state of each row). An episode
  of T rows gives T - 1 transitions: the last row's action has no successor (as
  ``ogbench.load_dataset(..., compact_dataset=False)``). Play files carry no rewards: a task
  relabels them. A 100M directory holds such files (``*.npz`` but ``*-val.npz``), read in sorted
  order, one shard at a time. The visual-* files (``visual-cube-single-play-v0``, ...) hold
  ``observations [M, 64, 64, 3]`` uint8 (the envs' 64x64 camera) and the same other arrays;
  their frames are kept once (``dprl.data.frames``), not copied into s and s'.
* robomimic hdf5: ``data`` (attribute ``env_args``: JSON with ``env_name``), one group
  ``data/demo_<k>`` per demonstration with ``obs/<key> [T, d]``, ``next_obs/<key> [T, d]``,
  ``actions [T, 7|14]`` (in [-1, 1]), ``rewards [T]`` and ``dones [T]``; demos are read in the
  order of k. The image file adds ``obs/agentview_image`` and ``obs/robot0_eye_in_hand_image``
  uint8 ``[T, 84, 84, 3]`` (and the same under ``next_obs``, one step later) beside the
  low-dim keys; a task's ``cameras`` reads them as ``PixelObservations``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dprl.envs.benchmarks import ROBOMIMIC_OBS_KEYS

OGBENCH_DIR_ENV = "OGBENCH_DATA_DIR"
ROBOMIMIC_DIR_ENV = "ROBOMIMIC_DATASET_ROOT"
ROBOMIMIC_FILE = "low_dim_v15.hdf5"
ROBOMIMIC_IMAGE_FILE = "image_v15.hdf5"     # agentview and eye-in-hand cameras, 84x84
KINDS = ("minari", "ogbench", "robomimic")
OGBENCH_DATASET_TYPES = ("play", "noisy", "navigate", "stitch", "explore")
_SIZE_TOKEN = re.compile(r"^\d+[mb]$")       # '100m' in cube-quadruple-play-100m-v0
OGBENCH_REQUIRED = ("observations", "actions", "terminals")
OGBENCH_INFO = ("qpos", "qvel", "button_states")


class SourceError(FileNotFoundError):
    """A dataset source that is missing or unreadable; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where offline data come from. ``kind``: 'minari' | 'ogbench' | 'robomimic'; ``name``: the
    Minari id, the OGBench dataset name (``scene-play-v0``) or robomimic's ``lift/ph``;
    ``path``: the file or shard directory (None for Minari ids, which the Minari root locates)."""

    kind: str
    name: str
    path: str | None = None
    shards: int | None = None       # a shard directory: only its first ``shards`` shards

    @property
    def ref(self) -> str:
        """What config.json records as the dataset: the bare id for Minari, else kind:path."""
        if self.kind == "minari":
            return self.name
        return f"{self.kind}:{self.path}" + (f"@{self.shards}" if self.shards else "")

    @property
    def sharded(self) -> bool:
        return self.kind == "ogbench" and self.path is not None and not self.path.endswith(".npz")


def ogbench_data_dir() -> Path:
    return Path(os.environ.get(OGBENCH_DIR_ENV) or "~/.ogbench/data").expanduser()


def robomimic_root() -> Path:
    return Path(os.environ.get(ROBOMIMIC_DIR_ENV) or "~/.robomimic").expanduser()


def parse_source(spec: str) -> DataSource:
    """A ``--dataset=`` string -> ``DataSource`` (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        return DataSource("minari", spec)
    if not rest:
        raise SourceError(f"--dataset={spec!r} names no dataset after {kind!r}:")
    if kind == "minari":
        return DataSource("minari", rest)
    if kind == "ogbench":
        rest, at, count = rest.partition("@")
        if at and not (count.isdigit() and int(count) > 0):
            raise SourceError(f"--dataset={spec!r}: '@' must be followed by a number of shards "
                              f"(e.g. @10), not {count!r}")
        shards = int(count) if at else None
        if "/" in rest or rest.endswith(".npz"):
            path = Path(rest).expanduser()
            name = path.stem if path.suffix == ".npz" else path.name
        else:
            name = rest
            is_dir = any(_SIZE_TOKEN.match(t) for t in rest.split("-"))
            path = ogbench_data_dir() / (rest if is_dir else f"{rest}.npz")
        return DataSource("ogbench", name, str(path), shards)
    if rest.endswith(".hdf5") or rest.endswith(".h5"):
        path = Path(rest).expanduser()
        parts = path.parts
        name = f"{parts[-3]}/{parts[-2]}" if len(parts) >= 3 else path.stem
        return DataSource("robomimic", name, str(path))
    task, _, hdf5_type = rest.partition("/")
    dtype, _, hdf5_type = hdf5_type.partition("/")
    if hdf5_type not in ("", "low_dim", "image"):
        raise SourceError(f"--dataset={spec!r}: robomimic's file type is 'low_dim' (default) or "
                          f"'image' (robomimic:<task>/<type>/image), not {hdf5_type!r}")
    name = f"{task}/{dtype}" if dtype else task
    return DataSource("robomimic", name, str(robomimic_root() / name / (
        ROBOMIMIC_IMAGE_FILE if hdf5_type == "image" else ROBOMIMIC_FILE)))


def ogbench_env_id(name: str) -> str:
    """The env an OGBench dataset was recorded in: ``scene-play-v0`` -> ``scene-v0``,
    ``cube-quadruple-play-100m-v0`` -> ``cube-quadruple-v0`` (ogbench drops the dataset type)."""
    tokens = [t for t in name.split("-") if not _SIZE_TOKEN.match(t)]
    for i, t in enumerate(tokens):
        if t in OGBENCH_DATASET_TYPES:
            return "-".join(tokens[:i] + tokens[-1:])
    return "-".join(tokens)


def download_command(src: DataSource) -> str:
    """The command a user runs (with internet) to get ``src``."""
    if src.kind == "minari":
        return f"minari download {src.name}"
    if src.kind == "ogbench":
        parent = Path(src.path).parent
        if src.sharded:
            return (f"wget -r -np -nH --cut-dirs=2 -A '*.npz' -P {parent} "
                    f"https://rail.eecs.berkeley.edu/datasets/ogbench/{src.name}/")
        return (f"python -c \"import ogbench; ogbench.download_datasets(['{src.name}'], "
                f"'{parent}')\"")
    task, _, kind = src.name.partition("/")
    root = Path(src.path).parent.parent.parent
    hdf5_type = "image" if Path(src.path).name == ROBOMIMIC_IMAGE_FILE else "low_dim"
    return (f"pip install robomimic && python -m robomimic.scripts.download_datasets --tasks "
            f"{task} --dataset_types {kind or 'ph'} --hdf5_types {hdf5_type} "
            f"--download_dir {root}")


# ----------------------------------------------------------------------------- checks
def source_exists(src: DataSource) -> bool:
    if src.kind == "minari":
        from dprl.data.io import dataset_dir
        from dprl.data.registry import half_written_dirs
        return dataset_dir(src.name).exists() or bool(half_written_dirs(src.name))
    return Path(src.path).exists()


def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype, int]]:
    """``{key: (shape, dtype, crc32)}`` of an npz file, read from its headers only."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
            out[info.filename[:-4]] = (tuple(shape), np.dtype(dtype), info.CRC)
    return out


def _check_npz(path: Path, what: str) -> dict:
    try:
        headers = _npz_headers(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise SourceError(f"{what} {path} cannot be read as an npz file ({e}): it is truncated "
                          f"or corrupted; delete it and download it again.") from e
    missing = [k for k in OGBENCH_REQUIRED if k not in headers]
    if missing:
        raise SourceError(f"{what} {path} has no {', '.join(missing)} (keys: "
                          f"{', '.join(sorted(headers))}): it is not an OGBench dataset file.")
    n = headers["observations"][0][0]
    bad = [k for k in OGBENCH_REQUIRED + OGBENCH_INFO if k in headers and headers[k][0][:1] != (n,)]
    if bad:
        raise SourceError(f"{what} {path}: {', '.join(bad)} do not have the {n} rows of "
                          f"observations; the file is corrupted.")
    return headers


SHARD_NUMBER = re.compile(r"(\d+)$")


def ogbench_shards(directory: Path, limit: int | None = None) -> list[Path]:
    """The training shards of an OGBench shard directory in order, checked: every ``*.npz``
    but ``*-val.npz``; when their names end in numbers, the numbers run without a gap.
    ``limit``: only the first ``limit`` (all must exist)."""
    shards = sorted(p for p in directory.glob("*.npz") if not p.name.endswith("-val.npz"))
    if not shards:
        raise SourceError(f"OGBench shard directory {directory} holds no .npz shards; download "
                          f"them again.")
    numbers = [SHARD_NUMBER.search(p.stem) for p in shards]
    if all(numbers):
        nums = sorted(int(m.group(1)) for m in numbers)
        missing = sorted(set(range(nums[0], nums[-1] + 1)) - set(nums))
        if missing:
            raise SourceError(f"OGBench shard directory {directory} misses shard(s) "
                              f"{', '.join(map(str, missing[:5]))}"
                              f"{' ...' if len(missing) > 5 else ''} (has {len(shards)} of "
                              f"{nums[-1] - nums[0] + 1}); download the missing files again.")
    if limit is not None and limit > len(shards):
        raise SourceError(f"OGBench shard directory {directory} has {len(shards)} shards, fewer "
                          f"than the {limit} asked for (@{limit}).")
    return shards[:limit] if limit else shards


def check_source(src: DataSource) -> None:
    """Raise ``SourceError`` (one line) unless ``src`` is on disk whole: a truncated npz, a shard
    directory with a missing shard, an hdf5 file without ``data/`` or without a demo's arrays."""
    if src.kind == "minari":
        from dprl.data.registry import check_dataset_dir
        check_dataset_dir(src.name)
        return
    path = Path(src.path)
    if not path.exists():
        raise SourceError(f"{src.kind} dataset {src.path} is not on disk. Get it with: "
                          f"{download_command(src)}")
    if src.kind == "ogbench":
        if path.is_dir():
            for shard in ogbench_shards(path, src.shards):
                _check_npz(shard, "OGBench shard")
        else:
            _check_npz(path, "OGBench dataset")
        return
    _check_robomimic(path)


def _check_robomimic(path: Path) -> None:
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SourceError(f"robomimic file {path} cannot be opened ({e}): it is truncated or "
                          f"not hdf5; download it again.") from e
    with f:
        if "data" not in f:
            raise SourceError(f"robomimic file {path} has no data/ group (top level: "
                              f"{', '.join(f.keys()) or 'empty'}): it is not a robomimic dataset.")
        demos = robomimic_demos(f)
        if not demos:
            raise SourceError(f"robomimic file {path} has no data/demo_<k> groups.")
        g = f["data"][demos[0]]
        missing = [k for k in ("obs", "next_obs", "actions", "rewards", "dones") if k not in g]
        if missing:
            raise SourceError(f"robomimic file {path}: data/{demos[0]} has no "
                              f"{', '.join(missing)}; the file is incomplete.")


def robomimic_demos(f) -> list[str]:
    """``data/demo_<k>`` names in the order of k."""
    names = [k for k in f["data"].keys() if k.startswith("demo_")]
    return sorted(names, key=lambda k: int(k[5:]))


def recorded_env_id(src: DataSource) -> str | None:
    """The env the data were recorded in, from the source's own metadata: Minari's env spec,
    OGBench's dataset name, robomimic's ``data.attrs['env_args']['env_name']``."""
    if src.kind == "minari":
        from dprl.data.registry import env_id_of, read_metadata
        return env_id_of(read_metadata(src.name))
    if src.kind == "ogbench":
        return ogbench_env_id(src.name)
    import h5py
    with h5py.File(src.path, "r") as f:
        args = f["data"].attrs.get("env_args")
    if args is None:
        return None
    return json.loads(args).get("env_name")


def source_fingerprint(src: DataSource) -> dict:
    """What identifies the data without reading them: per file its name, bytes and (npz) the
    CRC-32 and shape of every array (a re-downloaded or regenerated file with other data differs)."""
    if src.kind == "minari":
        from dprl.data.registry import dataset_fingerprint
        return dataset_fingerprint(src.name)
    path = Path(src.path)
    files = ogbench_shards(path, src.shards) if path.is_dir() else [path]
    out = []
    for f in files:
        entry = {"file": f.name, "bytes": f.stat().st_size}
        if f.suffix == ".npz":
            entry["arrays"] = {k: [list(s), str(d), crc] for k, (s, d, crc)
                               in sorted(_npz_headers(f).items())}
        out.append(entry)
    return {"kind": src.kind, "files": out}


# ----------------------------------------------------------------------------- OGBench
def _ogbench_rows(terminals: np.ndarray) -> np.ndarray:
    """Rows that start a transition: every row but an episode's last (its action has no
    successor). The next observation of row i is row i + 1."""
    terminals = np.asarray(terminals, bool)
    if len(terminals) and not terminals[-1]:
        raise SourceError("the file ends in the middle of an episode (its last row is not "
                          "terminal); it is truncated: download it again.")
    return np.flatnonzero(~terminals)


def _read_ogbench(path: Path, info: bool) -> dict[str, np.ndarray]:
    """The transitions of one OGBench npz file: observations, next_observations, actions,
    dones (the episode's last transition), and (``info``) qpos/qvel/button_states of s_t."""
    try:
        with np.load(path) as z:
            rows = _ogbench_rows(z["terminals"])
            obs = z["observations"]
            if is_frames(obs):
                # visual-*: every row's frame kept once; s_t is frame rows[i], s_{t+1} the next.
                out = {"frames": obs, "obs_frame": rows.astype(np.int32)}
            else:
                out = {"observations": obs[rows].astype(np.float32, copy=False),
                       "next_observations": obs[rows + 1].astype(np.float32, copy=False)}
            del obs
            out["actions"] = z["actions"][rows].astype(np.float32, copy=False)
            if "rewards" in z.files:
                out["rewards"] = z["rewards"][rows].astype(np.float32, copy=False)
            if info:
                for k in OGBENCH_INFO:
                    if k in z.files:
                        out[k] = z[k][rows]
    except SourceError as e:
        raise SourceError(f"OGBench file {path}: {e}") from e
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise SourceError(f"OGBench file {path} cannot be read ({e}): it is truncated or "
                          f"corrupted; download it again.") from e
    # A transition ends its episode when the next row is the episode's last.
    ends = np.zeros(len(rows), bool)
    ends[:-1] = np.diff(rows) > 1
    if len(rows):
        ends[-1] = True
    out["dones"] = ends
    return out


def is_frames(observations: np.ndarray) -> bool:
    """Camera frames: uint8 ``[M, H, W, C]`` (OGBench's visual-* observations)."""
    return observations.dtype == np.uint8 and observations.ndim == 4


def _pixel_observations(arrays: dict) -> dict:
    """``frames [M, H, W, C]`` and ``obs_frame [N]`` -> observations and next observations as
    ``PixelObservations`` over the one store (next = one frame later), with an empty state
    ``[N, 0]`` (the visual envs observe the image only)."""
    from dprl.data.frames import Frames, PixelObservations

    frames, index = arrays.pop("frames"), arrays.pop("obs_frame")
    state = np.zeros((len(index), 0), np.float32)
    arrays["observations"] = PixelObservations(image=Frames(frames, index), state=state)
    arrays["next_observations"] = PixelObservations(image=Frames(frames, index + 1),
                                                    state=state.copy())
    return arrays


def _offline(arrays: dict, src: DataSource, extras: dict, meta: dict):
    from dprl.data.offline import OfflineData
    if "frames" in arrays:
        arrays = _pixel_observations(arrays)
        meta = {**meta, "augment": "none"}
    n = len(arrays["actions"])
    dones = arrays["dones"]
    return OfflineData(
        observations=arrays["observations"], actions=arrays["actions"],
        rewards=arrays.get("rewards", np.zeros(n, np.float32)),
        terminals=arrays.get("terminals", np.zeros(n, bool)),
        timeouts=arrays.get("timeouts", dones.copy()), dones=dones,
        next_observations=arrays["next_observations"], dataset_id=src.ref, source="official",
        env_id=recorded_env_id(src), metadata=meta, extras=extras)


def load_ogbench(src: DataSource, on_shard: Callable | None = None, info: bool = True):
    """An OGBench file or shard directory as ``OfflineData`` (what ``ogbench.load_dataset(path,
    compact_dataset=False, add_info=True)`` gives, flattened across shards in sorted order).
    A visual-* file (uint8 frames ``[M, H, W, C]``) gives ``PixelObservations``: its frames
    stored once, s_t and s_{t+1} as indices into them, an empty state ``[N, 0]``.

    ``dones`` ends every episode; ``terminals`` are all False (OGBench's episodes end only at the
    time limit: ``timeouts == dones``); rewards are the file's, or zeros for play data (a task
    relabels them). ``extras`` holds qpos/qvel/button_states ``[N, ...]`` of every s_t when
    ``info``. A shard directory is read one shard at a time into arrays allocated once, with
    ``on_shard(OfflineData) -> OfflineData`` (a task's relabeling) applied to each shard before
    it is copied in and its extras dropped, so peak memory is the result plus one shard.
    """
    path = Path(src.path)
    meta = {"format": "ogbench-npz", "path": str(path), "rewards": "from the file, else none: "
            "relabeled by the task"}
    if not path.is_dir():
        arrays = _read_ogbench(path, info)
        extras = {k: arrays.pop(k) for k in OGBENCH_INFO if k in arrays}
        data = _offline(arrays, src, extras, meta)
        return on_shard(data) if on_shard else data
    shards = ogbench_shards(path, src.shards)
    shape, dtype, _ = _npz_headers(shards[0])["observations"]
    if dtype == np.uint8 and len(shape) == 4:
        raise SourceError(f"OGBench shard directory {path} holds camera frames: dprl reads "
                          f"visual-* data from single files only (e.g. visual-cube-single-"
                          f"play-v0.npz), not from shard directories.")
    sizes = []
    for shard in shards:
        with np.load(shard) as z:
            sizes.append(int((~np.asarray(z["terminals"], bool)).sum()))
    total = int(sum(sizes))
    meta.update(format="ogbench-shards", shards=[s.name for s in shards], transitions=total)
    out, start = None, 0
    for shard, size in zip(shards, sizes):
        arrays = _read_ogbench(shard, info)
        extras = {k: arrays.pop(k) for k in OGBENCH_INFO if k in arrays}
        part = _offline(arrays, src, extras, meta)
        if on_shard:
            part = on_shard(part)
        if out is None:
            out = {k: np.empty((total,) + getattr(part, k).shape[1:], getattr(part, k).dtype)
                   for k in _FLAT_FIELDS}
        for k in _FLAT_FIELDS:
            out[k][start:start + size] = getattr(part, k)
        relabel = part.metadata.get("dprl_relabel")
        del part, arrays, extras
        start += size
    data = _offline({k: out[k] for k in _FLAT_FIELDS}, src, {}, meta)
    if on_shard and relabel is not None:
        data.metadata["dprl_relabel"] = relabel
    return data


_FLAT_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals",
                "timeouts", "dones")


def ogbench_ram_bytes(src: DataSource) -> dict:
    """Host memory that ``load_ogbench`` of a shard directory needs, from the files' headers:
    the flat arrays of every transition (float32 observations twice: s and s'), plus the largest
    shard read at once (with qpos/qvel/button_states)."""
    path = Path(src.path)
    files = ogbench_shards(path, src.shards) if path.is_dir() else [path]
    total, largest = 0, 0
    per_row = None
    for f in files:
        h = _npz_headers(f)
        rows = h["observations"][0][0]
        obs_dim = int(np.prod(h["observations"][0][1:]))
        act_dim = int(np.prod(h["actions"][0][1:]))
        per_row = 4 * (2 * obs_dim + act_dim + 1) + 3
        shard = sum(int(np.prod(s)) * d.itemsize for s, d, _ in h.values()) + rows * per_row
        total += rows
        largest = max(largest, shard)
    return {"transitions_at_most": total, "flat_bytes": total * (per_row or 0),
            "largest_shard_bytes": largest, "peak_bytes": total * (per_row or 0) + largest}


def write_ogbench_npz(path, episodes: Sequence[dict]) -> Path:
    """Write episodes in OGBench's npz layout (``np.savez`` of the keys above; dtypes as
    ogbench's data scripts store them: uint8 observations, i.e. camera frames ``[T+1, H, W, C]``,
    stay uint8). Each episode holds ``observations [T+1, O]`` (s_0 .. s_T),
    ``actions [T, A]`` and optionally ``qpos [T+1, nq]``, ``qvel [T+1, nv]``, ``button_states
    [T+1, B]``; it is stored as T + 1 rows whose last row (s_T, terminal) carries a zero action,
    so that ``load_dataset`` gives back exactly its T transitions."""
    from dprl.base.files import atomic_write

    cols: dict[str, list] = {k: [] for k in OGBENCH_REQUIRED + OGBENCH_INFO}
    for ep in episodes:
        obs = np.asarray(ep["observations"])
        T = len(ep["actions"])
        if len(obs) != T + 1:
            raise ValueError(f"an episode has {len(obs)} observations for {T} actions "
                             f"(expected {T + 1})")
        cols["observations"].append(obs)
        act = np.asarray(ep["actions"], np.float32)
        cols["actions"].append(np.concatenate([act, np.zeros((1,) + act.shape[1:], np.float32)]))
        term = np.zeros(T + 1, bool)
        term[-1] = True
        cols["terminals"].append(term)
        for k in OGBENCH_INFO:
            if k in ep:
                cols[k].append(np.asarray(ep[k]))
    dtypes = {"observations": np.float32, "actions": np.float32, "terminals": bool,
              "qpos": np.float32, "qvel": np.float32, "button_states": np.int64}
    if cols["observations"] and all(o.dtype == np.uint8 for o in cols["observations"]):
        dtypes["observations"] = np.uint8        # camera frames stay uint8 (visual-* files)
    arrays = {k: np.concatenate(v).astype(dtypes[k]) for k, v in cols.items()
              if v and len(v) == len(episodes)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


# ----------------------------------------------------------------------------- robomimic
def _camera_frames(g, key: str, T: int) -> tuple[np.ndarray, np.ndarray]:
    """One demo's frames of camera ``key`` stored once: ``(store, next_index)``. robomimic's
    ``next_obs[t]`` is ``obs[t + 1]`` for t < T - 1, so the store is ``obs[0 .. T-1]`` and the
    last ``next_obs`` (``[T + 1, H, W, C]``) with s'_t = store[t + 1]; a file where they differ
    keeps both (``[2T, ...]``, s'_t = store[T + t])."""
    obs, nxt = np.asarray(g["obs"][key]), np.asarray(g["next_obs"][key])
    if obs.dtype != np.uint8 or obs.ndim != 4 or nxt.shape != obs.shape or len(obs) != T:
        raise SourceError(f"robomimic data/{g.name}: obs/{key} is {obs.dtype} {obs.shape} and "
                          f"next_obs/{key} {nxt.shape}: expected uint8 [{T}, H, W, C] frames "
                          f"in both (robomimic's image files).")
    if np.array_equal(obs[1:], nxt[:-1]):
        return np.concatenate([obs, nxt[-1:]]), np.arange(1, T + 1)
    return np.concatenate([obs, nxt]), np.arange(T, 2 * T)


def load_robomimic(src: DataSource, obs_keys: Sequence[str] = ROBOMIMIC_OBS_KEYS,
                   cameras: dict | None = None):
    """A robomimic hdf5 file as ``OfflineData``: per demo (in the order of k) the
    observation keys ``obs_keys`` concatenated in that order ``[T, sum d]``, ``next_obs`` the same
    way, actions, rewards, ``terminals = dones`` (robomimic marks the success step; QC's masks
    are ``1 - dones``) and ``dones`` true at every demo's last step (``timeouts`` where that step
    is not a success).

    ``cameras`` (``{file key: observation key}``, e.g. ``{'agentview_image': 'image_agentview'}``)
    reads an image file (``image_v15.hdf5``) as ``PixelObservations``: one ``Frames`` per camera,
    every frame stored once (``_camera_frames``), and the low-dim keys as ``state``."""
    import h5py

    path = Path(src.path)
    _check_robomimic(path)
    cameras = dict(cameras or {})
    cols: dict[str, list] = {k: [] for k in ("observations", "next_observations", "actions",
                                             "rewards", "terminals", "dones")}
    stores = {k: [] for k in cameras}
    index = {k: ([], []) for k in cameras}
    stored = dict.fromkeys(cameras, 0)
    with h5py.File(path, "r") as f:
        demos = robomimic_demos(f)
        for name in demos:
            g = f["data"][name]
            missing = [k for k in list(obs_keys) + list(cameras) if k not in g["obs"]]
            if missing:
                kind = "image" if any(k in cameras for k in missing) else "low-dim"
                raise SourceError(f"robomimic file {path}: data/{name}/obs has no "
                                  f"{', '.join(missing)} (has {', '.join(g['obs'].keys())}); "
                                  f"it is not the {kind} file of this task.")
            T = len(g["actions"])
            obs = np.concatenate([np.asarray(g["obs"][k], np.float32).reshape(T, -1)
                                  for k in obs_keys], axis=1)
            nxt = np.concatenate([np.asarray(g["next_obs"][k], np.float32).reshape(T, -1)
                                  for k in obs_keys], axis=1)
            for key in cameras:
                store, next_index = _camera_frames(g, key, T)
                index[key][0].append(stored[key] + np.arange(T))
                index[key][1].append(stored[key] + next_index)
                stores[key].append(store)
                stored[key] += len(store)
            cols["observations"].append(obs)
            cols["next_observations"].append(nxt)
            cols["actions"].append(np.asarray(g["actions"], np.float32).reshape(T, -1))
            cols["rewards"].append(np.asarray(g["rewards"], np.float32).reshape(T))
            cols["terminals"].append(np.asarray(g["dones"]).reshape(T).astype(bool))
            end = np.zeros(T, bool)
            end[-1] = True
            cols["dones"].append(end)
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    arrays["timeouts"] = arrays["dones"] & ~arrays["terminals"]
    meta = {"format": "robomimic-hdf5", "path": str(path), "demos": len(demos),
            "obs_keys": list(obs_keys)}
    if cameras:
        from dprl.data.frames import Frames, PixelObservations

        frames = {k: np.concatenate(v) for k, v in stores.items()}
        for which, i in (("observations", 0), ("next_observations", 1)):
            views = {cameras[k]: Frames(frames[k], np.concatenate(index[k][i])) for k in cameras}
            arrays[which] = PixelObservations(**views, state=arrays[which])
        meta.update(cameras=cameras, augment="none")
    return _offline(arrays, src, {}, meta)
