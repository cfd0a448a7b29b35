"""`run_train.py` for `accelerate launch` in tests: after the final evaluation, every process writes what it holds to
$RANK_DIR: `rank{N}.safetensors` (its model's parameters and buffers), and `rank{N}.json` with its captions of the
whole evaluation split and the captions of the (sharded) evaluation itself."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import save_file  # noqa: E402

import run_train  # noqa: E402
from clipcap.data import IMAGE_COLUMN  # noqa: E402
from clipcap.inference import caption_images  # noqa: E402
from clipcap.trainer import CLIPGuidedTrainer  # noqa: E402

final_evaluation = CLIPGuidedTrainer.final_evaluation


def final_evaluation_and_dump(self):
    metrics = final_evaluation(self)
    out, rank = Path(os.environ["RANK_DIR"]), self.accelerator.process_index
    model = self.accelerator.unwrap_model(self.model).eval()
    save_file({name: tensor.clone() for name, tensor in model.state_dict().items()}, out / f"rank{rank}.safetensors")
    captions = caption_images(model, self.processing_class, self.eval_dataset[IMAGE_COLUMN], batch_size=8)
    dump = {"captions": captions, "evaluation": self.last_caption_evaluation.captions, "metrics": metrics}
    (out / f"rank{rank}.json").write_text(json.dumps(dump))
    return metrics


CLIPGuidedTrainer.final_evaluation = final_evaluation_and_dump

if __name__ == "__main__":
    sys.exit(run_train.main(sys.argv[1:]))
