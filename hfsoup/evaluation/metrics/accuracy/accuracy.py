"""Accuracy as an `evaluate` module: hfsoup's own, used by default instead of the Hub's `evaluate-metric/accuracy`.

Same interface and output name as the Hub module (`{"accuracy": ...}`), written with numpy alone. Image
classification tasks are scored with it; the GLUE tasks keep the `glue` module.

Imports stay one per line: the import scanner of `evaluate` misreads `import a, b`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "The fraction of predictions equal to their reference."

_CITATION = ""

_INPUTS = """\
Args:
    predictions: predicted label ids.
    references: gold label ids.
Returns:
    accuracy: the fraction of correct predictions, in [0, 1].
Example:
    >>> evaluate.load("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}
