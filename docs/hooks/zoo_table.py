"""MkDocs hook: fill the zoo page's table from the weights manifest and the models themselves."""

MARKER = "<!-- zoo-table -->"
DETECTOR_MARKER = "<!-- detector-table -->"


def _table() -> str:
    from eca_models.weights import CLASSIFICATION, list_checkpoints
    from eca_models.zoo import zoo_rows

    rows = {r.model: r for r in zoo_rows()}
    lines = [
        "| checkpoint | kernel code | params (exact) | published Param (/2^20) | GMACs @224 | published FLOPs (thop MACs /2^30) "
        "| Top-1 / Top-5 reported | paper | measured | Hub | state |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ckpt in list_checkpoints(CLASSIFICATION):
        row = rows[ckpt.model_name]
        top = ckpt.metrics[ckpt.dataset]
        paper = ckpt.paper_metrics[ckpt.dataset] if ckpt.paper_metrics else None
        measured = ckpt.measured_metrics[ckpt.dataset] if ckpt.measured_metrics else None
        state = "published" if ckpt.is_published else "not published yet"
        paper_text = "{} / {}".format(paper["acc@1"], paper["acc@5"]) if paper else "same"
        measured_text = "{} / {}".format(measured["acc@1"], measured["acc@5"]) if measured else "-"
        lines.append(
            f"| `{ckpt.name}` | {ckpt.kernel_code} | {ckpt.num_params:,} | {ckpt.published['params']} "
            f"({ckpt.num_params / 2**20:.2f}M exact) | {row.gmacs:.3f} | {ckpt.published['flops']} "
            f"| {top['acc@1']} / {top['acc@5']} | {paper_text} | {measured_text} "
            f"| [{ckpt.hf_hub_id}](https://huggingface.co/{ckpt.hf_hub_id}) | {state} |"
        )
    return "\n".join(lines)


def _detector_table() -> str:
    from eca_models.weights import list_checkpoints
    from eca_models.zoo import detector_rows

    rows = {r.model: r for r in detector_rows()}
    lines = [
        "| detector | release file | kernel code | Param (release count) | params (exact) | GFLOPs published "
        "| GMACs @1280x800 (flop_counter) | box AP / AP50 / AP75 | APS / APM / APL | mask AP / AP50 / AP75 | state |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ckpt in list_checkpoints():
        if ckpt.is_classifier:
            continue
        row, m = rows[ckpt.architecture], ckpt.metrics["COCO-val2017"]

        def three(*keys, m=m):
            return " / ".join(str(m[k]) for k in keys) if all(k in m for k in keys) else "-"

        lines.append(
            f"| `{ckpt.architecture}` | {ckpt.source_file} | {ckpt.kernel_code} | {ckpt.published['params']} "
            f"({row.release_params / 1e6:.3f}M) | {ckpt.num_params:,} | {ckpt.published['flops']} | {ckpt.gmacs:.2f} "
            f"| {three('box_map', 'box_map_50', 'box_map_75')} | {three('box_map_small', 'box_map_medium', 'box_map_large')} "
            f"| {three('mask_map', 'mask_map_50', 'mask_map_75')} "
            f"| {'published' if ckpt.is_published else 'not published yet'} |"
        )
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _table())
    if DETECTOR_MARKER in markdown:
        markdown = markdown.replace(DETECTOR_MARKER, _detector_table())
    return markdown
