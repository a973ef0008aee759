"""Run a training stage in one process, or across processes and machines with `accelerate launch`.

The DVC command stays `python -m stages.train ...`: with `launcher: accelerate` the stage
starts `accelerate launch` on itself, and the processes it spawns (which see LOCAL_RANK) do
the work. The engine (DDP, FSDP, DeepSpeed ZeRO-2/3) is the accelerate config file named in
params; koraft adds nothing on top of it.

Topology: `num_machines`, `machine_rank`, `main_process_ip` and `main_process_port` come from
params, and an environment variable (KORAFT_MACHINE_RANK, ...) overrides each, because every
node runs the same commit and the same params.yaml but has its own rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from koraft.core.config import reject_unknown_keys
from koraft.core.errors import KoraftError, ParamError
from koraft.core.processes import launched

LAUNCHERS = ("single", "accelerate")
# accelerate launch flags koraft passes, and the environment variable that overrides each.
TOPOLOGY = {
    "num_processes": "KORAFT_NUM_PROCESSES",  # in total, across all machines
    "num_machines": "KORAFT_NUM_MACHINES",
    "machine_rank": "KORAFT_MACHINE_RANK",
    "main_process_ip": "KORAFT_MAIN_PROCESS_IP",
    "main_process_port": "KORAFT_MAIN_PROCESS_PORT",
}
ENGINES = {"MULTI_GPU": "ddp", "FSDP": "fsdp", "DEEPSPEED": "deepspeed"}


def check_launcher(settings: dict[str, Any], key: str) -> str:
    """The section's launcher (`single` when absent), with its accelerate settings checked."""
    launcher = settings.get("launcher", "single")
    if launcher not in LAUNCHERS:
        raise ParamError(f"{key}.launcher", f"must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "accelerate":
        accelerate_settings(settings, key)
    return launcher


def accelerate_settings(settings: dict[str, Any], key: str) -> dict[str, Any]:
    """`{key}.accelerate` with the environment's topology applied; the config file must exist and name an engine."""
    section = settings.get("accelerate")
    if not isinstance(section, dict):
        raise ParamError(f"{key}.accelerate", "section is missing or not a mapping (launcher: accelerate needs it)")
    reject_unknown_keys(section, {"config", *TOPOLOGY}, f"{key}.accelerate",
                        f"keys are config, {', '.join(TOPOLOGY)}")
    resolved = dict(section)
    for name, variable in TOPOLOGY.items():
        if os.environ.get(variable):
            resolved[name] = os.environ[variable]
    for name in ("num_processes", "num_machines", "machine_rank", "main_process_port"):
        value = resolved.get(name)
        if value is None:
            continue
        try:
            resolved[name] = int(value)
        except (TypeError, ValueError):
            raise ParamError(f"{key}.accelerate.{name}", f"must be an integer, got {value!r} "
                                                         f"(or set {TOPOLOGY[name]})") from None
    machines = resolved.get("num_machines") or 1
    if machines > 1 and not resolved.get("main_process_ip"):
        raise ParamError(f"{key}.accelerate.main_process_ip", f"{machines} machines need the address of machine "
                                                              f"rank 0 (or set KORAFT_MAIN_PROCESS_IP)")
    if not 0 <= (resolved.get("machine_rank") or 0) < machines:
        raise ParamError(f"{key}.accelerate.machine_rank", f"must be in [0, {machines - 1}], got "
                                                           f"{resolved['machine_rank']}")
    resolved["engine"] = engine_of(resolved.get("config"), f"{key}.accelerate.config")
    return resolved


def engine_of(config: Any, key: str) -> str:
    """ddp, fsdp or deepspeed, from the accelerate config file's distributed_type."""
    if not isinstance(config, str):
        raise ParamError(key, f"must be the path of an accelerate config file, got {config!r}")
    try:
        content = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamError(key, f"{config}: file not found (configs/accelerate/ has ddp, fsdp, zero2, zero3)") from None
    except yaml.YAMLError as exc:
        raise ParamError(key, f"{config}: invalid YAML: {exc}") from None
    kind = content.get("distributed_type") if isinstance(content, dict) else None
    if kind not in ENGINES:
        raise ParamError(key, f"{config}: distributed_type must be one of {', '.join(ENGINES)}, got {kind!r}")
    return ENGINES[kind]


def launch_command(settings: dict[str, Any], module: str, arguments: list[str]) -> list[str]:
    """`accelerate launch -m stages.<name>` with the stage's own arguments and the topology flags that are set.

    As a module, like DVC's `python -m`, so every process imports koraft from the checkout it runs in."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", settings["config"]]
    for name in TOPOLOGY:
        if settings.get(name) is not None:
            command += [f"--{name}", str(settings[name])]
    return [*command, "--module", module, *arguments]


def launched_elsewhere(launcher: str, accelerate: dict[str, Any] | None, key: str, module: str) -> bool:
    """With launcher: accelerate, outside a launched process: run the stage `module` under accelerate launch and
    return True (the stage is done). Otherwise False: this process trains."""
    if launcher != "accelerate" or launched():
        return False
    relaunch({"accelerate": accelerate}, key, module)
    return True


def relaunch(settings: dict[str, Any], key: str, module: str) -> None:
    """Run the stage module, with this process's arguments, under `accelerate launch` and wait; a failed rank
    fails the stage."""
    import torch

    launch = accelerate_settings(settings, key)
    if launch["engine"] != "ddp" and not torch.cuda.is_available():
        raise ParamError(f"{key}.accelerate.config", f"{launch['config']} runs {launch['engine']}, which needs GPUs; "
                                                     f"on CPU use configs/accelerate/ddp.yaml (gloo)")
    command = launch_command(launch, module, sys.argv[1:])
    print(f"{key}: {launch['engine']} via accelerate launch ({launch.get('num_processes') or 'all'} processes, "
          f"machine {launch.get('machine_rank') or 0} of {launch.get('num_machines') or 1})", flush=True)
    code = subprocess.run(command).returncode
    if code != 0:
        raise KoraftError(f"{key}: accelerate launch exited with status {code}; the failing rank's error is above")


