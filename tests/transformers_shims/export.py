"""Stands in for transformers' `tests/exporters/test_export.py`, which its sdist does not ship: `ModelTesterMixin`
inherits `ExportTesterMixin` from it. Ours adds no tests: exporting (torch.export / ONNX) is not something this
project promises."""


class ExportTesterMixin:
    pass
