"""The metric Space's app: evaluate's own widget for a text metric."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

launch_gradio_widget(evaluate.load(str(Path(__file__).parent)))
