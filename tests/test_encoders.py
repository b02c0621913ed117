"""Image encoders (dprl/models/encoders.py) and augmentation (dprl/models/augment.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dprl.models import augment
from dprl.models.encoders import (OBSERVATION_ENCODER, ObservationEncoder, default_encoder_config,
                                  encode_observations, frozen_encoder_config, stack_frames)


def _config(name, **kw):
    cfg = default_encoder_config()
    cfg.name = name
    cfg.update(kw)
    return frozen_encoder_config(cfg)


@pytest.mark.parametrize("name,dim", [("impala_debug", 8),
                                      pytest.param("impala_small", 8, marks=pytest.mark.slow),
                                      pytest.param("resnet18", 6, marks=pytest.mark.slow)])
def test_encoder_shapes_with_history_and_state(name, dim):
    """[B, K, H, W, C] uint8 + [B, K, S] -> [B, D] with D = feature dim + K * S."""
    cfg = _config(name, mlp_dims=(8,), resnet_width=16, num_keypoints=4, feature_dim=6)
    obs = {"image": jnp.zeros((2, 3, 32, 32, 3), jnp.uint8), "state": jnp.ones((2, 3, 5))}
    enc = ObservationEncoder(cfg)
    params = enc.init(jax.random.PRNGKey(0), obs)
    out = enc.apply(params, obs)
    assert out.shape == (2, dim + 15)
    np.testing.assert_allclose(out[:, dim:], 1.0)   # the state passes through, flattened


def test_two_cameras_get_their_own_encoders():
    cfg = _config("impala_debug", mlp_dims=(4,))
    obs = {"image": jnp.zeros((2, 16, 16, 3), jnp.uint8),
           "image_wrist": jnp.zeros((2, 16, 16, 3), jnp.uint8), "state": jnp.zeros((2, 1))}
    params = ObservationEncoder(cfg).init(jax.random.PRNGKey(0), obs)["params"]
    assert len(params) == 2 and ObservationEncoder(cfg).apply(
        {"params": params}, obs).shape == (2, 9)


@pytest.mark.parametrize("size", [(32, 32), (7, 9), (16, 5)])
def test_max_pool_equals_flax_max_pool(size):
    import flax.linen as nn

    from dprl.models.encoders import max_pool_3x3_stride2
    x = jax.random.normal(jax.random.PRNGKey(0), (2, *size, 3))
    np.testing.assert_array_equal(max_pool_3x3_stride2(x),
                                  nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME"))
    g1 = jax.grad(lambda x: (max_pool_3x3_stride2(x) ** 2).sum())(x)
    g2 = jax.grad(lambda x: (nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME") ** 2).sum())(x)
    np.testing.assert_allclose(g1, g2, atol=1e-6)


def test_stack_frames_puts_history_on_channels_in_unit_range():
    img = np.arange(2 * 2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 4, 3)
    x = stack_frames(jnp.asarray(img))
    assert x.shape == (2, 4, 4, 6) and float(x.max()) <= 1.0
    np.testing.assert_allclose(x[..., :3], img[:, 0] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x[..., 3:], img[:, 1] / 255.0, rtol=1e-6)


def test_flat_observations_bypass_the_encoder():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, obs):
            return encode_observations(obs, None)

    obs = jnp.arange(12.0).reshape(2, 2, 3)
    assert Net().init(jax.random.PRNGKey(0), obs) == {}
    np.testing.assert_array_equal(Net().apply({}, obs), obs.reshape(2, 6))


def test_unknown_encoder_is_one_clear_error():
    with pytest.raises(ValueError, match="Unknown encoder"):
        ObservationEncoder(_config("vit")).init(
            jax.random.PRNGKey(0), {"image": jnp.zeros((1, 8, 8, 3), jnp.uint8)})


# ---- augmentation -------------------------------------------------------------------------------
def _dot_images(B, H=20, W=20):
    """One bright pixel per sample at (8, 9); frame 2 of a history has it too."""
    img = np.zeros((B, 2, H, W, 1), np.uint8)
    img[:, :, 8, 9] = 255
    return jnp.asarray(img)


def test_random_shift_moves_within_the_pad_and_keeps_frames_together():
    img = _dot_images(256)
    out = jax.jit(augment.random_shift, static_argnums=2)(img, jax.random.PRNGKey(0), 4)
    assert out.shape == img.shape and out.dtype == jnp.uint8
    out = np.asarray(out)
    shifts = set()
    for b in range(256):
        r, c = np.argwhere(out[b, 0, ..., 0] == 255)[0]
        assert np.array_equal(out[b, 0], out[b, 1])      # the K frames moved together
        dr, dc = r - 8, c - 9
        assert abs(dr) <= 4 and abs(dc) <= 4
        shifts.add((dr, dc))
    assert len(shifts) > 40          # many of the 81 shifts occur, not one fixed offset


def test_random_shift_fills_with_the_edge():
    img = jnp.asarray(np.tile(np.arange(10, dtype=np.uint8)[None, None, :, None], (64, 10, 1, 1)))
    out = np.asarray(augment.random_shift(img, jax.random.PRNGKey(1), 4))
    # each row is the ramp 0..9 moved by <= 4 with edge values repeated: still non-decreasing
    assert np.all(np.diff(out[..., 0].astype(int), axis=-1) >= 0)
    assert out.min() == 0 and out.max() == 9


def test_augmentation_changes_only_images_and_is_off_for_none():
    obs = {"image": _dot_images(8), "state": jnp.ones((8, 2, 3))}
    key = jax.random.PRNGKey(2)
    out = augment.augment_observations(obs, key, "shift")
    np.testing.assert_array_equal(out["state"], obs["state"])
    assert not np.array_equal(out["image"], obs["image"])
    assert augment.augment_observations(obs, key, "none") is obs
    flat = jnp.ones((8, 3))
    assert augment.augment_observations(flat, key, "shift") is flat
    with pytest.raises(ValueError, match="Unknown augmentation"):
        augment.augment_observations(obs, key, "rotate")


def test_random_crop_and_center_crop():
    img = jnp.asarray(np.arange(4 * 10 * 10, dtype=np.uint8).reshape(4, 10, 10, 1))
    out = augment.random_crop(img, jax.random.PRNGKey(0), 8)
    assert out.shape == (4, 8, 8, 1)
    for b in range(4):   # each crop is a window of its own image
        full = np.asarray(img[b, ..., 0])
        r, c = np.argwhere(full == int(out[b, 0, 0, 0]))[0]
        np.testing.assert_array_equal(out[b, ..., 0], full[r:r + 8, c:c + 8])
    np.testing.assert_array_equal(augment.center_crop(img, 8), img[:, 1:9, 1:9])
    with pytest.raises(ValueError, match="larger"):
        augment.random_crop(img, jax.random.PRNGKey(0), 11)


# ---- diffusion_policy's crop: random in training batches, centered when acting ------------------
def test_crop_augmentation_stays_inside_the_image_and_keeps_frames_together():
    rng = np.random.default_rng(0)
    cams = {k: jnp.asarray(rng.integers(0, 256, (64, 2, 12, 12, 3), dtype=np.uint8))
            for k in ("image_agentview", "image_wrist")}
    obs = {**cams, "state": jnp.ones((64, 2, 3))}
    out = jax.jit(augment.augment_observations, static_argnums=2)(
        obs, jax.random.PRNGKey(0), "crop:8")
    np.testing.assert_array_equal(out["state"], obs["state"])
    places = {}
    for k, full in cams.items():
        assert out[k].shape == (64, 2, 8, 8, 3) and out[k].dtype == jnp.uint8
        full, crop = np.asarray(full), np.asarray(out[k])
        places[k] = []
        for b in range(64):
            # the window that matches, searched over every place inside the 12x12 image
            found = [(r, c) for r in range(5) for c in range(5)
                     if np.array_equal(full[b, :, r:r + 8, c:c + 8], crop[b])]
            assert found, (k, b)           # inside the image, both history frames together
            places[k].append(found[0])
        assert len(set(places[k])) > 10    # random places, not one fixed window
    assert places["image_agentview"] != places["image_wrist"]   # each camera its own key


def test_crop_size_of_an_augmentation():
    assert augment.crop_size("crop:76") == 76
    assert augment.crop_size("shift") == 0 and augment.crop_size("none") == 0
    for bad in ("crop", "crop:0", "crop:x", "rotate"):
        with pytest.raises(ValueError, match="Unknown augmentation"):
            augment.crop_size(bad)


def test_encoder_center_crops_acting_frames_and_leaves_training_crops():
    """With ``encoder.crop``, a full frame is encoded as its center crop (acting / evaluation:
    pixels outside the central window change nothing), a training batch's random crop (already
    crop-sized) as it is; the two differ."""
    cfg = _config("impala_debug", mlp_dims=(8,), crop=8)
    rng = np.random.default_rng(1)
    full = rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    obs = {"image": jnp.asarray(full), "state": jnp.ones((4, 2))}
    enc = ObservationEncoder(cfg)
    params = enc.init(jax.random.PRNGKey(0), obs)     # initialized on full frames (example batch)
    acting = enc.apply(params, obs)
    noisy = full.copy()
    border = np.ones((12, 12), bool)
    border[2:10, 2:10] = False
    noisy[:, border] = rng.integers(0, 256, (4, int(border.sum()), 3), dtype=np.uint8)
    np.testing.assert_array_equal(acting, enc.apply(params, {**obs, "image": jnp.asarray(noisy)}))
    centered = {**obs, "image": augment.center_crop(obs["image"], 8)}
    np.testing.assert_allclose(acting, enc.apply(params, centered), rtol=1e-6)
    train = augment.augment_observations(obs, jax.random.PRNGKey(3), "crop:8")
    assert train["image"].shape == (4, 8, 8, 3)
    trained_on = enc.apply(params, train)           # same parameters: 8x8 is not cropped again
    assert trained_on.shape == acting.shape
    assert not np.allclose(trained_on, acting)      # training batches differ from evaluation
    with pytest.raises(ValueError, match="larger than"):
        ObservationEncoder(_config("impala_debug", mlp_dims=(8,), crop=16)).init(
            jax.random.PRNGKey(0), obs)


def test_crop_task_sets_the_encoder_crop_for_acting():
    """A task trained on random crops (``augment='crop:<size>'``) gets ``encoder.crop`` (every
    network's encoder: actor and critics read the same setting); shift tasks keep 0."""
    from dprl.envs.tasks import get_task
    from dprl.run.config import load_config_file, run_config

    config = load_config_file("configs/dql.py")
    crop = run_config(config, get_task("robomimic-lift-ph-image"), on_policy=False)
    assert crop.encoder.crop == 76 and crop.actor.encoder.crop == 76
    assert run_config(config, get_task("pixel-pole"), on_policy=False).encoder.crop == 0


def test_agent_acts_on_the_center_crop_of_a_crop_task():
    """Through the agent interface: with the crop task's config (``run_config``), an agent
    initialized on full 12x12 frames acts the same whatever the pixels outside the central 8x8
    window are (evaluation and acting see the center crop), and trains on 8x8 random crops."""
    import importlib

    from agents import get_agent
    from dprl.data.buffer import Buffer, example_batch
    from dprl.data.frames import PixelSpec
    from dprl.data.offline import Normalizer
    from dprl.tools.speed import pixel_dataset

    config = importlib.import_module("configs.bc").get_config()
    config.action_dim = 2
    config.actor.hidden_dims = (16, 16)
    config.actor.diffusion_steps = 3
    config.encoder.name, config.encoder.mlp_dims, config.encoder.crop = "impala_debug", (8,), 8
    spec = PixelSpec(3, (12, 12, 3))
    agent = get_agent("bc").create(0, example_batch(spec, 2, config.horizon), config)
    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (1, 12, 12, 3), dtype=np.uint8)
    noisy = full.copy()
    noisy[:, :2], noisy[:, -2:], noisy[:, :, :2], noisy[:, :, -2:] = 0, 255, 7, 99
    obs = {"image": jnp.asarray(full), "state": jnp.ones((1, 3))}
    key = jax.random.PRNGKey(5)
    a = np.asarray(agent.sample_actions(obs, key)[0])
    b = np.asarray(agent.sample_actions({**obs, "image": jnp.asarray(noisy)}, key)[0])
    np.testing.assert_array_equal(a, b)
    inside = full.copy()
    inside[:, 5, 5] = 255 - inside[:, 5, 5]          # one pixel inside the window does matter
    assert not np.array_equal(a, np.asarray(agent.sample_actions(
        {**obs, "image": jnp.asarray(inside)}, key)[0]))
    data = pixel_dataset(300, size=12, augment="crop:8")
    buf = Buffer.from_offline(data, Normalizer.fit(data.observations))
    batch = buf.sample(jax.random.PRNGKey(0), 16, config.horizon)
    assert batch["observations"]["image"].shape == (16, 8, 8, 3)
    new, info = agent.update(batch)
    assert np.isfinite(float(jax.tree.leaves(info)[0]))


# ---- images encoded once per network ---------------------------------------------------------
def _pixel_obs(B=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.integers(0, 256, (B, size, size, 3), dtype=np.uint8)),
            "state": jnp.asarray(rng.normal(size=(B, 2)), jnp.float32)}


def _flow_actor(steps=4):
    from dprl.models.actor import default_actor_config, make_actor
    cfg = default_actor_config()
    cfg.model, cfg.hidden_dims, cfg.flow_steps = "flow", (16,), steps
    cfg.encoder = default_encoder_config()
    cfg.encoder.name, cfg.encoder.mlp_dims = "impala_debug", (8,)
    return make_actor(cfg, 2, 2)


def test_a_network_takes_its_own_encoding_in_place_of_the_observation():
    """encode_once + apply == apply on the raw observation, values and parameter gradients."""
    from dprl.models.encoders import encode_once
    actor, obs = _flow_actor(), _pixel_obs()
    params = actor.init(jax.random.PRNGKey(0), obs)
    assert OBSERVATION_ENCODER in params["params"]
    x, t = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 2)), jnp.full((3,), 0.3)

    def out(p, once):
        o = encode_once(actor.network, p, obs) if once else obs
        return actor.apply(p, o, x, t)

    np.testing.assert_allclose(out(params, True), out(params, False), rtol=1e-5, atol=1e-6)
    g1, g0 = (jax.grad(lambda p, once=once: (out(p, once) ** 2).sum())(params)
              for once in (True, False))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g0)
    flat = jnp.ones((3, 5))
    assert encode_once(actor.network, params, flat) is flat


def _convolutions(fn, *args) -> list[tuple[int, bool]]:
    """Every convolution in ``fn``'s traced program, nested ones included: (its batch size,
    whether it sits inside a loop, i.e. runs at every step of a scan or while)."""
    def subjaxprs(value):
        for v in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(v, "jaxpr", v)       # a ClosedJaxpr's Jaxpr, or a Jaxpr
            if hasattr(inner, "eqns"):
                yield inner

    def walk(jaxpr, in_loop):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                yield eqn.invars[0].aval.shape[0], in_loop
            looping = in_loop or eqn.primitive.name in ("scan", "while")
            for value in eqn.params.values():
                for sub in subjaxprs(value):
                    yield from walk(sub, looping)
    return list(walk(jax.make_jaxpr(fn)(*args).jaxpr, False))


def test_the_sampler_encodes_the_images_once_for_the_whole_chain():
    """The chain's steps share one encoding: no convolution inside the sampler's loop, and the
    sample equals a chain that re-encodes at every step."""
    from dprl.models import flow
    obs = _pixel_obs()
    actor = _flow_actor(6)
    params = actor.init(jax.random.PRNGKey(0), obs)
    every_step = lambda p: flow.sample(  # noqa: E731
        lambda o, x, t: actor.apply(p, o, x, t), obs, jax.random.PRNGKey(2), (2, 2), num_steps=6)
    once = lambda p: actor.sample(p, obs, jax.random.PRNGKey(2))  # noqa: E731
    assert _convolutions(lambda p: every_step(p)[0], params) == [(3, True)] * 2  # the check sees it
    assert _convolutions(lambda p: once(p)[0], params) == [(3, False)] * 2   # impala_debug: 2 convs
    np.testing.assert_allclose(once(params)[0], every_step(params)[0], rtol=1e-5, atol=1e-6)


def test_best_of_n_encodes_each_image_once_per_network():
    """QC's N candidates per observation: the actor and the critic each encode the B images once
    and repeat the features N times (not B * N images through the convolutions)."""
    from agents import get_agent
    import configs.qc
    B, N = 2, 8
    obs = _pixel_obs(B=B)
    config = configs.qc.get_config()
    config.action_dim, config.num_samples = 2, N
    config.actor.hidden_dims = config.critic_hidden_dims = (16,)
    config.actor.flow_steps = 3
    config.encoder.name, config.encoder.mlp_dims = "impala_debug", (8,)
    batch = {"observations": obs, "actions": jnp.zeros((B, config.horizon, 2))}
    agent = get_agent("qc").create(0, batch, config)
    convs = _convolutions(lambda: agent.best_of_n(agent.critic.params, obs, jax.random.PRNGKey(0)))
    assert [b for b, _ in convs] == [B] * 4          # two conv layers each in the actor's and the critic's encoder
