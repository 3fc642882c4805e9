"""The app image's install, run as deploy/Dockerfile.app runs it, into a clean virtual environment: its COPY lines
make the build folder, its ENV and ARG lines the environment, and its pip lines run as they are (the Dockerfile's own
check included). The app then loads and builds its sentence encoder, and the trainer's packages are not there.

No container engine runs here. Two things differ from a build: the virtual environment's Python (3.11, as the
image's) stands for the image's, and the CPU build of torch comes from this machine (the suite's own version)
instead of the PyTorch index named by TORCH_INDEX_URL, which is a build argument for that reason.
"""

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile.app"
TRAINER = ("trl", "peft", "gguf", "datasets")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.MULTILINE)]


def install_as_the_dockerfile_does(build: Path, venv: Path, constraints: Path) -> dict[str, str]:
    """Copy what the Dockerfile copies into `build` (its WORKDIR) and run its pip lines there with `venv`'s pip and
    python first on PATH; returns the environment the image's command would get."""
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", str(build)),
           "PIP_CONSTRAINT": str(constraints)}  # fmt: skip
    ran = []
    for instruction, arguments in instructions(DOCKERFILE.read_text()):
        if instruction == "ARG" and "=" in arguments:
            name, default = arguments.split("=", 1)
            # The one build argument overridden: torch's CPU build comes from this machine (see the docstring).
            env[name] = "https://pypi.org/simple" if name == "TORCH_INDEX_URL" else default
        elif instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(arguments))
        elif instruction == "COPY":
            *sources, target = arguments.split()
            destination = build / target
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    (destination if target.endswith("/") else destination.parent).mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, destination)
        elif instruction == "RUN" and re.search(r"\bpip install\b", arguments):
            done = subprocess.run(["sh", "-c", arguments], cwd=build, env=env, capture_output=True, text=True,
                                  timeout=900)  # fmt: skip
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(arguments)
        elif instruction == "RUN":
            # apt-get and useradd change the system: left to a real build, and nothing pip installs depends on them.
            assert "pip" not in arguments and "python" not in arguments, arguments
    assert ran, "the Dockerfile installs nothing with pip"
    return env


def test_the_app_installs_as_its_image_does_and_starts_without_the_trainer(tmp_path: Path) -> None:
    venv, build = tmp_path / "venv", tmp_path / "opt-supportbot"
    build.mkdir()
    # A clean environment: none of the suite's packages are visible in it.
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    constraints = tmp_path / "torch-cpu.txt"
    constraints.write_text(f"torch=={importlib.metadata.version('torch')}\n")
    env = install_as_the_dockerfile_does(build, venv, constraints)

    def run_python(script: str) -> str:
        # Run from outside the build folder, as the image's command is: the installed packages, not the sources.
        done = subprocess.run([venv / "bin" / "python", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    missing = run_python(f"import importlib.util; print([n for n in {TRAINER!r} if importlib.util.find_spec(n)])")
    assert missing == "[]", f"the app image installs trainer packages: {missing}"
    # What `supportbot start` imports, then what start-up builds first: the sentence encoder (the image failed here
    # when the model packages were installed by the Makefile only). Nothing of the trainer is loaded on the way.
    loaded = run_python(
        "import sys, serving.app, cli.main\n"
        "from bot.knowledge import SentenceEncoder\n"
        "assert SentenceEncoder().embed(['Where is my order?']).shape == (1, 384)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'finetune', *" + repr(TRAINER) + "}))"
    )
    assert loaded.splitlines()[-1] == "[]"
    # An admin starting a run loads the trainer's planning (cli/training.py's plan_preview): it needs none of them.
    assert run_python("import finetune.worker; print(finetune.worker.plan_preview.__name__)") == "plan_preview"
    assert "start" in subprocess.run([venv / "bin" / "supportbot", "--help"], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=120).stdout  # fmt: skip
