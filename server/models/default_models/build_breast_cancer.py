"""Train the bundled breast-cancer classifier and write it as ONNX with its config, a sample CSV, its training rows
(`train.csv`, with a `label` column) and their reference profile (what `vigil profile --label-column label` builds
from them).

Run from the repository root with the development dependencies installed:

    python -m vigil.server.models.default_models.build_breast_cancer

It needs scikit-learn and skl2onnx, which the server itself never imports.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent / "breast_cancer"
SEED = 0
LABELS = ["malignant", "benign"]  # scikit-learn's target 0 and 1

CONFIG = """\
# The bundled classifier: logistic regression on scikit-learn's breast-cancer data (30 features).
max_batch_size = 256
execution_providers = ["cuda", "cpu"]
intra_op_threads = 1
inter_op_threads = 1
labels = ["malignant", "benign"]
probability_output = "probabilities"

[warmup]
runs = 2
rows = 8
"""


def main() -> None:
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=SEED, stratify=data.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=SEED))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))

    onnx_model = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.doc_string = f"Logistic regression on the breast-cancer data; held-out accuracy {accuracy:.4f}"
    (HERE / "1").mkdir(parents=True, exist_ok=True)
    (HERE / "1" / "model.onnx").write_bytes(onnx_model.SerializeToString())
    (HERE / "config.toml").write_text(CONFIG, encoding="utf-8")

    with (HERE / "sample.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(data.feature_names))
        for row in x_test[:8]:
            writer.writerow([f"{v:.6g}" for v in row])
    write_training_rows(x_train, y_train, list(data.feature_names))
    write_profile()
    summary = {"held_out_accuracy": round(accuracy, 4), "train_rows": len(x_train), "test_rows": len(x_test),
               "labels": LABELS, "seed": SEED}
    (HERE / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))


def write_training_rows(x_train: np.ndarray, y_train: np.ndarray, names: list[str]) -> None:
    """The training rows with their true labels, shipped so that `vigil profile` can be tried on them."""
    with (HERE / "train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "label"])
        for row, target in zip(x_train, y_train, strict=True):
            writer.writerow([*(f"{v:.9g}" for v in row), LABELS[int(target)]])


def write_profile() -> None:
    """Profile the training rows through the written ONNX model, as `vigil profile --label-column label` does."""
    from vigil.server.models.profile_builder import profile_version, read_reference_csv

    profile, target_path = profile_version(HERE.parent, HERE.name, 1, read_reference_csv(HERE / "train.csv", "label"))
    profile.save(target_path)


if __name__ == "__main__":
    main()
