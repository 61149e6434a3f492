"""The training loop. It does not know which prompt method or which task it runs.

    config -> task splits -> backbone (sharded) + prompt -> DeepSpeed engine
    -> for each global batch: this rank's micro-batches, forward, backward, step
    -> every eval_every steps: validation by generation; the best prompt (by the task's first
       metric) is kept in memory and written as the artifact; early stopping on patience
    -> the best prompt is scored on the test split -> metrics JSON, TensorBoard
The loss of a step is the token-level cross-entropy of the whole global batch: each
micro-batch's summed loss is divided by the global count of target tokens, so 1 rank and N
ranks (and any accumulation split) optimise and report exactly the same quantity.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import engine
from .backbone import is_encoder_decoder, is_tiny_preset, load_tokenizer, materialize_tiny
from .config import RunConfig
from .data import collate_train, global_batches, micro_batches_for_rank, tokenize
from .evaluation import evaluate
from .monitor import Monitor, log, setup_logging, write_json_atomic
from .prompts import PROMPT_METHODS
from .sandbox import OPT_IN_ERROR
from .tasks import get_task, load_splits


def _limit(ds, n):
    return ds.select(range(min(n, len(ds)))) if n else ds


def prepare_backbone(cfg: RunConfig, splits, out_dir: Path) -> str:
    """Hub id / local path as given; a tiny preset is materialised once into the run dir."""
    if not is_tiny_preset(cfg.model.name):
        return cfg.model.name
    target = out_dir / "backbone"
    with engine.main_process_first():
        if engine.rank() == 0:
            texts = list(splits["train"]["source"]) + list(splits["train"]["target"])
            materialize_tiny(cfg.model.name, texts, target, cfg.model.overrides, seed=cfg.train.seed)
    return str(target.resolve())


@dataclass
class BestTracker:
    """Model selection on rank 0: the best validation value of `metric` (higher is better) and
    how many evaluations in a row have not improved on it."""

    metric: str
    patience: int = 0
    best_step: int | None = None
    best: dict = field(default_factory=dict)
    stale: int = 0

    def update(self, step: int, metrics: dict) -> tuple[bool, bool]:
        """(improved, stop)."""
        value = metrics.get(self.metric, float("-inf"))
        improved = self.best_step is None or value > self.best.get(self.metric, float("-inf"))
        if improved:
            self.best_step, self.best, self.stale = step, dict(metrics), 0
        else:
            self.stale += 1
        return improved, bool(self.patience) and self.stale >= self.patience


def resolve_steps(train_cfg, num_train: int) -> int:
    if train_cfg.epochs is None:
        return train_cfg.steps
    return max(1, math.ceil(train_cfg.epochs * (num_train // train_cfg.batch_size)))


def run(cfg: RunConfig, dry_run: bool = False, on_step=None, allow_code_execution: bool = False) -> dict:
    """Train, select, test, save. `on_step(step, train_engine, loss)` runs on every rank after each step.
    Tasks scored by running generated code (MBPP) need `allow_code_execution` (--allow-code-execution)."""
    started = time.time()
    task = get_task(cfg.task.name)
    if task.executes_code and not allow_code_execution and not dry_run:
        raise PermissionError(f"task {task.name} is scored by executing the generated code: {OPT_IN_ERROR}")
    if cfg.task.num_samples > 1 and task.score is None:
        raise ValueError(f"task.num_samples={cfg.task.num_samples}: only tasks scored by pass@k (mbpp) take several samples")
    sampling = cfg.task.sampling(task.sampling)
    if cfg.task.num_samples > 1 and not sampling["do_sample"]:
        raise ValueError(f"task.num_samples={cfg.task.num_samples} needs sampling (task.do_sample: true): greedy samples are identical")
    rank, world = engine.setup_distributed()
    setup_logging(rank)
    torch.manual_seed(cfg.train.seed)
    out_dir = Path(cfg.train.output_dir)
    max_source = cfg.task.max_source_length or task.max_source_length
    if task.budget_includes_prompt and not cfg.task.max_source_length:
        max_source -= PROMPT_METHODS[cfg.prompt.method].prompt_length(cfg.prompt)
        if max_source < 16:
            raise ValueError(f"task {task.name}: the {task.max_source_length}-token budget leaves {max_source} tokens "
                             f"for the text after a {cfg.prompt.length}-token prompt")
    max_target = cfg.task.max_target_length or task.max_target_length
    max_new_tokens = cfg.task.max_new_tokens or task.max_new_tokens

    with engine.main_process_first():  # rank 0 fills the datasets cache, the others reuse it
        splits = load_splits(task, cfg.task)
    splits["train"] = _limit(splits["train"], cfg.task.max_train_examples)
    for split in ("validation", "test"):
        splits[split] = _limit(splits[split], cfg.task.max_eval_examples)
    backbone_path = prepare_backbone(cfg, splits, out_dir)
    tokenizer = load_tokenizer(backbone_path)
    encoder_decoder = is_encoder_decoder(backbone_path)
    with engine.main_process_first():
        data = {k: tokenize(v, tokenizer, encoder_decoder, max_source, max_target, fit_source=task.fit_source if k == "train" else None,
                            keep_source_end=task.truncate_source_left)
                for k, v in splits.items()}
    steps = resolve_steps(cfg.train, len(data["train"]))

    ds_config = engine.build_ds_config(
        cfg.deepspeed.config, cfg.deepspeed.overrides, batch_size=cfg.train.batch_size,
        micro_batch_size=cfg.train.micro_batch_size, dtype=cfg.model.dtype, grad_clip=cfg.train.grad_clip, world=world,
    )
    built = engine.build_model(backbone_path, cfg.prompt, ds_config, dtype=cfg.model.dtype, dropout=cfg.model.dropout, tokenizer=tokenizer, seed=cfg.train.seed)
    model = built.model
    trainable, total = model.trainable_parameter_summary()
    log.info(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / max(total, 1):.4f}")
    log.info(
        f"method={cfg.prompt.method} task={task.name} backbone={backbone_path} world_size={world} "
        f"zero_stage={engine.zero_stage(ds_config)} dtype={cfg.model.dtype} steps={steps} "
        f"train/val/test={len(data['train'])}/{len(data['validation'])}/{len(data['test'])}"
    )
    if dry_run:
        log.info("dry run: everything built, exiting before training")
        return {"trainable_params": trainable, "all_params": total, "dry_run": True, "steps": steps,
                "split_sizes": {k: len(v) for k, v in data.items()}}

    train_engine = engine.TrainEngine(
        built, prompt_lr=cfg.train.prompt_lr, network_lr=cfg.train.network_lr, weight_decay=cfg.train.weight_decay,
        adam_eps=cfg.train.adam_eps, warmup_steps=cfg.train.warmup_steps, total_steps=steps,
    )
    gas = train_engine.gradient_accumulation_steps
    monitor = Monitor(str(out_dir / "tensorboard"), steps, enabled=rank == 0)
    train_set, pad_id = data["train"], tokenizer.pad_token_id
    batches = global_batches(len(train_set), cfg.train.batch_size, cfg.train.seed)
    artifact_dir = str(out_dir / "prompt")
    tracker = BestTracker(task.metric_names[0], cfg.train.early_stopping_patience)
    best_state: dict | None = None
    losses: list[float] = []
    evals: list[dict] = []

    def run_eval(step: int, split: str) -> dict:
        metrics = evaluate(
            train_engine.module, task, data[split], tokenizer, batch_size=cfg.train.eval_batch_size,
            max_new_tokens=max_new_tokens, predictions_path=str(out_dir / "predictions" / f"{split}_step{step}.jsonl"),
            num_samples=cfg.task.num_samples, sampling=sampling, seed=cfg.train.seed + step, allow_code_execution=allow_code_execution,
        )
        if rank == 0:
            monitor.scalars(step, {f"eval/{split}/{k}": v for k, v in metrics.items()})
            log.info(f"step {step} {split}: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
        return metrics

    train_engine.train()
    train_started = time.time()
    stopped_early = False
    step = 0
    while step < steps:
        step += 1
        step_started = time.time()
        micro = [[train_set[i] for i in mb] for mb in micro_batches_for_rank(next(batches), cfg.train.micro_batch_size, rank, world)]
        batches_t = [collate_train(rows, pad_id) for rows in micro]
        global_tokens = engine.all_reduce_sum(sum(model.count_target_tokens(b["labels"]) for b in batches_t))
        local_loss = 0.0
        for batch in batches_t:
            out = train_engine.forward(batch)
            # DeepSpeed averages gradients over ranks and divides by the accumulation steps:
            # undo both so the gradient is that of (sum of token losses) / (global tokens).
            train_engine.backward(out.loss_sum * (world * gas / max(global_tokens, 1.0)))
            train_engine.step()
            local_loss += out.loss_sum.item()
        loss = engine.all_reduce_sum(local_loss) / max(global_tokens, 1.0)
        losses.append(loss)
        if on_step is not None:
            on_step(step, train_engine, loss)
        lrs = train_engine.learning_rates()
        monitor.scalars(step, {"train/loss": loss, "train/grad_norm": train_engine.grad_norm(), "train/step_time_s": time.time() - step_started,
                               **{f"train/lr_{g}": lr for g, lr in lrs.items()}})
        monitor.advance({"loss": f"{loss:.4f}"})
        if step % cfg.train.log_every == 0 or step == 1 or step == steps:
            log.info(f"step {step}/{steps} loss {loss:.4f} " + " ".join(f"lr_{g}={lr:.3g}" for g, lr in lrs.items()))
        if (cfg.train.eval_every and step % cfg.train.eval_every == 0) or step == steps:
            metrics = run_eval(step, "validation")
            evals.append({"step": step, "validation": metrics})
            improved, stop = engine.broadcast_object(tracker.update(step, metrics) if rank == 0 else None)
            if improved:  # keep it in memory for the test split, and on disk as the artifact
                best_state = engine.trainable_state(model)
                engine.save_artifact(model, artifact_dir, state=best_state, base_model=backbone_path, tokenizer=backbone_path,
                                     task=task.name, trainable_params=trainable, steps=step)
            if stop and step < steps:
                stopped_early = True
                log.info(f"early stopping at step {step}: {tracker.patience} evaluations without a better {tracker.metric}")
                break
    train_seconds = time.time() - train_started

    best_step = engine.broadcast_object(tracker.best_step)
    best_validation = tracker.best
    if data["test"]._fingerprint == data["validation"]._fingerprint:
        # The protocol tests on the validation rows (MBPP 50-50, split_mode official): the
        # evaluation of the best step already is the test evaluation.
        log.info(f"the test split is the validation split: reporting the evaluation at step {best_step}")
        test = dict(best_validation)
    else:
        if best_step != step:
            engine.load_trainable_state(model, best_state)
        test = run_eval(best_step, "test")
    if rank == 0:
        monitor.scalars(best_step, {f"eval/best_validation/{k}": v for k, v in best_validation.items()})
    monitor.close()
    result = {
        "task": task.name, "method": cfg.prompt.method, "backbone": backbone_path, "world_size": world,
        "zero_stage": engine.zero_stage(ds_config), "dtype": cfg.model.dtype,
        "trainable_params": trainable, "all_params": total,
        "steps": steps, "steps_run": step, "stopped_early": stopped_early,
        "train_loss": losses, "evaluations": evals,
        "selection_metric": task.metric_names[0], "best_step": best_step, "generation": {"num_samples": cfg.task.num_samples, **sampling},
        "validation": best_validation, "test": test,
        "train_seconds": train_seconds, "wall_seconds": time.time() - started,
        "artifact": str(Path(artifact_dir).resolve()), "tensorboard": str((out_dir / "tensorboard").resolve()),
        "config": cfg.to_dict(),
    }
    metrics_path = out_dir / "metrics.json"
    if rank == 0:
        write_json_atomic(metrics_path, result)
        result["metrics"] = str(metrics_path.resolve())
        log.info(f"best step {best_step} by validation {tracker.metric}; held-out test: " + ", ".join(f"{k}={v:.2f}" for k, v in test.items()))
        log.info(f"metrics:     {result['metrics']}")
        log.info(f"artifact:    {result['artifact']}")
        log.info(f"tensorboard: {result['tensorboard']}")
    engine.barrier()
    return result
