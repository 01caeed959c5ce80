"""One training job, end to end:

  train (recipe) -> evaluate on held-out data -> export ONNX (parity-checked) -> optional INT8
  -> optional TensorRT (GPU workers with the tools) -> register the bundle -> optional promotion
  behind a gate (no worse than production on the same eval set).

Every stage is safe to run again: a re-delivered job resumes training from its checkpoint and
registers its bundle at most once (the version is reserved on the job before export).
"""
from __future__ import annotations

import csv
import logging
import shutil
import time
import traceback
from pathlib import Path

from omniforge_shared.registry_settings import RegistrySettings
from omniforge_shared.settings import load_settings, omniforge_home

from .recipes import JobContext, run_recipe
from omniforge_shared.jobs.specs import DATASET_BUILD, RECIPE_SPECS, DatasetBuildParams, memory_problem
from omniforge_shared.jobs.store import FINAL, JobStore

logger = logging.getLogger("omniforge.jobs")


class JobFailed(RuntimeError):
    pass


def job_dir(job_id: str) -> Path:
    return omniforge_home() / "jobs" / job_id


def resolve_dataset(registry, dataset: str, data_root: Path) -> Path:
    """A registered dataset name (optionally `name:version`) or a path inside the data root."""
    from omniforge_shared.data_root import OutsideDataRoot, resolve_in_data_root

    from ..data import image_text, speech
    from ..data.dataset import verify_dataset
    from ..data.ingest import DataError

    name, _, version = dataset.partition(":")
    try:
        path = registry.dataset_path(name, version or None)
    except Exception:
        try:
            path = resolve_in_data_root(dataset, data_root)
        except (FileNotFoundError, OutsideDataRoot) as e:
            raise JobFailed(f"dataset {dataset!r} is neither a registered dataset nor a path inside the data root: {e}") from None
    if path.is_dir():
        try:
            if image_text.is_image_text(path):
                image_text.load_image_text(path, verify=True)
            elif speech.is_speech(path):
                speech.load_speech(path)
            else:
                verify_dataset(path)
        except DataError as e:
            raise JobFailed(f"dataset {dataset!r} is unusable: {e}") from e
    return path


def _last_checkpoint_step(run_dir: Path) -> int:
    ckpt = run_dir / "ckpt.pt"
    if not ckpt.exists():
        return 0
    from ..checkpoint import load_checkpoint

    return int(load_checkpoint(ckpt)["iter"])


def run_job(job_id: str) -> dict:
    settings = load_settings(RegistrySettings)
    registry = settings.open()
    store = JobStore(registry)
    job = store.get(job_id)
    if job.state in FINAL:
        return {"state": job.state, "skipped": "already finished"}
    if job.cancel_requested:
        return store.finish(job_id, "cancelled").result
    work = job_dir(job_id)
    work.mkdir(parents=True, exist_ok=True)
    job = store.start_attempt(job_id)
    log = _Logger(store, job_id, work)
    log(f"attempt {job.attempts} on recipe {job.recipe}, dataset {job.dataset}")
    try:
        if job.recipe == DATASET_BUILD:
            outcome = build_uploaded_dataset(registry, job, work, settings.data_root, log)
            return store.finish(job_id, "succeeded", result=outcome).result
        _check_memory(job)
        dataset = resolve_dataset(registry, job.dataset, settings.data_root)
        # a resumed attempt: forget metrics recorded after the checkpoint it resumes from
        resume_step = _last_checkpoint_step(work / "run")
        if resume_step:
            store.truncate_metrics(job_id, after_step=resume_step)
            log(f"resuming from the checkpoint at step {resume_step}")
        recorder = _MetricsRecorder(store, job_id, work, resume_step)
        result = run_recipe(job.recipe, JobContext(work_dir=work, dataset=dataset, params=job.params,
                                                   registry=registry, report=recorder.report,
                                                   should_stop=lambda: store.cancel_requested(job_id),
                                                   log=log))
        recorder.close()
        if result.stopped:
            log("cancelled: training stopped at a step boundary; nothing was registered")
            return store.finish(job_id, "cancelled").result
        summary = result.summary
        if summary.get("recipe") == "diffusion":
            q = summary["quality"]
            log(f"evaluation on held-out phrasings: top-5 concept hit {q['top5_concept_hit']:.3f}, CLIP score "
                f"{q['clip_score']:.3f} (shuffled prompts {q['clip_score_shuffled_prompts']:.3f}), Frechet distance "
                f"on our features {q['frechet_distance_own_features']:.2f}")
        elif summary.get("recipe") in ("asr", "tts", "vocoder"):
            flat = {f"{k}_{kk}" if isinstance(v, dict) else k: vv
                    for k, v in summary["quality"].items() if k not in ("examples", "per_voice")
                    for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)])}
            log("evaluation on held-out data: " + (", ".join(f"{k} {v:.4f}" for k, v in flat.items()
                                                             if isinstance(v, float)) or "none (no test split)"))
        elif summary.get("recipe") == "audio-align":
            q = summary["quality"]
            log("evaluation on held-out data (audio -> text R@1, the tower beside the recognizer cascade): " + "; ".join(
                f"{g} {q[g]['tower']['r1']:.3f} vs {q[g]['cascade']['r1']:.3f}" for g in ("all", "heldout_voice",
                                                                                       "training_voices") if q.get(g))
                or "none (no test split)")
        elif "quality" in summary:
            log("evaluation on held-out data: " + "; ".join(
                f"{split} BLEU-4 {q['bleu4']:.1f} CIDEr-D {q['cider_d']:.3f} exact {q['exact_match']:.3f}"
                for split, q in summary["quality"].items()))
        elif "retrieval" in summary:
            log("evaluation on held-out data: " + "; ".join(
                f"{split} i2t R@1 {r['i2t_R@1']:.3f} R@5 {r['i2t_R@5']:.3f}" for split, r in summary["retrieval"].items()))
        else:
            log(f"evaluation on held-out data: val_loss {summary['val_loss']:.4f} "
                f"(perplexity {summary['val_perplexity']:.2f}) over {summary['val_tokens']} tokens"
                + (f"; the base model scored {summary['base_val_loss']:.4f}" if "base_val_loss" in summary else ""))
        outcome = _export_and_register(registry, store, job_id, result, dataset, log)
        return store.finish(job_id, "succeeded", result=outcome).result
    except Exception as e:  # the job fails with its reason; the worker lives on
        message = str(e) if isinstance(e, JobFailed) else f"{type(e).__name__}: {e}"
        log(f"failed: {message}", level="error")
        logger.debug("job %s failed:\n%s", job_id, traceback.format_exc())
        store.finish(job_id, "failed", error=message)
        return {"state": "failed", "error": message}
    finally:
        registry.close()


def _check_memory(job) -> None:
    """A job too big for this worker fails at once with the estimate, not by the kernel's hand."""
    from omniforge_shared.jobs.queue import TrainingSettings

    queue = job.resources.get("queue", "cpu")
    params = RECIPE_SPECS[job.recipe].params.model_validate(job.params)
    limit = load_settings(TrainingSettings).worker_memory_bytes(queue)
    problem = memory_problem(params, limit, where=f"this {queue} worker may use")
    if problem:
        raise JobFailed(problem)


def build_uploaded_dataset(registry, job, work: Path, data_root: Path, log) -> dict:
    """A `dataset-build` job: the uploaded file (job.dataset, inside the data root) is cleaned,
    split and tokenized into a dataset registered as job.model_name."""
    from omniforge_shared.data_root import resolve_in_data_root

    from ..data.dataset import build_dataset
    from ..data.ingest import DataError

    p = DatasetBuildParams.model_validate(job.params)
    source = resolve_in_data_root(job.dataset, data_root)
    out = work / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    try:
        manifest = build_dataset([source], out, name=job.model_name, tokenizer=p.tokenizer,
                                 vocab_size=p.vocab_size, val_fraction=p.val_fraction, seed=p.seed,
                                 language=p.language or None, text_field=p.text_field, log=log)
    except DataError as e:
        raise JobFailed(f"the upload could not be built into a dataset: {e}") from None
    row = registry.register_dataset(out, name=job.model_name)
    log(f"registered dataset {row.name}:{row.version} ({manifest['counts']})")
    return {"dataset": row.name, "version": row.version, "counts": manifest["counts"]}


def _export_and_register(registry, store: JobStore, job_id: str, result, dataset: Path, log) -> dict:
    import numpy as np

    from ..data.dataset import load_dataset_manifest, open_tokens
    from ..export_onnx import export_bundle
    from .model_card import write_model_card

    job = store.get(job_id)
    params = job.params
    # 1. reserve the version on the job first, so a re-delivered job registers the same one
    outcome = dict(job.result)
    if "version" not in outcome:
        outcome["version"] = registry.next_version(job.model_name)
        store.update(job_id, result=outcome)
    version = outcome["version"]
    existing = [v for v in registry.list_versions(job.model_name) if v.version == version]
    if existing:
        bundle = registry.bundle(job.model_name, version)
        if bundle.manifest.get("job_id") != job_id:
            raise JobFailed(f"version {version} of {job.model_name} was registered by another job")
        log(f"bundle {job.model_name}:{version} was already registered by this job")
    else:
        eval_tokens = None
        if dataset.is_dir() and result.export is None:
            manifest = load_dataset_manifest(dataset)
            eval_tokens = np.asarray(open_tokens(dataset / "val.bin", manifest["dtype"])[:20000])
        out = job_dir(job_id) / "bundle"
        shutil.rmtree(out, ignore_errors=True)
        # 2. export (parity-checked), 3. optional INT8
        extra = {"job_id": job_id, "recipe": job.recipe}
        if result.export is not None:
            bundle = result.export(out, job.model_name, version, extra)
        else:
            bundle = export_bundle(result.run_dir, out, name=job.model_name, version=version,
                                   int8=params.get("int8", True), eval_tokens=eval_tokens, log=log, extra=extra)
        if result.finish_bundle is not None:
            result.finish_bundle(out)
        # 4. TensorRT where the worker can (the text decoder graph)
        if result.export is None:
            _tensorrt(out, log)
        # 5. model card with the loss curve, then register
        write_model_card(bundle, store.metrics_history(job_id), job_dir(job_id) / "metrics.csv")
        from omniforge_shared.bundle import load_bundle, rewrite_manifest

        added = {"MODEL_CARD.md": "model-card", "loss_curve.png": "loss-curve"}
        if (out / "model.trt.onnx").exists():
            added["model.trt.onnx"] = "tensorrt-engine"
        rewrite_manifest(out, add_files=added)
        bundle = load_bundle(out)
        info = registry.register_bundle(out)
        log(f"registered {info.name}:{info.version} ({info.stage})")
    outcome.update(model=job.model_name, metrics=bundle.manifest.get("metrics", {}))
    # 6. promotion behind the gate
    if params.get("promote"):
        outcome["promotion"] = _promote(registry, bundle, log, gate=result.gate)
    return outcome


def _tensorrt(bundle_dir: Path, log) -> None:
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        log("TensorRT engine skipped: this worker has no CUDA GPU")
        return
    from omniforge_shared.backends.base import DecoderSpec
    from omniforge_shared.bundle import load_bundle

    from ..export_tensorrt import build_engine, tensorrt_available

    if not tensorrt_available():
        log("TensorRT engine skipped: onnxruntime on this worker has no TensorRT execution provider")
        return
    bundle = load_bundle(bundle_dir)
    try:
        build_engine(bundle.file("model"), bundle_dir / "model.trt.onnx", DecoderSpec.from_bundle(bundle), log=log)
    except Exception as e:  # an optional accelerator: the bundle is served by onnxruntime without it
        (bundle_dir / "model.trt.onnx").unlink(missing_ok=True)
        log(f"TensorRT engine not built ({type(e).__name__}: {e}); the bundle is registered without it")


def _promote(registry, bundle, log, gate: tuple[str, str] = ("val_loss", "min")) -> dict:
    """Production only if no worse than the current production model on the same eval set."""
    name, version = bundle.name, bundle.version
    metric, better = gate
    ours = bundle.manifest.get("metrics", {}).get(metric)
    prod = [v for v in registry.list_versions(name) if v.stage == "production"]
    if prod:
        current = registry.bundle(name, prod[-1].version)
        same_eval = current.manifest.get("data", {}).get("content_hash") == bundle.manifest.get("data", {}).get(
            "content_hash")
        theirs = current.manifest.get("metrics", {}).get(metric)
        if not same_eval or theirs is None:
            log(f"not promoted: production {name}:{current.version} was evaluated on another eval set")
            return {"promoted": False, "reason": "different eval set", "production": current.version}
        if (ours > theirs) if better == "min" else (ours < theirs):
            log(f"not promoted: {metric} {ours:.4f} is worse than production's {theirs:.4f}")
            return {"promoted": False, "reason": f"{metric} {ours:.4f} {'>' if better == 'min' else '<'} {theirs:.4f}",
                    "production": current.version}
    registry.set_stage(name, version, "production")
    log(f"promoted {name}:{version} to production")
    return {"promoted": True}


class _Logger:
    """Job log lines go to the database (for the API) and a file in the job's folder."""

    def __init__(self, store: JobStore, job_id: str, work: Path) -> None:
        self.store, self.job_id, self.path = store, job_id, work / "job.log"

    def __call__(self, message: str, level: str = "info") -> None:
        self.store.log(self.job_id, message, level)
        with open(self.path, "a") as f:
            f.write(f"{level}: {message}\n")
        logger.info("job %s: %s", self.job_id[:8], message)


class _MetricsRecorder:
    """Step reports -> job row + metrics history, TensorBoard events and a CSV in the job folder."""

    def __init__(self, store: JobStore, job_id: str, work: Path, resume_step: int) -> None:
        self.store, self.job_id = store, job_id
        self.csv_path = work / "metrics.csv"
        if resume_step and self.csv_path.exists():   # keep the curve continuous across attempts
            rows = list(csv.reader(self.csv_path.open()))
            kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= resume_step]
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        self.writer = None
        self._last: tuple[int, float] | None = None      # (step, when) of the previous report
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(work / "tensorboard"), purge_step=resume_step or None)
        except ImportError:
            pass

    def report(self, step: int, total: int, eta: float | None, metrics: dict) -> None:
        now = time.monotonic()
        if self._last is not None and step > self._last[0]:
            metrics = {**metrics, "steps_per_s": (step - self._last[0]) / (now - self._last[1])}
        self._last = (step, now)
        self.store.progress(self.job_id, step=step, eta_s=eta, metrics=metrics, max_steps=total)
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "name", "value"])
            w.writerows([step, k, v] for k, v in metrics.items())
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
