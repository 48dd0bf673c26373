"""Training loop: frozen spatial weights, falling loss, objectives, exact resume, bad resumes, EMA, pipeline loading."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from einops import rearrange

from kvideo.checkpoint import CheckpointError
from kvideo.diffusion import cosine_schedule, sample_timesteps
from kvideo.models.unet import UNet
from kvideo.train import checkpointing as ckpt
from kvideo.train.cache import LatentCache, collate_cached
from kvideo.train.distributed import DistEnv
from kvideo.train.interpolation import interpolation_loss, split_clip
from kvideo.train.keyframe import keyframe_loss
from kvideo.train.seeding import seeded_generator
from kvideo.train.tracking import read_log
from kvideo.train.trainer import EMA, Trainer, train
from test_train_helpers import (  # noqa: F401 (fixtures)
    keyframe_setup, make_cache, one_thread, save_unet, train_config, videos,
)


def run(cfg) -> Trainer:
    trainer = Trainer(cfg, DistEnv())
    trainer.run()
    return trainer


def split_state(model) -> tuple[dict, dict]:
    temporal = set(model.temporal_state_dict())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return ({k: v for k, v in state.items() if k not in temporal}, {k: v for k, v in state.items() if k in temporal})


# -- what is trained ------------------------------------------------------------------------------
def test_spatial_weights_stay_bit_for_bit_and_temporal_ones_change(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    spatial, temporal = split_state(UNet.from_pretrained(unet_path))
    trainer = run(train_config(tmp_path, model=str(unet_path), data=str(cache), steps=3, save_every=3))
    new_spatial, new_temporal = split_state(trainer.task.model)
    assert all(torch.equal(spatial[k], new_spatial[k]) for k in spatial)
    changed = [k for k in temporal if not torch.equal(temporal[k], new_temporal[k])]
    assert len(changed) == len(temporal), sorted(set(temporal) - set(changed))[:5]


def test_training_everything_changes_spatial_weights_too(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    spatial, _ = split_state(UNet.from_pretrained(unet_path))
    trainer = run(train_config(tmp_path, model=str(unet_path), data=str(cache), steps=1, train="all"))
    assert not torch.equal(spatial["in_layer.weight"], trainer.task.model.state_dict()["in_layer.weight"])
    assert ckpt.read_weights(trainer.output_dir / "keyframe-all.safetensors")[2].weights == "all"
    assert UNet.from_pretrained(trainer.output_dir / "keyframe-all.safetensors").config == trainer.task.model.config


def fixed_loss(model, cache_folder, null, repeats: int = 16) -> float:
    """The keyframe loss over the cache, each clip at `repeats` fixed (timestep, noise) draws, no text dropout."""
    cache, schedule = LatentCache(cache_folder), cosine_schedule(1000)
    batch = collate_cached([cache[i] for i in range(len(cache))] * repeats)
    with torch.no_grad():
        return float(keyframe_loss(model.eval(), batch, seeded_generator(7), schedule=schedule, null_embedding=null,
                                   uncond_prob=0.0))


def test_loss_falls_on_a_tiny_synthetic_video_set(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    null = UNet.read_checkpoint(unet_path).extras["null_embedding"]
    before = fixed_loss(UNet.from_pretrained(unet_path), cache, null)
    trainer = run(train_config(tmp_path, model=str(unet_path), data=str(cache), steps=25, save_every=25, lr=1e-2,
                               batch_size=2))
    after = fixed_loss(trainer.task.model, cache, null)
    # temporal layers on a random spatial UNet: a 6 % fall in 25 steps (a wrong target or sign rises)
    assert after < 0.96 * before, (before, after)
    log = read_log(trainer.output_dir)
    assert [r["step"] for r in log] == list(range(1, 26))
    assert all(r["samples_per_s"] > 0 and r["memory_gb"] > 0 and r["lr"] == 1e-2 for r in log)


# -- objectives -----------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """Returns the exact eps (or v) from the clean latents it is given: the loss must then be ~0."""

    def __init__(self, x0, schedule, target, between=3):
        super().__init__()
        self.x0, self.schedule, self.target, self.between, self.calls = x0, schedule, target, between, []

    def forward(self, x, time, context, mask, **kwargs):
        self.calls.append(dict(x=x, time=time, context=context, mask=mask, **kwargs))
        alpha_bar = self.schedule.alphas_cumprod[time].float()[:, None, None, None, None]
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        if self.target == "eps":
            return (x - a * self.x0) / s
        c = 4
        middle = x[:, c:-c]
        eps = (middle - a * self.x0) / s
        return a * eps - s * self.x0


def test_keyframe_objective_is_eps_with_frame_positions_and_text_dropout():
    schedule, x0 = cosine_schedule(1000), torch.randn(2, 4, 3, 8, 8)
    batch = {"latents": x0, "context": torch.randn(2, 5, 6), "context_mask": torch.ones(2, 5, dtype=torch.bool),
             "step": torch.tensor([12, 12])}
    null = torch.randn(6)
    oracle = Oracle(x0, schedule, "eps")
    loss = keyframe_loss(oracle, batch, seeded_generator(0), schedule=schedule, null_embedding=null, uncond_prob=0.0)
    assert float(loss) < 1e-8
    call = oracle.calls[-1]
    assert call["frame_positions"].tolist() == [[0, 12, 24]] * 2 and torch.equal(call["context"], batch["context"])
    keyframe_loss(oracle, batch, seeded_generator(0), schedule=schedule, null_embedding=null, uncond_prob=1.0)
    call = oracle.calls[-1]
    assert torch.equal(call["context"][:, 0], null.expand(2, -1)) and call["context"][:, 1:].abs().sum() == 0
    assert call["mask"].tolist() == [[True, False, False, False, False]] * 2


def test_keyframe_objective_targets_v_for_a_v_predicting_unet():
    schedule, x0 = cosine_schedule(1000), torch.randn(2, 4, 3, 8, 8)
    batch = {"latents": x0, "context": torch.randn(2, 5, 6), "context_mask": torch.ones(2, 5, dtype=torch.bool),
             "step": torch.tensor([12, 12])}
    args = dict(schedule=schedule, null_embedding=torch.randn(6), uncond_prob=0.0)

    def v_oracle(x, time, context, mask, **kwargs):
        alpha_bar = schedule.alphas_cumprod[time].float()[:, None, None, None, None]
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0

    assert float(keyframe_loss(v_oracle, batch, seeded_generator(0), prediction="v", **args)) < 1e-8
    assert float(keyframe_loss(v_oracle, batch, seeded_generator(0), prediction="eps", **args)) > 0.1
    with pytest.raises(ValueError, match="prediction='x0'"):
        keyframe_loss(v_oracle, batch, seeded_generator(0), prediction="x0", **args)


def test_min_snr_weighting_reweights_each_sample_of_the_objectives():
    from kvideo.diffusion import min_snr_weights

    schedule, x0 = cosine_schedule(1000), torch.randn(16, 4, 3, 8, 8)
    batch = {"latents": x0, "context": torch.randn(16, 5, 6), "context_mask": torch.ones(16, 5, dtype=torch.bool),
             "step": torch.tensor([12] * 16)}

    def wrong(x, time, context, mask, **kwargs):  # a model off by a different amount per sample
        return torch.arange(1.0, 17.0)[:, None, None, None, None].expand_as(x).clone()

    args = dict(schedule=schedule, null_embedding=torch.randn(6), uncond_prob=0.0)
    plain = keyframe_loss(wrong, batch, seeded_generator(3), **args)
    assert torch.equal(keyframe_loss(wrong, batch, seeded_generator(3), snr_gamma=0.0, **args), plain)
    weighted = keyframe_loss(wrong, batch, seeded_generator(3), snr_gamma=5.0, **args)
    generator = seeded_generator(3)  # the draws keyframe_loss makes: t first, then the noise
    t = torch.randint(1000, (16,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    per_sample = (torch.arange(1.0, 17.0)[:, None, None, None, None] - noise).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(plain, per_sample.mean())
    torch.testing.assert_close(weighted, (per_sample * min_snr_weights(schedule, t, 5.0)).mean())
    assert (min_snr_weights(schedule, t, 5.0) < 1).any() and weighted < plain  # a damped low-noise draw


def test_detail_weight_weights_the_object_latents_of_the_keyframe_objective():
    from kvideo.train.keyframe import latent_detail_weights

    x0 = torch.zeros(2, 4, 3, 8, 8)
    x0[:, :, :, 2:5, 3:6] = 0.5  # an object on a plain background
    x0[:, 1, :, 2:5, 3:6] = -0.8
    weights = latent_detail_weights(x0, 10.0)
    assert weights.shape == (2, 1, 3, 8, 8)
    assert torch.equal(weights[:, :, :, 2:5, 3:6], torch.full((2, 1, 3, 3, 3), 9.0))  # 1 + 10 x 0.8
    weights[:, :, :, 2:5, 3:6] = 1
    assert torch.equal(weights, torch.ones_like(weights))  # the background keeps weight 1
    schedule = cosine_schedule(1000)
    batch = {"latents": x0, "context": torch.randn(2, 5, 6), "context_mask": torch.ones(2, 5, dtype=torch.bool),
             "step": torch.tensor([12, 12])}

    def wrong(x, time, context, mask, **kwargs):
        return torch.ones_like(x)

    args = dict(schedule=schedule, null_embedding=torch.randn(6), uncond_prob=0.0)
    plain = keyframe_loss(wrong, batch, seeded_generator(3), **args)
    weighted = keyframe_loss(wrong, batch, seeded_generator(3), detail_weight=10.0, **args)
    generator = seeded_generator(3)  # the draws keyframe_loss makes: t first, then the noise
    torch.randint(1000, (2,), generator=generator)
    error = (1 - torch.randn(x0.shape, generator=generator)).pow(2)
    torch.testing.assert_close(plain, error.mean())
    torch.testing.assert_close(weighted, (error * latent_detail_weights(x0, 10.0)).mean())


def test_timestep_shift_changes_only_which_steps_the_objectives_draw():
    schedule, x0 = cosine_schedule(1000), torch.randn(16, 4, 3, 8, 8)
    batch = {"latents": x0, "context": torch.randn(16, 5, 6), "context_mask": torch.ones(16, 5, dtype=torch.bool),
             "step": torch.tensor([12] * 16)}
    seen = []

    def record(x, time, context, mask, **kwargs):
        seen.append(time.clone())
        return torch.zeros_like(x)

    args = dict(schedule=schedule, null_embedding=torch.randn(6), uncond_prob=0.0)
    keyframe_loss(record, batch, seeded_generator(3), timestep_shift=3.0, **args)
    keyframe_loss(record, batch, seeded_generator(3), **args)
    expected = sample_timesteps(16, 1000, seeded_generator(3), 3.0)
    torch.testing.assert_close(seen[0], expected * schedule.time_scale)
    assert not torch.equal(seen[0], seen[1]) and seen[0].float().mean() > seen[1].float().mean()


def test_interpolation_objective_is_v_on_the_frames_between_keyframes():
    from kvideo.generation.base import weave

    schedule, latents = cosine_schedule(1000), torch.randn(2, 4, 9, 8, 8)  # 3 keyframes, 3 frames between
    keyframes, middle = split_clip(latents, 3)
    woven = weave(keyframes, rearrange(middle, "b (k c) g h w -> b c g k h w", c=4))
    assert torch.equal(woven, latents)  # the layout the pipeline reassembles
    batch = {"latents": latents, "step": torch.tensor([2, 5])}
    oracle = Oracle(middle, schedule, "v")
    args = dict(schedule=schedule, null_embedding=torch.randn(6), max_perturbation=250, between=3)
    loss = interpolation_loss(oracle, batch, seeded_generator(1), uncond_prob=0.0, **args)
    assert float(loss) < 1e-8
    call = oracle.calls[-1]
    assert call["x"].shape == (2, 20, 2, 8, 8) and call["skip_frames"].tolist() == [2, 5]
    assert ((call["perturbation_time"] >= 0) & (call["perturbation_time"] <= 250)).all()
    left, clean = call["x"][:, :4], keyframes[:, :, :-1]
    relative = float((left - clean).norm() / clean.norm())
    assert 0 < relative < 0.6  # perturbed (t_p <= 250: sigma <= 0.39), not replaced
    assert call["context"].shape == (2, 2, 6) and call["mask"].tolist() == [[True, False]] * 2
    interpolation_loss(oracle, batch, seeded_generator(1), uncond_prob=1.0, **args)
    x = oracle.calls[-1]["x"]
    assert x[:, :4].abs().sum() == 0 and x[:, -4:].abs().sum() == 0  # unconditional: keyframes zeroed
    loss = interpolation_loss(oracle, batch, seeded_generator(1), uncond_prob=0.0, timestep_shift=3.0, **args)
    expected = sample_timesteps(2, 1000, seeded_generator(1), 3.0) * schedule.time_scale
    assert float(loss) < 1e-8 and torch.equal(oracle.calls[-1]["time"], expected)  # the shifted draw, still exact


def test_interpolation_training_runs_on_its_cache(videos, tmp_path):
    cache = make_cache(tmp_path / "cache", videos, task="interpolation")
    unet_path = save_unet(tmp_path / "unet.safetensors", kind="interpolation")
    spatial, temporal = split_state(UNet.from_pretrained(unet_path))
    trainer = run(train_config(tmp_path, "interpolation", model=str(unet_path), data=str(cache), steps=2))
    new_spatial, new_temporal = split_state(trainer.task.model)
    assert all(torch.equal(spatial[k], new_spatial[k]) for k in spatial)
    assert not torch.equal(temporal["interpolation_embed.skip_merge"], new_temporal["interpolation_embed.skip_merge"])


def test_decoder_training_keeps_the_encoder_and_trains_temporal_layers(videos, tmp_path):
    cfg = train_config(tmp_path, "decoder", data=str(videos.parent), captions=str(videos), steps=2, save_every=2)
    trainer = Trainer(cfg, DistEnv())
    movq = trainer.task.model
    before = {k: v.clone() for k, v in movq.state_dict().items()}
    trainer.run()
    after = movq.state_dict()
    temporal = set(movq.temporal_state_dict())
    assert all(torch.equal(before[k], after[k]) for k in before if k not in temporal)
    assert sum(not torch.equal(before[k], after[k]) for k in temporal) > 0.5 * len(temporal)
    state, _, info = ckpt.read_weights(trainer.output_dir / "decoder-temporal.safetensors")
    assert set(state) == temporal and (info.task, info.model_type) == ("decoder", "movq")


# -- resume ---------------------------------------------------------------------------------------
class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_equals_an_uninterrupted_run(keyframe_setup, tmp_path, monkeypatch):
    cache, unet_path = keyframe_setup
    values = dict(model=str(unet_path), data=str(cache), steps=5, save_every=2, grad_accum=2, ema_decay=0.5)
    whole = run(train_config(tmp_path / "a", **values))

    original_step = Trainer.train_step

    def crash_at_four(self, batches):
        if self.step == 3:
            raise Crash("power cut")
        return original_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", crash_at_four)
    with pytest.raises(Crash):
        run(train_config(tmp_path / "b", **values))
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert (tmp_path / "b/run/checkpoints/latest").read_text().strip() == "step-00000002"  # lost: step 3 only
    with (tmp_path / "b/run/log.jsonl").open("a") as log:  # as if step 3 had been logged before the crash
        log.write('{"step": 3, "loss": 0.0}\n')
    resumed = run(train_config(tmp_path / "b", resume="latest", **values))
    assert resumed.step == 5
    for name in (ckpt.WEIGHTS_FILE, ckpt.EMA_FILE):
        a, _, _ = ckpt.read_weights(whole.output_dir / "checkpoints/step-00000005" / name)
        b, _, _ = ckpt.read_weights(resumed.output_dir / "checkpoints/step-00000005" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state_a = ckpt.load_state(whole.output_dir / "checkpoints/step-00000005" / ckpt.STATE_FILE)
    state_b = ckpt.load_state(resumed.output_dir / "checkpoints/step-00000005" / ckpt.STATE_FILE)
    moments = [(s["optimizer"]["state"][0]["exp_avg"]) for s in (state_a, state_b)]
    assert torch.equal(*moments) and state_b["data"] == {"micro_batches": 10}
    logs = [read_log(trainer.output_dir) for trainer in (whole, resumed)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5]  # the redone step 3 is logged once
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]


def test_weights_written_before_a_config_field_existed_still_load(keyframe_setup, tmp_path):
    import json

    model = UNet.from_pretrained(keyframe_setup[1])
    stored = {k: v for k, v in model.config.to_dict().items() if k != "prediction"}  # as files of older versions
    info = ckpt.WeightsInfo("unet", json.dumps(stored), "keyframe", "temporal", 1)
    ckpt.save_weights(tmp_path / "old.safetensors", model.temporal_state_dict(), info)
    assert ckpt.load_trained_weights(model, tmp_path / "old.safetensors").step == 1
    v_model = UNet(dataclasses.replace(model.config, prediction="v"))  # the default it reads as is eps
    with pytest.raises(CheckpointError, match=r"config fields \['prediction'\]"):
        ckpt.load_trained_weights(v_model, tmp_path / "old.safetensors")
    newer = {**stored, "a_future_field": 1}
    ckpt.save_weights(tmp_path / "new.safetensors", model.temporal_state_dict(),
                      ckpt.WeightsInfo("unet", json.dumps(newer), "keyframe", "temporal", 1))
    with pytest.raises(CheckpointError, match="a_future_field"):
        ckpt.load_trained_weights(model, tmp_path / "new.safetensors")


def test_resuming_from_another_model_fails_before_training(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    run(train_config(tmp_path / "small", model=str(unet_path), data=str(cache), steps=1))
    other = save_unet(tmp_path / "wide.safetensors", model_channels=32, init_channels=32)
    folder = tmp_path / "small/run/checkpoints/step-00000001"
    fields = r"another architecture: config fields \['init_channels', 'model_channels'\]"
    with pytest.raises(CheckpointError, match=fields):
        Trainer(train_config(tmp_path / "wide", model=str(other), data=str(cache), resume=str(folder)), DistEnv())
    with pytest.raises(ValueError, match="holds temporal weights of a keyframe unet"):
        Trainer(train_config(tmp_path / "all", model=str(unet_path), data=str(cache), resume=str(folder), train="all"),
                DistEnv())
    with pytest.raises(FileNotFoundError, match="not a training checkpoint folder"):
        Trainer(train_config(tmp_path / "x", model=str(unet_path), data=str(cache), resume=str(tmp_path)), DistEnv())
    assert not (tmp_path / "wide/run").exists()


def test_caption_pattern_trains_on_the_matching_clips_only(keyframe_setup, tmp_path, capsys):
    cache, unet_path = keyframe_setup
    trainer = run(train_config(tmp_path, model=str(unet_path), data=str(cache), steps=2, caption_pattern="green|blue"))
    batches = trainer.batches()
    seen = {caption for _ in range(6) for caption in next(batches)["caption"]}
    assert seen == {"a green square moving right", "a blue square moving right"}
    assert f"{len(trainer.task.dataset)} of {len(LatentCache(cache))} samples match caption_pattern='green|blue'" \
        in capsys.readouterr().err
    with pytest.raises(ValueError, match="caption_pattern='purple' matches none of the"):
        Trainer(train_config(tmp_path / "none", model=str(unet_path), data=str(cache), caption_pattern="purple"),
                DistEnv())
    assert not (tmp_path / "none/run").exists()


def test_init_weights_start_a_run_where_an_earlier_one_ended(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    first = run(train_config(tmp_path / "first", model=str(unet_path), data=str(cache), steps=2, ema_decay=0.0))
    export = first.output_dir / "keyframe-temporal.safetensors"
    second = Trainer(train_config(tmp_path / "second", model=str(unet_path), data=str(cache), init_weights=str(export)),
                     DistEnv())
    trained = first.task.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in second.task.model.state_dict().items())
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="init_weights .*nowhere.safetensors' does not exist"):
        train(train_config(tmp_path / "x", model=str(unet_path), data=str(cache), init_weights=str(missing)))
    wide = save_unet(tmp_path / "wide.safetensors", model_channels=32, init_channels=32)
    with pytest.raises(CheckpointError, match="for another architecture: config fields .'init_channels'"):
        Trainer(train_config(tmp_path / "y", model=str(wide), data=str(cache), init_weights=str(export)), DistEnv())


def test_a_cache_of_another_task_is_an_error(videos, tmp_path):
    cache = make_cache(tmp_path / "cache", videos, task="interpolation")
    with pytest.raises(ValueError, match="built for task='interpolation', not 'keyframe'"):
        Trainer(train_config(tmp_path, model=str(save_unet(tmp_path / "u.safetensors")), data=str(cache)), DistEnv())


# -- precision, EMA, loading the result ---------------------------------------------------------------
def test_bf16_autocast_with_gradient_checkpointing(keyframe_setup, tmp_path):
    cache, unet_path = keyframe_setup
    trainer = run(train_config(tmp_path, model=str(unet_path), data=str(cache), steps=2, precision="bf16",
                               gradient_checkpointing=True))
    losses = [r["loss"] for r in read_log(trainer.output_dir)]
    assert trainer.task.model.gradient_checkpointing and all(0 < loss < 10 for loss in losses)
    assert all(p.dtype == torch.float32 for p in trainer.task.model.parameters())  # float32 master weights


def test_ema_follows_the_parameters():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA({"p": p}, decay=0.5)
    for value in (1.0, 2.0):
        p.data.fill_(value)
        ema.update({"p": p})
    assert torch.equal(ema.state_dict()["p"], torch.full((3,), 0.5 * (0.5 * 0 + 0.5 * 1) + 0.5 * 2))


def test_ema_warms_up_so_short_runs_export_what_they_learned():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA({"p": p}, decay=0.999)
    assert ema.decay_at(1) == 2 / 11 and ema.decay_at(10**6) == 0.999 and ema.decay_at(None) == 0.999
    p.data.fill_(1.0)
    for step in range(1, 601):  # a zero-initialised weight that reached 1 at once
        ema.update({"p": p}, step)
    assert ema.state_dict()["p"].min() > 0.98  # a fixed 0.999 would give 1 - 0.999**600 = 0.45


def test_trained_temporal_weights_load_into_a_full_model_and_the_pipeline(keyframe_setup, tmp_path):
    from kvideo import KVideoPipeline

    cache, _ = keyframe_setup
    full_size = save_unet(tmp_path / "unet.safetensors", dim_mult=(1, 2, 4, 8), num_blocks=(3, 3, 3, 3),
                          add_cross_attention=(False, True, True, True), add_self_attention=(False, True, True, True))
    result = train(train_config(tmp_path, model=str(full_size), data=str(cache), steps=1, tensorboard=False))
    trained, _, info = ckpt.read_weights(result.weights)
    assert info.weights == "temporal" and result.weights.stat().st_size < full_size.stat().st_size

    model = UNet.from_pretrained(full_size)
    ckpt.load_trained_weights(model, result.weights)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())

    pipeline = KVideoPipeline.from_preset("tiny", progress=False)
    options = dict(width=64, height=64, fps="low", steps=2, seed=0, num_frames=2)
    before = pipeline("a red square moving right", **options).latents
    ckpt.load_into_pipeline(pipeline, result.weights)
    state = pipeline.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    assert not torch.equal(before, pipeline("a red square moving right", **options).latents)
    small = UNet.from_pretrained(keyframe_setup[1])
    info = ckpt.WeightsInfo("unet", small.config.to_json(), "keyframe", "temporal", 1)
    ckpt.save_weights(tmp_path / "small.safetensors", small.temporal_state_dict(), info)
    with pytest.raises(CheckpointError, match="another architecture"):
        ckpt.load_into_pipeline(pipeline, tmp_path / "small.safetensors")
