# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Render synthetic scenes to PNG files, with a scenes.jsonl that describes them.

    python -m clipcap.synthetic --num_train 8 --num_validation 0 --output_dir /tmp/scenes

writes `output_dir/{split}/{index:06d}.png` (as `render_examples` does) and `output_dir/scenes.jsonl`, one line per
scene: its image file relative to `output_dir`, its split, its reference captions and the scene itself.
"""

import argparse
import json
from pathlib import Path

from .dataset import render_examples
from .scene import SCENE_COLUMN


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render synthetic home-appliance scenes to PNGs and scenes.jsonl.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=16)
    parser.add_argument("--num_validation", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=128)
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    rendered = render_examples(output_dir, args.num_train, args.num_validation, args.seed, args.image_size)
    with open(output_dir / "scenes.jsonl", "w") as f:
        for split, path, scene, captions in rendered:
            file = path.relative_to(output_dir).as_posix()
            f.write(json.dumps({"file": file, "split": split, "captions": captions, SCENE_COLUMN: scene.to_dict()}))
            f.write("\n")
    print(f"wrote {len(rendered)} scenes to {output_dir}")


if __name__ == "__main__":
    main()
