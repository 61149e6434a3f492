"""PromptedModel: a frozen Hugging Face backbone with a soft-prompt method in front of it.

The path every method takes, in training and in generation alike:
    embed input tokens -> method adds its offset to real tokens -> prepend the method's prompt
    -> backbone forward / generate on inputs_embeds.
Encoder-decoder (T5 family): the prompt precedes the encoder input; decoder inputs are plain
embeddings (no offset). Decoder-only: the prompt precedes the whole sequence, its positions get
label -100, and position ids come from the attention mask so left and right padding agree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .artifact import MERGED_TABLE, check_prompt_meta, read_artifact, read_tensors, write_artifact
from .data import IGNORE_INDEX
from .prompts import PromptConfig, PromptMethod, build_prompt, make_prompt_config


@dataclass
class PromptedOutput(ModelOutput):
    """A ModelOutput (a dict) so that ZeRO-3's hooks can find the tensors in it."""

    loss: torch.Tensor | None = None  # mean token cross-entropy of this batch
    loss_sum: torch.Tensor | None = None  # summed token cross-entropy of this batch
    num_tokens: torch.Tensor | None = None  # target tokens in this batch
    logits: torch.Tensor | None = None


def install_input_embeddings(backbone: nn.Module, table: torch.Tensor) -> None:
    """Use `table` for the input tokens only: the encoder's inputs (T5: not the decoder's, which
    never received the offset) or a decoder-only model's inputs. A tied output head keeps the
    original matrix. (How an ADePT export's merged table E + f(E) is attached.)"""
    embedding = torch.nn.Embedding.from_pretrained(table, freeze=True)
    if backbone.config.is_encoder_decoder:
        backbone.get_encoder().embed_tokens = embedding
    else:
        backbone.set_input_embeddings(embedding)


class PromptedModel(nn.Module):
    def __init__(self, backbone: nn.Module, prompt: PromptMethod):
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.backbone.requires_grad_(False)
        prompt.attach(self.backbone)  # LoRA installs its adapters (trainable) inside the backbone
        self.is_encoder_decoder = bool(backbone.config.is_encoder_decoder)

    # ---- construction / persistence (PEFT-style API) -------------------------------------
    @classmethod
    def from_config(cls, backbone: nn.Module, config: PromptConfig) -> PromptedModel:
        prompt = build_prompt(config, backbone.get_input_embeddings().embedding_dim)
        # Same dtype as the backbone (bf16 runs: DeepSpeed keeps the fp32 master copy in the optimizer).
        return cls(backbone, prompt.to(backbone.dtype))

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, artifact_dir: str, is_trainable: bool = False) -> PromptedModel:
        """Attach a saved prompt artifact to a backbone (one call, ready to generate)."""
        meta, state = read_artifact(artifact_dir)
        check_prompt_meta(meta, artifact_dir)
        if meta.get("merged_input_embeddings"):  # an ADePT export: its offsets live in a merged input table
            merged = read_tensors(Path(artifact_dir) / MERGED_TABLE)
            if "weight" not in merged:
                raise ValueError(f"{Path(artifact_dir) / MERGED_TABLE}: holds no 'weight' table")
            table = merged["weight"]
            expected = tuple(backbone.get_input_embeddings().weight.shape)
            if tuple(table.shape) != expected:
                raise ValueError(
                    f"{artifact_dir}: merged input table {list(table.shape)} does not fit this backbone's "
                    f"{list(expected)}"
                )
            install_input_embeddings(backbone, table.to(backbone.dtype))
        model = cls.from_config(
            backbone, make_prompt_config(meta["prompt"], warn=False, source=f"{artifact_dir}: prompt")
        )
        expected = meta.get("embed_dim")
        if expected is not None and expected != model.prompt.embed_dim:
            raise ValueError(
                f"{artifact_dir}: prompt was trained for embedding size {expected}, "
                f"backbone has {model.prompt.embed_dim}"
            )
        params = dict(model.trainable_named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(
                f"{artifact_dir}: prompt tensors do not match the method (missing {missing}, unexpected {unexpected})"
            )
        with torch.no_grad():
            for name, p in params.items():
                if tuple(state[name].shape) != tuple(p.shape):
                    raise ValueError(
                        f"{artifact_dir}: {name} has shape {list(state[name].shape)}, "
                        f"the method expects {list(p.shape)}"
                    )
                p.copy_(state[name].to(p.dtype))
        # ready for inference, as transformers and PEFT load models: dropout off (ADePT's offset
        # network has some). is_trainable=True: in training mode, to train the prompt further.
        return model.train(is_trainable)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Everything that trains, by artifact key: a method's own tensors by their name in the
        method ("prompt.weight", "ffn.0.weight"); adapters installed in the backbone (LoRA) as
        "backbone.<path>"."""
        return [
            (name[len("prompt.") :] if name.startswith("prompt.") else name, p)
            for name, p in self.named_parameters()
            if p.requires_grad
        ]

    def save_pretrained(self, out_dir: str, state_dict: dict | None = None, **metadata) -> str:
        """Write the trainable-only artifact. Under ZeRO-3 pass the gathered `state_dict` (engine.py)."""
        state = state_dict if state_dict is not None else {k: p.detach() for k, p in self.trainable_named_parameters()}
        meta = {"prompt": self.prompt.config.to_dict(), "embed_dim": self.prompt.embed_dim, **metadata}
        return write_artifact(out_dir, state, meta)

    def trainable_parameter_summary(self, numel=torch.Tensor.numel) -> tuple[int, int]:
        """(trainable, all) parameter counts. A ZeRO-3-partitioned model holds shards only:
        count it with `engine.parameter_counts(model)`, which passes the full-size rule."""
        trainable = sum(numel(p) for p in self.parameters() if p.requires_grad)
        return trainable, sum(numel(p) for p in self.parameters())

    def print_trainable_parameters(self, numel=torch.Tensor.numel) -> str:
        trainable, total = self.trainable_parameter_summary(numel)
        share = 100 * trainable / max(total, 1)
        line = f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {share:.4f}"
        print(line, flush=True)
        return line

    def count_target_tokens(self, labels: torch.Tensor) -> int:
        """How many labels forward() will score for this batch (what the loss is normalised by)."""
        if self.is_encoder_decoder or self.prompt.num_virtual_tokens > 0:
            return int((labels != IGNORE_INDEX).sum())
        return int((labels[:, 1:] != IGNORE_INDEX).sum())  # nothing predicts the very first token

    # ---- the shared input path ------------------------------------------------------------
    def _prompted_inputs(self, input_ids, attention_mask):
        """Embeddings with offsets, the prompt prepended, and the extended attention mask."""
        embeds = self.input_embeddings()(input_ids)
        mask = attention_mask.bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        embeds, prompt = self.prompt(embeds, mask, positions)
        batch, length = input_ids.shape[0], prompt.shape[0]
        embeds = torch.cat([prompt.unsqueeze(0).expand(batch, -1, -1), embeds], dim=1)
        full_mask = torch.cat([attention_mask.new_ones(batch, length), attention_mask], dim=1)
        return embeds, full_mask

    def input_embeddings(self) -> nn.Module:
        """The table that embeds input tokens: the encoder's for encoder-decoders (normally the
        shared one; an exported ADePT prompt swaps in its merged table there only)."""
        if self.is_encoder_decoder:
            return self.backbone.get_encoder().get_input_embeddings()
        return self.backbone.get_input_embeddings()

    @staticmethod
    def _position_ids(mask):
        # Position of each token among the real ones: identical for left and right padding.
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(self, input_ids, attention_mask, labels=None) -> PromptedOutput:
        embeds, mask = self._prompted_inputs(input_ids, attention_mask)
        if self.is_encoder_decoder:
            if labels is None:
                raise ValueError("an encoder-decoder forward needs labels (they define the decoder input)")
            decoder_input_ids = self.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.backbone(
                inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False
            ).logits
            scored, targets = logits, labels
        else:
            logits = self.backbone(
                inputs_embeds=embeds, attention_mask=mask, position_ids=self._position_ids(mask), use_cache=False
            ).logits
            if labels is None:
                return PromptedOutput(logits=logits)
            prompt_labels = labels.new_full((labels.shape[0], embeds.shape[1] - labels.shape[1]), IGNORE_INDEX)
            # token t predicts token t+1: drop the last logit and the first label
            scored, targets = logits[:, :-1], torch.cat([prompt_labels, labels], dim=1)[:, 1:]
        # Summed (not averaged) so the training loop can normalise by the global token count:
        # the loss is then the same whatever the world size or accumulation split.
        loss_sum = F.cross_entropy(
            scored.float().reshape(-1, scored.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        num_tokens = (targets != IGNORE_INDEX).sum()
        return PromptedOutput(
            loss=loss_sum / num_tokens.clamp(min=1), loss_sum=loss_sum, num_tokens=num_tokens, logits=logits
        )

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, **generate_kwargs) -> torch.Tensor:
        """Generate continuations; returns only the new tokens [B, T_new] for both model kinds.

        Under ZeRO-3 with several ranks pass synced_gpus=True and make the same number of calls
        on every rank (evaluation.py does both).
        """
        embeds, mask = self._prompted_inputs(input_ids, attention_mask)
        if self.is_encoder_decoder:
            out = self.backbone.generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)
            return out[:, 1:]  # drop the decoder start token
        with self._offsets_on_generated_tokens(attention_mask):
            return self.backbone.generate(
                inputs_embeds=embeds, attention_mask=mask, position_ids=self._position_ids(mask), **generate_kwargs
            )

    @contextlib.contextmanager
    def _offsets_on_generated_tokens(self, attention_mask):
        """Decoder-only: tokens generated after the first step are embedded by the backbone
        itself; in training those positions (targets) received the method's offset, so add it
        here too. Each call embeds one new token per row, at the next real-token position."""
        if not self.prompt.has_offset:
            yield
            return
        next_position = attention_mask.long().sum(-1, keepdim=True)

        def add_offset(module, args, output):
            nonlocal next_position
            steps = output.shape[1]
            positions = next_position + torch.arange(steps, device=output.device)
            next_position = next_position + steps
            token_mask = torch.ones(output.shape[:2], dtype=torch.bool, device=output.device)
            return self.prompt(output, token_mask, positions)[0]

        handle = self.backbone.get_input_embeddings().register_forward_hook(add_offset)
        try:
            yield
        finally:
            handle.remove()
