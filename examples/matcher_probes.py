#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Why the generative matcher (clipcap.matching) sees relations in only 0.75 of the scenes: two probes on the demo
teacher's frozen image trunk (outputs/demo-teacher), its feature maps computed once and cached.

`locality`: does a cell of the trunk's map say what is *there*? A linear probe per cell predicts which colours
occupy the cell's centre (from the scene's boxes), against the same probe given only the image's mean feature (what a
pooled vector keeps). High precision and recall per cell mean the map is local, so the image side carries places.

`train`: the generative matcher trained on the cached maps (no counterfactual twins; its in-batch negatives drawn
at random, so the text tower never runs), bf16 autocast, with variants of where it reads positions: `--image_layers`
(self-attention among the cells before the decoder reads them) and `--coordinates` (the cells' (row, column) in
[-1, 1], linearly mapped, added to the fixed sine-cosine positions). Prints the compositional test of the validation
scenes `--evaluations` times.

    .venv/bin/python examples/matcher_probes.py locality
    .venv/bin/python examples/matcher_probes.py train --steps 1200
    .venv/bin/python examples/matcher_probes.py train --steps 1200 --grid_level 2
    .venv/bin/python examples/matcher_probes.py train --steps 900 --image_layers 2
    .venv/bin/python examples/matcher_probes.py train --steps 900 --coordinates

docs/results.md ("A teacher that sees where things are") has the figures.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_clip_teacher as teacher_script
from clipcap import matching
from clipcap.compositional import compositional_match_test
from clipcap.hard_negatives import draw_hard_negatives, judge_of
from clipcap.lit_teacher import create_teacher_model
from clipcap.losses import caption_id
from clipcap.metrics import scenes_of
from clipcap.synthetic import COLOURS, Scene
from clipcap.teacher import TEACHER_CHECKPOINT_NAME, register_model_configs

CACHE_DIR = ROOT / "outputs" / "matcher-probes"


def load_teacher(args):
    register_model_configs()
    config = teacher_script.parse_args([str(ROOT / "configs" / "demo_teacher_matcher.yaml")])
    model, preprocess, tokenizer, _ = create_teacher_model(
        config.model, config.image_tower_pretrained, config.text_tower_pretrained, torch.device("cpu")
    )
    model.load_state_dict(load_file(str(Path(args.teacher) / TEACHER_CHECKPOINT_NAME)))
    return config, model.eval().requires_grad_(False), preprocess, tokenizer


def cached_grids(model, preprocess, train, level: int) -> torch.Tensor:
    """The trunk's feature map `level` of every training image, computed once (about 2 minutes on 2 cores)."""
    path = CACHE_DIR / f"grids-level{level}.pt"
    if path.exists():
        return torch.load(path)
    images = train.select_columns(["image"])
    grids = []
    with torch.no_grad():
        for i in range(0, len(train), 250):
            pixels = teacher_script.preprocess_images(preprocess, images[i : i + 250]["image"])
            grids.append(matching.encode_image_grid(model, pixels, level)[0])
    grids = torch.cat(grids)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(grids, path)
    return grids


def colour_occupancy(scenes: list[str], size: int) -> torch.Tensor:
    """`(scenes, size, size, colours)`: 1 where the centre of a cell of a `size x size` grid lies in the box of an
    object of that colour (`sorted(COLOURS)` order; boxes are (x, y, width, height) in [0, 1])."""
    colours = {colour: i for i, colour in enumerate(sorted(COLOURS))}
    centres = (torch.arange(size) + 0.5) / size
    targets = torch.zeros(len(scenes), size, size, len(colours))
    for n, scene in enumerate(scenes):
        for obj in json.loads(scene)["objects"]:
            x, y, w, h = obj["bounding_box"]
            rows, columns = (centres >= y) & (centres <= y + h), (centres >= x) & (centres <= x + w)
            targets[n][rows[:, None] & columns[None, :], colours[obj["colour"]]] = 1
    return targets


def locality(args, train, grids):
    """Per-cell colour occupancy from the cell's features, and from the image's mean feature."""
    targets = colour_occupancy(scenes_of(train), grids.shape[-1])
    features = grids.permute(0, 2, 3, 1)
    features = (features - features.mean((0, 1, 2))) / features.std((0, 1, 2))
    split = int(0.9 * len(train))
    for name, x in (("per cell", features), ("image mean", features.mean((1, 2), keepdim=True).expand_as(features))):
        x_train, x_test = x[:split].reshape(-1, x.shape[-1]), x[split:].reshape(-1, x.shape[-1])
        y_train, y_test = targets[:split].flatten(0, 2), targets[split:].flatten(0, 2)
        probe = nn.Linear(x.shape[-1], targets.shape[-1])
        optimizer = torch.optim.Adam(probe.parameters(), 1e-2)
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            rows = torch.randint(len(x_train), (4096,), generator=generator)
            loss = F.binary_cross_entropy_with_logits(probe(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = probe(x_test) > 0
        truth = y_test > 0
        hits = (predicted & truth).sum().item()
        print(
            f"{name}: precision {hits / max(1, predicted.sum().item()):.3f}, recall {hits / max(1, truth.sum().item()):.3f}"
            f" ({truth.float().mean().item():.3f} of cells hold a colour)"
        )


def train(args, config, model, tokenizer, train, validation, preprocess, grids):
    torch.manual_seed(args.seed)
    random.seed(args.seed)  # the caption drawn for each image
    references = train["captions"][:]
    scenes = [Scene.from_json(scene) for scene in scenes_of(train)]
    captions = [caption for refs in references for caption in refs]
    vocabulary = {int(i) for k in range(0, len(captions), 4096) for i in tokenizer(captions[k : k + 4096]).unique()}
    matcher = matching.Matcher.for_model(model, 2, 256, "generative", sorted(vocabulary), args.grid_level)
    plain_cells = matching.image_cells
    extra = nn.ModuleDict()
    if args.image_layers:
        layer = nn.TransformerEncoderLayer(256, 4, 1024, 0.0, batch_first=True, norm_first=True)
        extra["image_encoder"] = nn.TransformerEncoder(layer, args.image_layers, enable_nested_tensor=False)
    if args.coordinates:
        extra["coordinates"] = nn.Linear(2, 256)
        size = grids.shape[-1]
        rows, columns = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        coordinates = torch.stack([rows.flatten(), columns.flatten()], dim=-1)

    def cells(proj, grid, width):  # the variants, in the matcher's one place that makes cells
        x = plain_cells(proj, grid, width)
        if args.coordinates:
            x = x + extra["coordinates"](coordinates.to(x))
        return extra["image_encoder"](x) if args.image_layers else x

    matching.image_cells = cells
    if args.rank_by_sum:  # training ranks by the sum of token log-probabilities (evaluation keeps the mean)
        mean_score = matcher.forward

        def score(grid, text_states, text_mask, input_ids=None):
            if not matcher.training:
                return mean_score(grid, text_states, text_mask, input_ids)
            return (matcher.token_log_probs(grid, input_ids) * text_mask[:, 1:].to(grid.dtype)).sum(-1)

        matcher.forward = score  # this matcher only (nn.Module calls self.forward)
    matcher.extra = extra
    config.matcher_learning_rate, config.batch_size = args.learning_rate, args.batch_size
    optimizer, scheduler = teacher_script.make_optimizer(matcher, config, args.steps, learning_rate=args.learning_rate)
    validation_images = teacher_script.preprocess_images(preprocess, validation["image"][:])
    validation_references, validation_scenes = validation["captions"][:], scenes_of(validation)
    rng, negatives_generator = random.Random(args.seed + 1), torch.Generator().manual_seed(args.seed + 1)
    kinds = teacher_script._names(config.hard_negatives)
    print(f"{sum(p.numel() for p in matcher.parameters()) / 1e6:.2f}M parameters; grid {tuple(grids.shape[1:])}")
    start = time.perf_counter()

    def evaluate(step: int):
        matcher.eval()
        with torch.no_grad():
            scorer = teacher_script.match_scorer(model, tokenizer, matcher, validation_images)
            results = compositional_match_test(scorer, validation_scenes, validation_references)
        matcher.train()
        accuracy = {kind: round(result["accuracy"], 3) for kind, result in results.items()}
        print(f"step {step} ({time.perf_counter() - start:.0f} s): {accuracy}", flush=True)

    every = max(1, args.steps // args.evaluations)
    order = teacher_script.batches(len(train), args.batch_size, args.steps, torch.Generator().manual_seed(args.seed))
    for step, (_, index) in enumerate(order):
        if step and step % every == 0:
            evaluate(step)
        true = [random.choice(references[i]) for i in index]
        judges = [judge_of(scenes[i], None) for i in index]
        negatives, owners, _ = draw_hard_negatives(true, judges, kinds, 1, rng)
        ids = matching.without_padding_columns(model, tokenizer(true + negatives))
        mask = (ids != model.text.config.pad_token_id).long()
        similarity = torch.zeros(len(index), len(index))  # in-batch negatives drawn uniformly
        with torch.autocast("cpu", torch.bfloat16):
            loss = teacher_script.matcher_loss(
                matcher,
                grids[index],
                torch.zeros(len(ids), 1, 1),  # token states: the generative kind reads the ids only
                mask,
                ids,
                similarity,
                torch.tensor([caption_id(c) for c in true]),
                torch.tensor(owners, dtype=torch.long),
                (),
                negatives_generator,
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    evaluate(args.steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["locality", "train"])
    parser.add_argument("--teacher", default=str(ROOT / "outputs" / "demo-teacher"))
    parser.add_argument("--grid_level", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--image_layers", type=int, default=0)
    parser.add_argument("--coordinates", action="store_true")
    parser.add_argument("--rank_by_sum", action="store_true")
    parser.add_argument("--evaluations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config, model, preprocess, tokenizer = load_teacher(args)
    train_split, validation = teacher_script.load_data(config)
    grids = cached_grids(model, preprocess, train_split, args.grid_level)
    if args.probe == "locality":
        locality(args, train_split, grids)
    else:
        train(args, config, model, tokenizer, train_split, validation, preprocess, grids)


if __name__ == "__main__":
    main()
