"""Training stages added for training from scratch: image MoVQ, text-to-image UNet, keyframe UNet inflated
from it, video decoder inflated from an image MoVQ, and the word-level text encoder."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kvideo.models.movq import MoVQ
from kvideo.models.unet import UNet, UNetConfig
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets
from kvideo.text import TextProjection
from kvideo.train import checkpointing as ckpt
from kvideo.train.config import ClipConfig, TrainConfig
from kvideo.train.distributed import DistEnv
from kvideo.train.movq import moment_penalty
from kvideo.train.trainer import Trainer
from test_train_helpers import keyframe_setup, make_cache, one_thread, save_unet, videos  # noqa: F401 (fixtures)

BASE = dict(steps=3, save_every=3, progress=False, tensorboard=False, precision="fp32", num_workers=0, log_every=1)


def run(tmp_path, task: str, **values) -> Trainer:
    clip = values.pop("clip")
    cfg = TrainConfig(task=task, output_dir=str(tmp_path / task), clip=clip, **(BASE | values))
    trainer = Trainer(cfg, DistEnv())
    trainer.run()
    return trainer


def movq_clip(task: str = "movq", frames: int = 2) -> ClipConfig:
    return ClipConfig(task=task, decoder_frames=frames, decoder_step=4, height=64, width=64)


@pytest.fixture(scope="module")
def image_movq(tmp_path_factory, videos):
    """An image MoVQ trained 3 steps from scratch by the movq task."""
    folder = tmp_path_factory.mktemp("movq")
    cfg = TrainConfig(task="movq", model_preset="tiny", train="all", data=str(videos.parent), captions=str(videos),
                      output_dir=str(folder / "run"), clip=movq_clip(), lr=1e-3, **BASE)
    trainer = Trainer(cfg, DistEnv())
    before = {k: v.clone() for k, v in trainer.task.model.state_dict().items()}
    result = trainer.run()
    return result.weights, before, trainer


def test_movq_task_trains_encoder_and_decoder_from_scratch(image_movq):
    weights, before, trainer = image_movq
    after = trainer.task.model.state_dict()
    for prefix in ("encoder.", "decoder.", "quant_conv.", "post_quant_conv."):
        keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
        assert any(not torch.equal(before[k], after[k]) for k in keys), prefix
    movq = MoVQ.from_pretrained(weights)  # a trained-weights file of train=all is a full checkpoint
    assert not movq.config.is_video and weights.name == "movq-all.safetensors"


def test_moment_penalty_is_zero_for_standardised_latents_and_grows_otherwise():
    z = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    standard = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True)
    assert moment_penalty(standard) < 1e-10
    assert moment_penalty(3 * standard) > 60 and moment_penalty(standard + 1) > 0.99


def test_movq_and_image_tasks_refuse_temporal_training(videos, tmp_path):
    with pytest.raises(ValueError, match="no temporal layers; use train=all"):
        run(tmp_path, "movq", model_preset="tiny", train="temporal", data=str(videos.parent), captions=str(videos),
            clip=movq_clip())
    with pytest.raises(ValueError, match="no temporal layers; use train=all"):
        run(tmp_path, "image", model_preset="tiny-image", train="temporal", data="unused",
            clip=ClipConfig(task="image"))


def test_decoder_task_inflates_an_image_movq(image_movq, videos, tmp_path):
    weights, _, _ = image_movq
    image = MoVQ.from_pretrained(weights)
    trainer = run(tmp_path, "decoder", model=str(weights), model_preset="tiny-video", train="temporal",
                  data=str(videos.parent), captions=str(videos), clip=movq_clip("decoder", frames=3))
    video = trainer.task.model
    assert video.config.is_video and video.config.channels == image.config.channels
    spatial = {k: v for k, v in video.state_dict().items() if k not in video.temporal_state_dict()}
    assert all(torch.equal(v, image.state_dict()[k]) for k, v in spatial.items())  # frozen, inherited
    with pytest.raises(ValueError, match="trains a video MoVQ; the model is an image MoVQ"):
        run(tmp_path / "b", "decoder", model=str(weights), train="temporal", data=str(videos.parent),
            captions=str(videos), clip=movq_clip("decoder", frames=3))


def test_decoder_latent_noise_trains_on_noisy_latents_and_all_of_the_decoder(image_movq, videos, tmp_path):
    from kvideo.train.decoder import Reconstruction, decoder_loss

    weights, _, _ = image_movq
    trainer = run(tmp_path, "decoder", model=str(weights), model_preset="tiny-video", train="all", steps=1,
                  latent_noise=0.2, data=str(videos.parent), captions=str(videos), clip=movq_clip("decoder", frames=3))
    movq = trainer.task.model
    assert not any(p.requires_grad for p in movq.encoder.parameters())  # latents stay those of the caches
    assert all(p.requires_grad for p in movq.decoder.parameters())
    module = Reconstruction(movq.eval())
    frames = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        clean = module(frames)
        torch.testing.assert_close(module(frames, torch.zeros(2)), clean)  # zero std: exact latents
        noisy = module(frames, torch.tensor([0.0, 0.5]), torch.Generator().manual_seed(0))
        torch.testing.assert_close(noisy[0], clean[0])  # each clip its own std
        assert (noisy[1] - clean[1]).abs().max() > 1e-3
        batch = {"frames": frames}
        plain = decoder_loss(module, batch, torch.Generator().manual_seed(1), kind="l1")
        assert decoder_loss(module, batch, torch.Generator().manual_seed(1), kind="l1", latent_noise=0.0) == plain
        assert decoder_loss(module, batch, torch.Generator().manual_seed(1), kind="l1", latent_noise=1.0) != plain
    with pytest.raises(ValueError, match="latent_noise=-0.1 must be >= 0"):
        TrainConfig(task="decoder", clip=ClipConfig(task="decoder"), latent_noise=-0.1)


@pytest.fixture(scope="module")
def image_unet(tmp_path_factory, keyframe_setup):
    """A text-to-image UNet trained 3 steps by the image task on the keyframe cache."""
    cache, _ = keyframe_setup
    folder = tmp_path_factory.mktemp("image")
    start = save_unet(folder / "init.safetensors", kind="image")
    checkpoint = UNet.read_checkpoint(start)  # add a text projection (T5 d_model 16), as `kvideo recipe` does
    projection = TextProjection(16, checkpoint.config.context_dim).state_dict()
    projection = {f"projections.{k}": v for k, v in projection.items()}
    UNet.from_checkpoint(checkpoint).save_pretrained(start, extras={**checkpoint.extras, **projection})
    cfg = TrainConfig(task="image", model=str(start), train="all", data=str(cache), output_dir=str(folder / "run"),
                      clip=ClipConfig(task="image"), lr=1e-3, **BASE)
    trainer = Trainer(cfg, DistEnv())
    before = {k: v.clone() for k, v in trainer.task.model.state_dict().items()}
    return trainer.run().weights, before, trainer


def test_image_task_trains_the_spatial_unet_and_keeps_the_extras(image_unet):
    weights, before, trainer = image_unet
    after = trainer.task.model.state_dict()
    assert trainer.task.model.config.kind == "image"
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2
    checkpoint = UNet.read_checkpoint(weights)
    assert checkpoint.config.kind == "image" and "null_embedding" in checkpoint.extras


def test_keyframe_task_inflates_an_image_unet(image_unet, keyframe_setup, tmp_path):
    weights, _, _ = image_unet
    cache, _ = keyframe_setup
    image = UNet.from_pretrained(weights)
    trainer = run(tmp_path, "keyframe", model=str(weights), train="temporal", data=str(cache),
                  clip=ClipConfig(task="keyframe", keyframes=3, height=64, width=64))
    video = trainer.task.model
    assert video.config.kind == "keyframe" and video.config.model_channels == image.config.model_channels
    state = video.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in image.state_dict().items())  # spatial weights frozen
    info = ckpt.read_weights(trainer.output_dir / "keyframe-temporal.safetensors")[2]
    assert info.weights == "temporal" and info.task == "keyframe"
    with pytest.raises(ValueError, match="model_preset='shapes-keyframe' cannot inflate"):
        run(tmp_path / "c", "keyframe", model=str(weights), model_preset="shapes-keyframe", train="temporal",
            data=str(cache), clip=ClipConfig(task="keyframe", keyframes=3, height=64, width=64))
    # the interpolation task cannot start from an image UNet
    with pytest.raises(ValueError, match="an image UNet; task='interpolation' needs an interpolation UNet"):
        run(tmp_path / "b", "interpolation", model=str(weights), train="all", data=str(cache),
            clip=ClipConfig(task="interpolation", keyframes=3, max_skip=2))


def test_inflation_takes_the_temporal_layout_of_a_keyframe_preset():
    from kvideo.train.task import inflated_config

    image = UNetConfig.preset("shapes-image")
    assert inflated_config(image, "") == dataclasses.replace(image, kind="keyframe")
    assert inflated_config(image, "shapes-keyframe") == UNetConfig.preset("shapes-keyframe")
    assert inflated_config(image, "shapes-keyframe").frame_conditioning == "all"
    with pytest.raises(ValueError, match="model_preset='tiny-keyframe' cannot inflate .*model_channels"):
        inflated_config(image, "tiny-keyframe")


def test_word_level_t5_reads_the_words_it_knows(tmp_path):
    from kvideo.text import load_t5_encoder, write_word_t5

    write_word_t5(tmp_path, ["a", "red", "blue", "circle"], d_model=16, num_layers=1)
    encoder, tokenizer = load_t5_encoder(tmp_path)
    ids = tokenizer(["a Red circle", "a blue circle", "a purple circle"])["input_ids"]
    assert ids[0][1] != ids[1][1] and ids[0][0] == ids[1][0] and ids[0][-1] == 1  # one token a word, then </s>
    assert ids[2][1] == tokenizer.unk_token_id
    assert encoder.config.d_model == 16


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    from kvideo.shapes.render import render_dataset

    return render_dataset(tmp_path_factory.mktemp("shapes"), 6, seed=0, size=64, seconds=2.0, progress=False)


def test_detector_task_trains_an_i3d_on_shape_and_motion_classes(shapes_set, videos, tmp_path):
    from kvideo.eval.i3d import InceptionI3d
    from kvideo.shapes.detector import caption_labels, shape_motion_classes

    assert len(shape_motion_classes()) == 12
    assert caption_labels(["a red square moving up on a gray background"]).tolist() == [
        shape_motion_classes().index("square up")]
    clip = ClipConfig(task="detector", decoder_frames=10, decoder_step=3, height=64, width=64)
    trainer = run(tmp_path, "detector", model_preset="tiny", train="all", data=str(shapes_set.parent),
                  captions=str(shapes_set), clip=clip, batch_size=2)
    detector = InceptionI3d.from_pretrained(trainer.output_dir / "detector-all.safetensors")
    assert detector.config.num_classes == 12 and detector.config.input_size == 64
    assert not detector.training  # loaded for evaluation: running statistics, not batch ones
    assert detector.Conv3d_1a_7x7.bn.running_var.ne(1).any()  # batch norm statistics were learned
    with pytest.raises(ValueError, match="outside the shapes grammar"):
        run(tmp_path / "b", "detector", model_preset="tiny", train="all", data=str(videos.parent),
            captions=str(videos), clip=clip)


def test_movq_crops_are_windows_of_the_frames_and_sizes_are_checked(videos, tmp_path):
    from kvideo.train.movq import random_crop
    from kvideo.train.seeding import seeded_generator

    images = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    crop = random_crop(images, 8, seeded_generator(1))
    assert crop.shape == (2, 3, 8, 8)
    top, left = divmod(int(crop[0, 0, 0, 0]), 24)
    assert torch.equal(crop, images[..., top:top + 8, left:left + 8])
    assert random_crop(images, 0, seeded_generator(1)) is images
    with pytest.raises(ValueError, match="crop_size=12 must be 0"):
        TrainConfig(task="movq", crop_size=12, clip=movq_clip())
    with pytest.raises(ValueError, match="larger than the 64x64 clips"):
        TrainConfig(task="movq", crop_size=128, clip=movq_clip())
    trainer = run(tmp_path, "movq", model_preset="tiny", train="all", data=str(videos.parent), captions=str(videos),
                  clip=movq_clip(), crop_size=32)
    assert trainer.step == 3


def test_recipe_assembles_a_model_folder_the_pipeline_loads(image_unet, image_movq, keyframe_setup, videos, tmp_path):
    """The recipe's last stage on tiny stand-ins of every stage's output: full fp16 models + model card."""
    from kvideo import KVideoPipeline
    from kvideo.shapes.recipe import assemble_model, measure_latent_range, write_model_card
    from kvideo.text import write_word_t5
    from kvideo.train.cache import LatentCache

    image, _, _ = image_unet
    movq, _, _ = image_movq
    cache, _ = keyframe_setup
    keyframe = run(tmp_path, "keyframe", model=str(image), train="temporal", data=str(cache), steps=1,
                   clip=ClipConfig(task="keyframe", keyframes=3, height=64, width=64)).task.model
    interpolation_cache = make_cache(tmp_path / "icache", videos, task="interpolation")
    run(tmp_path, "interpolation", model_preset="tiny-interpolation", train="all", data=str(interpolation_cache),
        steps=1, clip=ClipConfig(task="interpolation", keyframes=3, max_skip=2, height=64, width=64))
    run(tmp_path, "decoder", model=str(movq), model_preset="tiny-video", train="temporal", steps=1,
        data=str(videos.parent), captions=str(videos), clip=movq_clip("decoder", frames=3))
    write_word_t5(tmp_path / "t5", ["a", "red", "circle"], d_model=16, num_layers=1)
    folder = assemble_model(tmp_path / "model", image=image, movq=movq, text_encoder=tmp_path / "t5",
                            keyframe=tmp_path / "keyframe/keyframe-temporal.safetensors",
                            interpolation=tmp_path / "interpolation/interpolation-all.safetensors",
                            decoder=tmp_path / "decoder/decoder-temporal.safetensors")
    latent_range = measure_latent_range(cache)
    write_model_card(folder, latent_range=latent_range)
    pipe = KVideoPipeline.from_pretrained(folder, progress=False)
    assert pipe.card["name"] == "shapes" and pipe.card["generation"]["width"] == 64
    assert pipe.card["generation"]["latent_range"] == latent_range
    cached = torch.stack([sample["latents"].float() for sample in LatentCache(cache)]).transpose(0, 1)
    low, high = torch.tensor(latent_range[0]), torch.tensor(latent_range[1])
    assert (cached.reshape(len(low), -1).min(dim=1).values >= low).all() and (low > -10).all()
    assert (cached.reshape(len(high), -1).max(dim=1).values <= high).all() and (high - low <= 20).all()
    state = pipe.unet.state_dict()
    assert all(torch.equal(v.half().float(), state[k]) for k, v in keyframe.state_dict().items())  # stored fp16
    video = pipe("a red circle", fps="medium", seed=0, steps=2, interpolation_steps=2)  # 64x64 from the card
    assert video.frames.shape == (57, 64, 64, 3)


def test_learning_rate_schedules():
    from kvideo.train.trainer import lr_factor

    assert [lr_factor(s, 100, 10, "constant", 0.1) for s in (0, 4, 9, 10, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cosine = [lr_factor(s, 110, 10, "cosine", 0.1) for s in range(110)]
    assert cosine[:10] == [(s + 1) / 10 for s in range(10)] and cosine[10] == 1.0
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))  # decays monotonically
    assert abs(cosine[60] - 0.55) < 1e-9 and abs(lr_factor(110, 110, 10, "cosine", 0.1) - 0.1) < 1e-9
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        TrainConfig(lr_schedule="linear")


def test_detail_weights_emphasise_pixels_far_from_the_median_colour():
    from kvideo.train.movq import detail_weights

    images = torch.full((1, 3, 8, 8), -0.5)
    images[0, :, 2:4, 2:4] = torch.tensor([0.5, -0.5, 1.0])[:, None, None]  # a small object
    weights = detail_weights(images, 10.0)
    assert weights.shape == (1, 1, 8, 8)
    assert torch.allclose(weights[0, 0, 2:4, 2:4], torch.full((2, 2), 16.0))  # 1 + 10 * max(1, 0, 1.5)
    assert torch.equal(weights[0, 0, 5:, 5:], torch.ones(3, 3))  # the background keeps weight 1
    with pytest.raises(ValueError, match="detail_weight=-1"):
        TrainConfig(task="movq", detail_weight=-1, clip=movq_clip())


def test_latent_scale_scales_the_latents_and_nothing_else():
    from kvideo.models.movq import MoVQConfig

    torch.manual_seed(0)
    plain = MoVQ(MoVQConfig.preset("tiny")).eval()
    scaled = MoVQ(MoVQConfig.preset("tiny", latent_scale=0.25)).eval()
    scaled.load_state_dict(plain.state_dict())
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(scaled.encode(frames), 0.25 * plain.encode(frames))
        assert torch.allclose(scaled.decode(scaled.encode(frames)), plain.decode(plain.encode(frames)), atol=1e-5)
    with pytest.raises(ValueError, match="latent_scale=0"):
        MoVQConfig(latent_scale=0)


def test_recipe_calibrates_the_movq_latents_to_the_samplers_range(image_movq, shapes_set, tmp_path):
    import shutil

    from kvideo.shapes.recipe import calibrate_latent_scale
    from kvideo.train.data import cover_crop_frames, read_captions
    from kvideo.video_io import read_frames

    weights = tmp_path / "movq.safetensors"
    shutil.copy(image_movq[0], weights)
    scale = calibrate_latent_scale(weights, shapes_set, clips=4, target_std=0.4)
    movq = MoVQ.from_pretrained(weights)
    assert movq.config.latent_scale == scale != 1.0
    frames = np.concatenate([read_frames(p, [0, 20, 40]) for p, _ in read_captions(shapes_set)[:4]])
    with torch.no_grad():
        std = float(movq.encode(cover_crop_frames(frames, 64, 64).transpose(0, 1)).std())
    assert abs(std - 0.4) < 0.1  # other frames of the same clips than the calibration's
    assert calibrate_latent_scale(weights, shapes_set) == scale  # calibrated once


def test_the_calibrated_latent_std_survives_the_samplers_thresholding():
    from kvideo.diffusion import dynamic_threshold
    from kvideo.shapes.recipe import LATENT_STD

    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4, 8, 8, 8, generator=generator) * LATENT_STD
    unit = torch.randn(4, 8, 8, 8, generator=generator)
    clipped = dynamic_threshold(calibrated)
    assert (clipped != calibrated).float().mean() < 0.02 and clipped.std() > 0.97 * calibrated.std()  # the tails only
    assert dynamic_threshold(unit).std() < 0.6 * unit.std()  # unit-variance latents are squashed


@pytest.mark.parametrize("stage, train", [("keyframe", "temporal"), ("keyframe-all", "all")])
def test_recipe_keyframe_stages_chain_their_phases(tmp_path, monkeypatch, stage, train):
    """Each keyframe stage: four captions at the noisiest steps, the whole set there, then every step,
    each run started from the weights the one before exported."""
    import re

    from kvideo.shapes.grammar import all_captions
    from kvideo.shapes.recipe import Recipe

    runs = []

    def fake_train(self, cfg):
        runs.append(cfg)
        return {"weights": f"{cfg.output_dir}/export.safetensors", "steps": cfg.steps}

    monkeypatch.setattr(Recipe, "_train", fake_train)
    record = getattr(Recipe(tmp_path, progress=False), f"stage_{stage.replace('-', '_')}")()
    assert [cfg.output_dir for cfg in runs] == [str(tmp_path / f"{stage}-motion"), str(tmp_path / f"{stage}-noisy"),
                                                str(tmp_path / stage)]
    assert [cfg.init_weights for cfg in runs] == ["", f"{runs[0].output_dir}/export.safetensors",
                                                  f"{runs[1].output_dir}/export.safetensors"]
    assert [cfg.timestep_shift for cfg in runs] == [1000.0, 1000.0, 12.0]
    assert {cfg.train for cfg in runs} == {train}
    assert {cfg.model for cfg in runs} == {str(tmp_path / "image/image-all.safetensors")}
    motion = [c.text for c in all_captions() if re.search(runs[0].caption_pattern, c.text)]
    assert sorted(motion) == [f"a red circle moving {d} on a black background" for d in ("down", "left", "right", "up")]
    assert runs[1].caption_pattern == runs[2].caption_pattern == ""
    assert record["weights"] == f"{runs[2].output_dir}/export.safetensors"
    assert list(record["phases"]) == [f"shapes-{stage}-motion", f"shapes-{stage}-noisy"]


def test_recipe_keyframe_detail_fine_tunes_keyframe_all_at_low_noise(tmp_path, monkeypatch):
    """The shipped keyframe model: keyframe-all's export trained on, with its steps drawn mostly at low noise."""
    from kvideo.diffusion import sample_timesteps
    from kvideo.shapes.presets import STAGES
    from kvideo.shapes.recipe import SHIPPED_KEYFRAME, Recipe

    runs = []
    monkeypatch.setattr(Recipe, "_train", lambda self, cfg: runs.append(cfg) or {"weights": "w", "steps": cfg.steps})
    Recipe(tmp_path, progress=False).stage_keyframe_detail()
    (cfg,) = runs
    assert cfg.model == str(tmp_path / "keyframe-all/keyframe-all.safetensors") and not cfg.init_weights
    assert cfg.data == str(tmp_path / "cache-keyframe") and cfg.output_dir == str(tmp_path / "keyframe-detail")
    assert cfg.train == "all" and cfg.timestep_shift < 1
    t = sample_timesteps(4000, 1000, torch.Generator().manual_seed(0), cfg.timestep_shift)
    assert 0.45 < (t < 250).float().mean() < 0.6  # keyframe-all's last phase (shift 12): 2.7 %
    assert SHIPPED_KEYFRAME[0] == "keyframe-detail"
    assert STAGES.index("keyframe-all") < STAGES.index("keyframe-detail") < STAGES.index("model")
