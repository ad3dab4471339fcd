"""GLUE metrics as an `evaluate` module: hfsoup's own, used by default instead of the Hub's `evaluate-metric/glue`.

Same interface and output names as the Hub module: `evaluate.load(path_to_this_folder, "mrpc")` gives a metric whose
`compute(predictions=..., references=...)` returns `accuracy` and `f1`. Written with numpy alone, so it needs
neither scikit-learn nor scipy, and the tests can check it against them independently.

Imports stay one per line: the import scanner of `evaluate` misreads `import a, b`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Metrics of the GLUE benchmark (Wang et al., 2019), by task: Matthews correlation for cola; Pearson and Spearman
correlation for stsb; accuracy and binary F1 for mrpc and qqp; accuracy for the others.
"""

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""

_INPUTS = """\
Args:
    predictions: predicted label ids (a float score for stsb).
    references: gold label ids (a float score for stsb).
Returns, by config:
    cola: matthews_correlation; stsb: pearson, spearmanr; mrpc, qqp: accuracy, f1;
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans: accuracy.
Example:
    >>> metric = evaluate.load("glue", "mrpc")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666, 'f1': 0.6666666666666666}
"""

_ACCURACY_ONLY = ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans")
CONFIGS = ("cola", "stsb", "mrpc", "qqp", *_ACCURACY_ONLY)


def accuracy(predictions, references):
    return float(np.mean(predictions == references))


def binary_f1(predictions, references):
    """F1 of the positive class (label 1); 0 when there is neither a predicted nor a true positive."""
    true_pos = np.sum((predictions == 1) & (references == 1))
    wrong = np.sum(predictions != references)
    # 2TP / (2TP + FP + FN): every wrong binary prediction is a false positive or a false negative.
    denominator = 2 * true_pos + wrong
    return float(2 * true_pos / denominator) if denominator else 0.0


def matthews_correlation(predictions, references):
    """Multiclass Matthews correlation (Gorodkin's R_K) from the confusion matrix; 0 when undefined."""
    classes, encoded = np.unique(np.concatenate([references, predictions]), return_inverse=True)
    n = len(references)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (encoded[:n], encoded[n:]), 1.0)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - pred_counts @ true_counts
    denominator = np.sqrt((total**2 - pred_counts @ pred_counts) * (total**2 - true_counts @ true_counts))
    return float(covariance / denominator) if denominator else 0.0


def pearson(x, y):
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
    # A constant input has no correlation: NaN, as the Hub module (through scipy) reports it.
    return float(np.dot(x, y) / denominator) if denominator else float("nan")


def average_ranks(values):
    """Ranks from 1, tied values sharing the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Each run of equal values starts where the value changes.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(x, y):
    return pearson(average_ranks(x), average_ranks(y))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"You should supply a configuration name selected in {list(CONFIGS)}")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            codebase_urls=[],
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": matthews_correlation(predictions, references)}
        if self.config_name == "stsb":
            return {"pearson": pearson(predictions, references), "spearmanr": spearman(predictions, references)}
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy(predictions, references), "f1": binary_f1(predictions, references)}
        return {"accuracy": accuracy(predictions, references)}
