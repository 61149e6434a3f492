"""Export a trained prompt for inference: fold what can be folded, so serving costs what plain
prompt tuning costs (or nothing extra at all). Each method declares its form (export_form):

    "prompt"             the effective prompt P (l x d; DPT: the product A.B) as a plain
                         prompt-tuning artifact (dpt, pt, residual)
    "merged_embeddings"  the short prompt as a prompt-tuning artifact plus the merged input
                         table E + f(E) (the offset depends only on the token id), installed in
                         place of the backbone's input embeddings (adept)
    None                 nothing to fold (dept: position-dependent offsets; lora: adapters
                         inside the backbone): use the artifact as it is

An export is an ordinary artifact: `PromptedModel.from_pretrained(backbone, DIR)` attaches it
(and installs the merged table when there is one, model.install_input_embeddings) and generates.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .artifact import MERGED_TABLE, check_prompt_meta, read_artifact, write_artifact
from .prompts import PROMPT_METHODS, PromptConfig, build_prompt, make_prompt_config

# what an export keeps of its artifact's record: the base model, and how inputs were fed
CARRIED = (
    "base_model",
    "base_model_name",
    "tokenizer",
    "task",
    "steps",
    "max_source_length",
    "truncate_source_left",
    "max_new_tokens",
)


def _load_method(artifact_dir: str):
    meta, state = read_artifact(artifact_dir)
    check_prompt_meta(meta, artifact_dir)
    config = make_prompt_config(meta["prompt"], warn=False, source=f"{artifact_dir}: prompt")
    method = build_prompt(config, meta["embed_dim"])
    method.load_state_dict(state)
    return meta, method.float().eval()


@torch.no_grad()
def merged_input_table(method, table: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """E + f(E) for every row of the input embedding table (ADePT's offset, dropout off)."""
    rows = []
    for start in range(0, table.shape[0], chunk):
        e = table[start : start + chunk].float()
        rows.append(e + method.offset(e))
    return torch.cat(rows).to(table.dtype)


def export(artifact_dir: str, out_dir: str, merge_embeddings: bool = False, backbone=None) -> str:
    """Write the inference form of an artifact to out_dir (atomically). `backbone` (a loaded
    model) is needed only to merge ADePT's embedding table; by default the artifact's base model."""
    meta, method = _load_method(artifact_dir)
    name = meta["prompt"]["method"]
    form = PROMPT_METHODS[name].export_form
    if form is None:
        raise ValueError(f"{artifact_dir}: a {name} prompt has nothing to fold ({PROMPT_METHODS[name].export_refusal})")
    if merge_embeddings and form != "merged_embeddings":
        raise ValueError(
            f"{artifact_dir}: --merge-embeddings applies to methods with a token-only offset (ADePT), not {name}"
        )
    if form == "merged_embeddings" and not merge_embeddings:
        raise ValueError(
            f"{artifact_dir}: an ADePT export without --merge-embeddings would drop its offset network; "
            "pass --merge-embeddings (and --backbone if the base model moved)"
        )
    with torch.no_grad():
        prompt = method.effective_prompt().float().clone()
    extra = {}
    if merge_embeddings:
        if backbone is None:
            from .backbone import load_backbone

            backbone = load_backbone(meta["base_model"])
        table = backbone.get_input_embeddings().weight.detach()
        if table.shape[1] != meta["embed_dim"]:
            raise ValueError(
                f"{artifact_dir}: trained for embedding size {meta['embed_dim']}, the backbone has {table.shape[1]}"
            )
        extra[MERGED_TABLE] = {"weight": merged_input_table(method, table)}
    carried = {k: v for k, v in meta.items() if k in CARRIED}
    exported = PromptConfig(method="pt", length=prompt.shape[0], init="random")
    return write_artifact(
        out_dir,
        {"prompt.weight": prompt},
        {
            "prompt": exported.to_dict(),
            "embed_dim": meta["embed_dim"],
            **carried,
            "exported_from": {"method": name, "artifact": str(Path(artifact_dir).resolve()), "config": meta["prompt"]},
            "merged_input_embeddings": bool(merge_embeddings),
        },
        extra_files=extra,
    )
