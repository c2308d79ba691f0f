"""Model cards: the ``README.md`` of a Hub repo, written from the manifest or a fine-tuning run."""

from typing import Dict, List, Optional, Sequence

from .manifest import Checkpoint, binary_units

__all__ = ["CITATION", "card_text", "front_matter", "render_model_card"]

CITATION = """@InProceedings{wang2020eca,
  title     = {ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks},
  author    = {Wang, Qilong and Wu, Banggu and Zhu, Pengfei and Li, Peihua and Zuo, Wangmeng and Hu, Qinghua},
  booktitle = {The IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}"""


def _yaml_results(dataset: str, metrics: Dict[str, float], source: str) -> List[str]:
    lines = [
        "  - task:",
        "      type: image-classification",
        "    dataset:",
        f"      name: {dataset}",
        f"      type: {'imagenet-1k' if dataset == 'ImageNet-1K' else 'imagefolder'}",
        "    metrics:",
    ]
    for key, label in (("acc@1", "Top-1 accuracy"), ("acc@5", "Top-5 accuracy")):
        if metrics.get(key) is not None:
            lines += ["      - type: accuracy", f"        name: {label} ({source})", f"        value: {metrics[key]}"]
    return lines


def render_model_card(
    repo_name: str,
    model_name: str,
    kernel_code: str,
    num_params: int,
    gmacs: float,
    hf_hub_id: str,
    checkpoint: Optional[Checkpoint] = None,
    source_file: str = "",
    source_sha256: str = "",
    measured: Optional[Dict[str, float]] = None,
    dataset: str = "ImageNet-1K",
    class_names: Optional[List[str]] = None,
    input_size: Sequence[int] = (3, 224, 224),
) -> str:
    """The model card text: Hub YAML front matter, then usage, kernel code, units note and citation.

    Args:
        repo_name: The repo's name, the card's title.
        model_name: The timm entrypoint the weights need (``eca_resnet50_k3557``).
        kernel_code: The kernel code (``k3557``).
        num_params: Exact parameter count.
        gmacs: MACs at ``input_size`` in units of 1e9.
        hf_hub_id: Where the repo lives (or will).
        checkpoint: The manifest entry of a released checkpoint, for the reported figures.
        source_file: The file the weights were converted from.
        source_sha256: sha256 of that file.
        measured: Measured Top-1/Top-5 (``{"acc@1", "acc@5"}``), e.g. of a fine-tuning run.
        dataset: Name of the evaluation dataset.
        class_names: Class names of a fine-tuned model.
        input_size: The input ``gmacs`` was measured at (a fine-tuned model's own size).
    """
    # the model index holds what was measured for these weights only (the release's reported figures are the
    # release's, not a result of this file: the card's text gives them)
    results = ["  " + line for line in _yaml_results(dataset, measured, "measured")] if measured else []
    datasets = ["imagenet-1k" if dataset == "ImageNet-1K" else dataset]
    front = front_matter("timm", "image-classification", ["image-classification", "timm"], repo_name, results, datasets)
    body = _usage(repo_name, model_name, kernel_code, hf_hub_id)
    body += _complexity(num_params, gmacs, checkpoint, input_size)
    body += _accuracy(checkpoint, measured, dataset, class_names)
    provenance = f"Converted from the authors' `{source_file}` (sha256 `{source_sha256}`) by `eca-models convert`."
    return card_text(front, body, provenance if source_file else "")


def front_matter(
    library: str, pipeline_tag: str, tags: Sequence[str], name: str, results: List[str], datasets: Sequence[str] = ()
) -> List[str]:
    """A card's Hub YAML, classifier's or detector's: library, license, task, tags (the package's own added),
    datasets, and the model index of ``results`` (YAML lines under ``results:``; none: no index)."""
    front = ["---", f"library_name: {library}", "license: mit", f"pipeline_tag: {pipeline_tag}", "tags:"]
    front += [f"  - {tag}" for tag in (*tags, "eca-net", "eca-models")]
    front += ["datasets:", *(f"  - {d}" for d in datasets)] if datasets else []
    if results:
        front += ["model-index:", f"  - name: {name}", "    results:"] + results
    return front + ["---"]


def card_text(front: List[str], body: List[str], provenance: str = "") -> str:
    """A card from its front matter and body, with its provenance (where the weights were converted from, if they
    were) and the paper's citation."""
    tail = ["", "## Provenance", "", provenance] if provenance else []
    return "\n".join(front + [""] + body + tail + ["", "## Citation", "", "```bibtex", CITATION, "```", ""])


def _usage(repo_name: str, model_name: str, kernel_code: str, hf_hub_id: str) -> List[str]:
    """The title, what the model is, how to load it (timm, torch.hub), and what its kernel code means."""
    stages = (
        " (ResNet: layer1 to layer4)."
        if "resnet" in model_name
        else " (MobileNetV2: blocks below 96 channels, then the rest)."
    )
    return [
        f"# {repo_name}",
        "",
        f"ECA-Net ({model_name}, kernel code `{kernel_code}`): a ResNet or MobileNetV2 with Efficient Channel "
        "Attention, from *ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks* "
        "(Wang et al., CVPR 2020, [arXiv:1910.03151](https://arxiv.org/abs/1910.03151)).",
        "",
        "## Usage",
        "",
        "```python",
        "import timm",
        "import eca_models  # registers the ECA models with timm",
        "",
        f"model = timm.create_model('hf-hub:{hf_hub_id}', pretrained=True).eval()",
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "```",
        "",
        "or with torch.hub, from eca-models on GitHub (`ORG`: the account that hosts it) or a checkout of it "
        "(`'path/to/eca-models', ..., source='local'`):",
        "",
        "```python",
        "import torch",
        "",
        f"model = torch.hub.load('ORG/eca-models', '{model_name}', "
        f"pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='{hf_hub_id}'))",
        "```",
        "",
        "## Kernel code",
        "",
        f"`{kernel_code}` lists the ECA kernel size of each stage{stages} Weights only load into a model built with "
        "the same code.",
    ]


def _complexity(
    num_params: int, gmacs: float, checkpoint: Optional[Checkpoint], input_size: Sequence[int]
) -> List[str]:
    """Exact parameters and MACs, and the published figures in their binary units."""
    lines = [
        "",
        "## Complexity",
        "",
        f"- Parameters: {num_params:,} (exact); {num_params / 2**20:.2f}M in the binary unit (2^20) the paper uses.",
        f"- MACs at {input_size[-2]}x{input_size[-1]}: {gmacs:.3f}G (1e9), measured with torch.utils.flop_counter "
        "(convolutions and matmuls).",
    ]
    if checkpoint is not None:
        p, f = checkpoint.published["params"], checkpoint.published["flops"]
        lines.append(
            f"- Published figures: Param {p} and FLOPs {f}. Both are binary units: Param / 2^20 "
            f"({binary_units(p):,.0f}) and thop multiply-accumulates / 2^30 ({binary_units(f) / 1e9:.2f}e9 MACs)."
        )
    return lines


def _accuracy(
    checkpoint: Optional[Checkpoint],
    measured: Optional[Dict[str, float]],
    dataset: str,
    class_names: Optional[List[str]],
) -> List[str]:
    """The reported and the paper's figures of a released checkpoint, a measurement, a fine-tuned model's classes."""
    lines: List[str] = []
    if checkpoint is not None:
        m = checkpoint.metrics[checkpoint.dataset]
        lines += [
            "",
            "## Accuracy",
            "",
            f"Reported by the release for its {checkpoint.source_file} (release README, ImageNet-1k val): Top-1 "
            f"{m['acc@1']}, Top-5 {m['acc@5']}. These are the release's figures, not a measurement of this file: "
            "`eca-models validate` measures it.",
        ]
        if checkpoint.paper_metrics:
            pm = checkpoint.paper_metrics[checkpoint.dataset]
            lines.append(f"The paper's table gives Top-1 {pm['acc@1']}, Top-5 {pm['acc@5']} for this architecture.")
    if measured:
        top5 = f", Top-5 {measured['acc@5']}" if measured.get("acc@5") is not None else ""
        lines += ["", f"Measured on {dataset}: Top-1 {measured.get('acc@1')}{top5}."]
    if class_names:
        more = " ..." if len(class_names) > 50 else ""
        lines += ["", f"Classes ({len(class_names)}): {', '.join(class_names[:50])}{more}"]
    return lines
