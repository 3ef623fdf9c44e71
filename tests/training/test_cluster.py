"""Beyond one machine: the SLURM launcher config, resuming a requeued job, DDP writes by rank 0
only, and a multirun through submitit's local executor."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from safetensors.torch import load_file

from rvc_lora.training.callbacks import ResumeCheckpoint
from rvc_lora.training.cluster import restart_count, resume_path
from rvc_lora.utils.cli import CONFIG_DIR
from rvc_lora.utils.errors import ConfigError
from tests.training.conftest import FAST

REPO = Path(CONFIG_DIR).parent


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    return cfg


def test_slurm_launcher_resolves_overrides_into_sbatch_lines(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    cfg = _compose(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.tasks_per_node=4",
            "hydra.launcher.timeout_min=90",
            "hydra.launcher.array_parallelism=2",
            "+hydra.launcher.additional_parameters.mail-type=END",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    p = launcher.params
    assert p["submitit_folder"] == f"{tmp_path / 'sweep'}/.submitit/%j"  # resolved, in the sweep
    assert (p["partition"], p["nodes"], p["gpus_per_node"], p["tasks_per_node"]) == ("gpu", 2, 4, 4)
    assert (p["timeout_min"], p["array_parallelism"], p["max_num_timeout"]) == (90, 2, 3)
    assert (p["cpus_per_task"], p["mem_gb"], p["name"]) == (8, 32, cfg.hydra.job.name)

    # The plugin's own launch() turns them into executor parameters; submitting is replaced by
    # a recorder, and the sbatch script submitit would write is rendered from them.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it on PATH
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    seen = {}

    def map_array(executor, fn, *args):
        seen["executor"], seen["jobs"] = executor, list(zip(*args))
        return [SimpleNamespace(results=lambda: ["done"]) for _ in seen["jobs"]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["lora.rank=8"], ["lora.rank=16"], ["lora.rank=32"]], 0) == ["done"] * 3
    assert [j[0] for j in seen["jobs"]] == [["lora.rank=8"], ["lora.rank=16"], ["lora.rank=32"]]
    slurm = seen["executor"]._executor
    assert slurm.max_num_timeout == 3
    slurm.parameters["map_count"] = 3
    script = slurm._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ["--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4",
                 "--cpus-per-task=8", "--mem=32GB", "--time=90", "--array=0-2%2",
                 "--mail-type=END", f"--job-name={cfg.hydra.job.name}"]:  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line


def test_local_launcher_is_submitits_local_executor():
    cfg = _compose(["hydra/launcher=local"])
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"
    assert (cfg.hydra.launcher.gpus_per_node, cfg.hydra.launcher.tasks_per_node) == (0, 1)


def _trainer(folder: Path, keeper: bool = True):
    callbacks = [ResumeCheckpoint(dirpath=folder / "checkpoints")] if keeper else []
    return SimpleNamespace(callbacks=callbacks, default_root_dir=str(folder))


def test_auto_resumes_from_last_ckpt_and_a_requeued_job_does_too(tmp_path):
    trainer = _trainer(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    first_start, requeued = {}, {"SLURM_RESTART_COUNT": "2"}
    assert resume_path("explicit.ckpt", trainer, requeued) == "explicit.ckpt"
    assert resume_path(None, trainer, requeued) is None  # nothing saved yet: fresh
    assert resume_path("auto", trainer, first_start) is None
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resume_path("auto", trainer, first_start) == str(last)
    assert resume_path(None, trainer, requeued) == str(last)
    assert resume_path(None, trainer, first_start) is None  # a plain rerun starts over
    assert (
        restart_count(requeued),
        restart_count({}),
        restart_count({"SLURM_RESTART_COUNT": ""}),
    ) == (2, 0, 0)
    with pytest.raises(ConfigError, match="ckpt_path=auto resumes from callbacks.last_checkpoint"):
        resume_path("auto", _trainer(tmp_path, keeper=False), first_start)
    assert resume_path(None, _trainer(tmp_path, keeper=False), requeued) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_ddp_under_slurm_writes_once_and_ranks_split_the_data(
    tmp_path, shared_root, voice_dir
):
    """`trainer=ddp trainer.num_nodes=2` in the two processes SLURM would start for a 2-node job
    of one task each (gloo on CPU), each with its own run dir so that what each rank writes
    can be told apart. Two nodes, so that a per-node preparation would show on rank 1."""
    probe, port = tmp_path / "probe", _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "rvc-lora-test",
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "1",
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_NODELIST": "localhost",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": "0",
            "SLURM_NODEID": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        cmd = [
            sys.executable, "train.py", "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.num_nodes=2", "trainer.precision=32-true",
            "trainer.max_steps=3", "trainer.max_epochs=-1", "trainer.limit_val_batches=1",
            f"data.input_dir={voice_dir}", f"paths.root_dir={shared_root}",
            f"paths.cache_dir={tmp_path / 'cache'}",  # cold: someone has to extract
            f"hydra.run.dir={tmp_path / f'rank{rank}'}",
            "+callbacks.probe._target_=tests.training.rank_probe.RankProbe",
            f"+callbacks.probe.out={probe}", *FAST,
        ]  # fmt: skip
        log = (tmp_path / f"rank{rank}.log").open("w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for rank, proc in enumerate(procs):
            assert proc.wait(timeout=600) == 0, (tmp_path / f"rank{rank}.log").read_text()[-3000:]
    finally:
        for proc in procs:  # a failed rank leaves the other waiting for it
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    r0, r1 = (json.loads((probe / f"rank{r}.json").read_text()) for r in range(2))
    assert (r0["world_size"], r1["world_size"], r0["global_step"], r1["global_step"]) == (
        2,
        2,
        3,
        3,
    )
    assert r0["batches"] != r1["batches"] and len(r0["batches"]) == len(r1["batches"]) == 3
    assert r0["slices_extracted"] > 0 and r1["slices_extracted"] == 0  # prepared once, by rank 0
    assert r1["slices_reused"] == r0["slices_extracted"] + r0["slices_reused"]

    out0, out1 = tmp_path / "rank0", tmp_path / "rank1"
    for name in ["adapter.safetensors", "metrics.json", "run_info.json", "checkpoints/last.ckpt"]:
        assert (out0 / name).is_file(), name
    written1 = sorted(
        str(p.relative_to(out1)) for p in out1.rglob("*") if p.is_file() and ".hydra" not in p.parts
    )
    assert written1 == ["train.log"], written1  # rank 1 wrote nothing of the run's own
    saved, held = load_file(out0 / "adapter.safetensors"), load_file(probe / "rank1.safetensors")
    assert saved.keys() == held.keys() and saved
    for key in saved:
        assert torch.equal(saved[key], held[key]), key
    metrics = json.loads((out0 / "metrics.json").read_text())
    assert metrics["global_step"] == 3


@pytest.mark.slow
def test_local_launcher_multirun_lands_in_the_sweep_and_reports(tmp_path, shared_root, voice_dir):
    """A 2-cell sweep through submitit (its local executor: the code path of
    hydra/launcher=slurm): each cell's artefacts in its sweep subdir, read by the report."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "hydra/launcher=local", "lora.rank=4,8",
        f"data.input_dir={voice_dir}", f"paths.root_dir={shared_root}",
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=rank${lora.rank}",
        "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1", *FAST,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    submitted = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert len(submitted) == 2  # one submitit job per cell, its logs in its own folder
    for rank in (4, 8):
        job = sweep / f"rank{rank}"
        assert (job / "adapter.safetensors").is_file() and (job / ".hydra/config.yaml").is_file()
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 2
        assert json.loads((job / "run_info.json").read_text())["lora"]["rank"] == rank
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "rvc_lora.report", str(sweep), "--out", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with (report / "table.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "run"]
    assert sorted((r["rank"], Path(r["run_dir"]).name) for r in rows) == [
        ("4", "rank4"),
        ("8", "rank8"),
    ]
    assert all(float(r["adapter_kb"]) > 0 and r["mcd_db"] for r in rows)


@pytest.mark.slow
def test_a_requeued_job_continues_its_run_from_last_ckpt(tmp_path, shared_root, voice_dir):
    """The same command started twice in one run dir, as submitit's requeue does: the second
    start, with SLURM_RESTART_COUNT set, continues from the first one's last.ckpt."""
    run_dir = tmp_path / "run"

    def start(steps: int, env: dict[str, str]) -> str:
        cmd = [
            sys.executable, "train.py", f"data.input_dir={voice_dir}",
            f"paths.root_dir={shared_root}", f"hydra.run.dir={run_dir}",
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.limit_val_batches=1",
            "callbacks.last_checkpoint.every_n_train_steps=2", *FAST,
        ]  # fmt: skip
        run = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout + run.stderr

    first = start(2, {})
    assert "resuming" not in first
    second = start(4, {"SLURM_RESTART_COUNT": "1"})
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"requeued job: resuming from {last}" in second
    assert f"Restored all states from the checkpoint at {last}" in second  # Lightning's word
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 4
