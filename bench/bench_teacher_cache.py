"""The training step with the CLIP teacher's embeddings cached, recomputed every step, or not needed at all; and a
frozen encoder's features computed once against at every step.

    python bench/bench_teacher_cache.py [--repeats 3] [--batch_size 16] [--teachers ViT-B-32,ViT-L-14]

A step is what the Trainer does for one batch: fetch the rows from a `datasets.Dataset` (1024 x 768 JPEG photos,
three captions each), collate them (`CaptionCollator`), `CLIPGuidedTrainer.compute_loss`, backward, gradient
clipping, the Trainer's fused AdamW update. The student is the default captioner (MobileNetV2 at 224 px -> MLP
prefix -> DistilGPT2-shaped decoder) and the teachers are open_clip's ViT-B-32 and ViT-L-14 with random weights (the
shapes are what matter for time; the cached embeddings are random unit vectors for the same reason). L_div is off in
every variant, so the variants differ only in the teacher's part. Side by side, in alternation, for each teacher:

  * student only: L_ce alone, no teacher anywhere (the limit);
  * cached: L_ce + L_cos + L_con, the teacher's embeddings read from the dataset's columns;
  * recomputed: the same losses with the teacher run on every batch (its image transform in the collator, its image
    and text towers in the loss), the naive way.
The teacher's share of a cached step is given two ways: the step-time difference with the student-only step, and the
teacher's work in that step timed alone (fetching the two columns, turning them into tensors, normalising, L_cos and
L_con forward and backward), over the cached step's time. The process keeps freed memory, as the scripts do.

Frozen encoder (ViT-B-32-sized cache): the step with the encoder's features computed from the images every step,
against read from the `encoder_features` column that `clipcap.encoder_cache.add_encoder_features` computed once (its
one-time cost is reported too). Prints a table and writes bench/results/teacher_cache.json.
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import side_by_side, write_results  # noqa: E402 - bench/ is the script directory

from clipcap.collator import CaptionCollator, _float_tensor  # noqa: E402
from clipcap.encoder_cache import add_encoder_features  # noqa: E402
from clipcap.losses import contrastive_loss, cosine_alignment_loss  # noqa: E402
from clipcap.memory import keep_freed_memory  # noqa: E402
from clipcap.teacher import CLIPTeacher, TeacherIdentity  # noqa: E402
from clipcap.trainer import CLIPGuidedTrainer  # noqa: E402
from clipcap.training_args import ClipCapTrainingArguments, CLIPGuidanceArguments  # noqa: E402
from configuration_clipcap import ClipCapConfig  # noqa: E402
from modeling_clipcap import ClipCapForCaptioning  # noqa: E402
from processing_clipcap import ClipCapProcessor  # noqa: E402

WORDS = "a an the red blue white black steel kettle toaster fridge oven microwave kitchen on next to with".split()


def photo_dataset(rows: int, seed: int = 0):
    """`rows` 1024 x 768 JPEGs (smooth random colour fields with grain, so they compress and decode like photos),
    each with three captions and a row index."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(rows):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(low).resize((1024, 768), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": None})
    captions = [[" ".join(rng.choice(WORDS, 9)) for _ in range(3)] for _ in range(rows)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "row_index": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "captions": captions, "row_index": list(range(rows))}, features=features
    )


def with_cache(dataset, dim: int, seed: int = 0):
    """The dataset with teacher embedding columns (random unit vectors: the values do not change the time)."""
    rng = np.random.default_rng(seed)

    def unit(*shape):
        vectors = rng.standard_normal(shape).astype(np.float32)
        return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).tolist()

    dataset = dataset.add_column("teacher_image_embeds", unit(len(dataset), dim))
    return dataset.add_column("teacher_text_embeds", unit(len(dataset), 3, dim))


def random_teacher(arch: str) -> CLIPTeacher:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    dim = model.text_projection.shape[1]
    return CLIPTeacher(model, preprocess, open_clip.get_tokenizer(arch), TeacherIdentity(arch, "random", None, dim))


class TrainStep:
    """Fetch a batch of rows, collate, `compute_loss`, backward, clip, update: one call is one step."""

    def __init__(self, model, dataset, processor, guidance, teacher, batch_size, output_dir):
        needs_teacher = teacher is not None or "teacher_image_embeds" in dataset.column_names
        self.collator = CaptionCollator(
            processor,
            teacher=teacher,
            teacher_images=needs_teacher and guidance.needs_teacher_images,
            teacher_texts=needs_teacher and guidance.needs_teacher_texts,
            seed=0,
        )
        args = ClipCapTrainingArguments(
            output_dir=output_dir, use_cpu=True, report_to="none", per_device_train_batch_size=batch_size
        )
        self.trainer = CLIPGuidedTrainer(
            model=model,
            args=args,
            data_collator=self.collator,
            processing_class=processor,
            guidance=guidance,
            teacher=teacher,
        )
        self.optimizer = self.trainer.create_optimizer()
        self.model, self.dataset, self.batch_size, self.position = model, dataset, batch_size, 0

    def next_indices(self) -> list[int]:
        start = self.position % len(self.dataset)
        self.position += self.batch_size
        return [(start + i) % len(self.dataset) for i in range(self.batch_size)]

    def __call__(self):
        self.model.train()
        batch = self.collator(self.dataset.__getitems__(self.next_indices()))
        loss = self.trainer.compute_loss(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def teacher_work_of_cached_step(dataset, batch_size: int, dim: int, guidance):
    """The teacher's part of a cached step, alone: the two cached columns fetched for a batch, made tensors and
    normalised as the collator and `CLIPGuidedTrainer` do, then L_cos and L_con forward and backward."""
    columns = dataset.select_columns(["teacher_image_embeds", "teacher_text_embeds"])
    z = torch.nn.functional.normalize(torch.randn(batch_size, dim), dim=-1).requires_grad_()

    def run():
        rows = columns.__getitems__(list(range(batch_size)))
        images = torch.nn.functional.normalize(_float_tensor([row["teacher_image_embeds"] for row in rows]), dim=-1)
        texts = torch.nn.functional.normalize(_float_tensor([row["teacher_text_embeds"][0] for row in rows]), dim=-1)
        loss = guidance.lambda_cos * cosine_alignment_loss(z, images)
        loss = loss + guidance.lambda_con * contrastive_loss(z, texts, guidance.contrastive_logit_scale)
        loss.backward()

    return run


def student(dim: int, freeze_encoder: bool = False) -> ClipCapForCaptioning:
    torch.manual_seed(0)
    config = ClipCapConfig(
        encoder_pretrained=False, decoder_name_or_path=None, teacher_embed_dim=dim, freeze_encoder=freeze_encoder
    )
    return ClipCapForCaptioning(config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rows", type=int, default=64, help="Rows in the dataset the steps cycle through.")
    parser.add_argument("--teachers", default="ViT-B-32,ViT-L-14")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    keep_freed_memory()  # as the scripts do
    torch.manual_seed(0)
    photos = photo_dataset(args.rows)
    results = {"setup": vars(args), "teachers": {}}
    no_clip = CLIPGuidanceArguments(lambda_cos=0.0, lambda_con=0.0, lambda_div=0.0)
    clip = CLIPGuidanceArguments(lambda_div=0.0)
    with tempfile.TemporaryDirectory() as output_dir:
        for arch in args.teachers.split(","):
            teacher = random_teacher(arch)
            dim = teacher.identity.embed_dim
            model = student(dim)
            processor = ClipCapProcessor.from_config(model.config)
            cached = with_cache(photos, dim)

            def step(dataset, guidance, teacher_model, model=model, processor=processor):
                return TrainStep(model, dataset, processor, guidance, teacher_model, args.batch_size, output_dir)

            variants = {
                "student only": step(photos, no_clip, None),
                "cached": step(cached, clip, None),
                "recomputed": step(photos, clip, teacher),
                "teacher work of a cached step, alone": teacher_work_of_cached_step(
                    cached, args.batch_size, dim, clip
                ),
            }
            print(f"{arch}: timing {len(variants)} variants side by side, {args.repeats} rounds ...", flush=True)
            # The recomputed step's first run warms nothing the other variants have not (a ViT-L-14 run is 10 s).
            timings = side_by_side(variants, args.repeats, warmup=set(variants) - {"recomputed"})
            alone = timings.pop("teacher work of a cached step, alone")["median_s"]
            steps = {name: timing["median_s"] for name, timing in timings.items()}
            results["teachers"][arch] = {
                "embed_dim": dim,
                "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
                "steps": timings,
                "teacher_work_alone_s": alone,
                "cached_share_by_difference": (steps["cached"] - steps["student only"]) / steps["cached"],
                "cached_share_timed_alone": alone / steps["cached"],
                "recomputed_share": (steps["recomputed"] - steps["student only"]) / steps["recomputed"],
                "recomputed_over_cached": steps["recomputed"] / steps["cached"],
            }
            del teacher, variants, model

        # A frozen encoder: features from the images at every step, or computed once.
        first_dim = results["teachers"][args.teachers.split(",")[0]]["embed_dim"]
        model = student(first_dim, freeze_encoder=True)
        processor = ClipCapProcessor.from_config(model.config)
        cached = with_cache(photos, first_dim)
        start = time.perf_counter()
        features = add_encoder_features(cached, model, processor).remove_columns("image")
        once = time.perf_counter() - start

        def step(dataset):
            return TrainStep(model, dataset, processor, clip, None, args.batch_size, output_dir)

        print(f"frozen encoder: timing 2 variants side by side, {args.repeats} rounds ...", flush=True)
        frozen = side_by_side({"every step": step(cached), "computed once": step(features)}, args.repeats)
        results["frozen_encoder"] = {
            "steps": frozen,
            "features_once_s": once,
            "features_once_images_per_s": args.rows / once,
            "every_step_over_once": frozen["every step"]["median_s"] / frozen["computed once"]["median_s"],
        }
    print_table(results, args)
    print(f"wrote {write_results('teacher_cache', results, args.output)}")


def print_table(results: dict, args) -> None:
    print(f"\ntraining step, batch {args.batch_size}, median of {args.repeats} side-by-side rounds (s)")
    print(f"{'teacher':<10}{'student only':>14}{'cached':>10}{'recomputed':>12}{'cached share':>15}{'ratio':>10}")
    for arch, row in results["teachers"].items():
        steps = {name: timing["median_s"] for name, timing in row["steps"].items()}
        print(
            f"{arch:<10}{steps['student only']:>14.2f}{steps['cached']:>10.2f}{steps['recomputed']:>12.2f}"
            f"{row['cached_share_timed_alone']:>9.2%} / {row['cached_share_by_difference']:+.1%}"
            f"{row['recomputed_over_cached']:>9.2f}x"
        )
    print("(cached share: the teacher's work timed alone / the step-time difference with the student-only step;")
    print(" ratio: recomputed step / cached step)")
    frozen = results["frozen_encoder"]
    every, once = frozen["steps"]["every step"]["median_s"], frozen["steps"]["computed once"]["median_s"]
    print(
        f"frozen encoder step: features every step {every:.2f} s, computed once {once:.2f} s "
        f"({frozen['every_step_over_once']:.2f}x); computing them once: "
        f"{frozen['features_once_images_per_s']:.0f} images/s"
    )


if __name__ == "__main__":
    main()
