# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""ClipCap-HF's library: everything the scripts share, one concept per module.

The model itself is the three standalone top-level files (`configuration_clipcap.py`, `modeling_clipcap.py`,
`processing_clipcap.py`), which a saved model directory carries for `trust_remote_code`; the scripts
(`prepare_dataset.py`, `train_clip_teacher.py`, `run_train.py`, `run_eval.py`, `caption.py`) are arguments and a
`main`. docs/layout.md lists every module and what may import it. Nothing is imported here, so that
`import clipcap.synthetic` costs only what that module needs.
"""
