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

from . import checkpoint, engine
from .backbone import is_encoder_decoder, is_tiny_preset, load_tokenizer, materialize_tiny
from .config import RunConfig
from .data import collate_train, global_batches, micro_batches_for_rank, tokenize
from .evaluation import evaluate
from .monitor import Monitor, log, peak_memory_mb, setup_logging, write_json_atomic
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


def _on_rank0_then_everywhere(fn):
    """Run fn on rank 0 only (files may exist only there) and hand its result, or its error,
    to every rank, so that all ranks go on or stop together."""
    result, error = None, None
    if engine.rank() == 0:
        try:
            result = fn()
        except (ValueError, FileNotFoundError) as err:
            error = err
    result, error = engine.broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def _check_resumable(saved: dict, cfg: RunConfig, path) -> None:
    """A checkpoint continues the run that wrote it: same method, task, data order and seed."""
    before, after = saved["config"], cfg.to_dict()
    for section, key in (("prompt", None), ("task", "name"), ("train", "batch_size"), ("train", "seed"), ("train", "group_by_length"),
                         ("model", "name")):
        was = before[section] if key is None else before[section][key]
        now = after[section] if key is None else after[section][key]
        if was != now:
            name = section if key is None else f"{section}.{key}"
            raise ValueError(f"--resume {path}: the checkpoint was written with {name}={was!r}, this run has {now!r}; "
                             "a checkpoint only continues the run that wrote it")


def resolve_steps(train_cfg, num_train: int) -> int:
    if train_cfg.epochs is None:
        return train_cfg.steps
    return max(1, math.ceil(train_cfg.epochs * (num_train // train_cfg.batch_size)))


def run(cfg: RunConfig, dry_run: bool = False, on_step=None, allow_code_execution: bool = False, resume: str | None = None) -> dict:
    """Train, select, test, save. `on_step(step, train_engine, loss)` runs on every rank after each step.
    Tasks scored by running generated code (MBPP) need `allow_code_execution` (--allow-code-execution).
    `resume`: "latest" (the newest complete checkpoint of OUTPUT_DIR, if any) or a checkpoint path."""
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
    built = engine.build_model(backbone_path, cfg.prompt, ds_config, dtype=cfg.model.dtype, dropout=cfg.model.dropout, tokenizer=tokenizer, seed=cfg.train.seed,
                              gradient_checkpointing=cfg.model.gradient_checkpointing)
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
    train_set, pad_id = data["train"], tokenizer.pad_token_id
    artifact_dir = str(out_dir / "prompt")
    ckpt_root = out_dir / "checkpoints"
    tracker = BestTracker(task.metric_names[0], cfg.train.early_stopping_patience)
    best_state: dict | None = None
    losses: list[float] = []
    evals: list[dict] = []
    spectra: list[list] = []  # [step, singular values] of the effective prompt

    lengths = [len(ids) for ids in train_set["input_ids"]] if cfg.train.group_by_length else None

    def batch_stream():
        return global_batches(len(train_set), cfg.train.batch_size, cfg.train.seed, lengths=lengths)

    def my_micro_batches(global_batch: list[int]) -> list[dict]:
        mbs = micro_batches_for_rank(global_batch, cfg.train.micro_batch_size, rank, world)
        return [collate_train([train_set[i] for i in mb], pad_id) for mb in mbs]

    step = 0
    resume_path = _on_rank0_then_everywhere(lambda: checkpoint.resolve(resume, ckpt_root)) if resume else None
    if resume_path is not None:
        tensors, saved = _on_rank0_then_everywhere(lambda: checkpoint.read(resume_path))
        _check_resumable(saved, cfg, resume_path)
        warmup = my_micro_batches(next(batch_stream()))
        train_engine.load_state_dict({**saved, "tensors": {k[len("train/"):]: v for k, v in tensors.items() if k.startswith("train/")}}, warmup)
        step, losses, evals, spectra = saved["step"], saved["losses"], saved["evals"], saved["spectra"]
        if saved["has_best"]:
            best_state = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
        for key, value in saved["tracker"].items():
            setattr(tracker, key, value)
        if saved["world_size"] == world:  # the same ranks continue their own random streams (dropout)
            torch.set_rng_state(tensors[f"rng/rank{rank}/cpu"])
            if torch.cuda.is_available() and f"rng/rank{rank}/cuda0" in tensors:
                torch.cuda.set_rng_state_all([tensors[f"rng/rank{rank}/cuda{i}"] for i in range(torch.cuda.device_count())])
        else:
            log.info(f"elastic resume: world size {saved['world_size']} -> {world}; the data order, prompt, optimizer and "
                     "schedule continue exactly, the random streams (dropout) of the new ranks start fresh")
        log.info(f"resumed from {resume_path} at step {step}/{steps}")
    elif resume:
        log.info(f"--resume: no complete checkpoint in {ckpt_root} yet, starting from step 0")
    batches = batch_stream()
    for _ in range(step):  # the data position: the global batch sequence is fixed by the seed
        next(batches)
    monitor = Monitor(str(out_dir / "tensorboard"), steps, enabled=rank == 0, initial=step)

    def save_checkpoint(at_step: int) -> None:
        """Every rank gathers (collective); rank 0 writes the directory atomically."""
        state = train_engine.state_dict()
        rngs = engine.all_gather_objects({"cpu": torch.get_rng_state(),
                                          "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []})
        if rank == 0:
            tensors = {f"train/{k}": v for k, v in state["tensors"].items()}
            tensors.update({f"best/{k}": v for k, v in (best_state or {}).items()})
            for r, rng in enumerate(rngs):
                tensors[f"rng/rank{r}/cpu"] = rng["cpu"]
                tensors.update({f"rng/rank{r}/cuda{i}": t for i, t in enumerate(rng["cuda"])})
            saved = {
                "step": at_step, "steps": steps, "world_size": world, "data_position": {"global_batches_consumed": at_step},
                "optimizer_step": state["optimizer_step"], "scheduler": state["scheduler"],
                "global_steps": state["global_steps"], "global_samples": state["global_samples"],
                "losses": losses, "evals": evals, "spectra": spectra, "has_best": best_state is not None,
                "tracker": {k: getattr(tracker, k) for k in ("best_step", "best", "stale")}, "config": cfg.to_dict(),
            }
            path = checkpoint.write(ckpt_root, at_step, tensors, saved)
            checkpoint.prune(ckpt_root, cfg.train.keep_checkpoints, {tracker.best_step} if tracker.best_step else set())
            log.info(f"checkpoint: {path}")
        engine.barrier()

    def log_spectrum(at_step: int) -> None:
        values = engine.prompt_spectrum(model)  # collective
        if values is not None and rank == 0:
            spectra.append([at_step, [round(v, 6) for v in values.tolist()]])
            monitor.spectrum(at_step, values)

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
    stopped_early = paused = False
    first_step = step
    if step == 0 and cfg.train.spectrum_every:
        log_spectrum(0)
    while step < steps:
        step += 1
        step_started = time.time()
        batches_t = my_micro_batches(next(batches))
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
        seconds = time.time() - step_started
        monitor.scalars(step, {"train/loss": loss, "train/grad_norm": train_engine.grad_norm(), "train/step_time_s": seconds,
                               "train/tokens_per_s": global_tokens / seconds, "train/samples_per_s": cfg.train.batch_size / seconds,
                               "train/peak_memory_mb": peak_memory_mb(), **{f"train/lr_{g}": lr for g, lr in lrs.items()}})
        monitor.advance({"loss": f"{loss:.4f}"})
        if step % cfg.train.log_every == 0 or step == 1 or step == steps:
            log.info(f"step {step}/{steps} loss {loss:.4f} " + " ".join(f"lr_{g}={lr:.3g}" for g, lr in lrs.items()))
        if cfg.train.spectrum_every and (step % cfg.train.spectrum_every == 0 or step == steps):
            log_spectrum(step)
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
        pause_now = bool(cfg.train.max_steps_per_run) and step - first_step >= cfg.train.max_steps_per_run and step < steps
        if (cfg.train.checkpoint_every and (step % cfg.train.checkpoint_every == 0 or step == steps)) or pause_now:
            save_checkpoint(step)
        if pause_now:
            paused = True
            log.info(f"stopping after {cfg.train.max_steps_per_run} steps of this run at step {step}/{steps} "
                     f"(train.max_steps_per_run); continue with --resume")
            break
    if paused:
        monitor.close()
        engine.barrier()
        return {"paused_at_step": step, "steps": steps, "train_loss": losses, "checkpoint": str(ckpt_root / f"step_{step:08d}")}
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
        if spectra:
            monitor.spectrum_plot(spectra, out_dir / "spectrum.png", out_dir / "spectrum.json")
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
        "spectrum": spectra[-1] if spectra else None,
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
