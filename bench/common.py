"""What the benchmarks share: peak RSS, worker processes, latency stats, machine facts, BENCHMARKS.md sections."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"


# -- memory ----------------------------------------------------------------------------------------
def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident set in MB: VmHWM from /proc/<pid>/status (by default this process's).

    Not ``ru_maxrss``: Linux carries the parent's peak over into a child's ``ru_maxrss`` across fork
    and exec, so a worker started by a 200 MB parent reported 213 MB where its own peak (VmHWM) was 13 MB.
    Without /proc (not Linux), ``ru_maxrss`` of this process is the fallback.
    """
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers: one measurement per fresh process ----------------------------------------------------
def run_worker(module: str, worker_args: list[str], spec: dict, timeout: int = 3600, label: str = "") -> dict:
    """Run ``python -m <module> --worker <worker_args>`` from the repository root with ``spec`` as JSON
    on stdin; its last ``RESULT <json>`` line, parsed (see ``serve_worker``)."""
    proc = subprocess.run([sys.executable, "-m", module, "--worker", *worker_args], input=json.dumps(spec),
                          text=True, capture_output=True, timeout=timeout, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker {label or ' '.join(worker_args)} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def chosen_runtimes(ap, only: str, known: tuple[str, ...]) -> list[str]:
    """The runtimes named by a comma-separated ``--only``, in its order; an unknown one stops ``ap`` with a line."""
    names = [n for n in only.split(",") if n]
    unknown = set(names) - set(known)
    if unknown:
        ap.error(f"unknown runtimes {sorted(unknown)}; known: {', '.join(known)}")
    return names


def measure_runtimes(module: str, names: list[str], quality, limit: int, speed_spec: dict | None, out: Path) -> dict:
    """The driver of bench.runtimes and bench.encoders: ``quality(names, limit)`` in this process (unless
    ``limit`` is 0), then one fresh ``module --worker`` per runtime given ``{"runtime": name, **speed_spec}``
    (unless ``speed_spec`` is empty); the result, with the machine, also written as JSON to ``out``."""
    result: dict = {"machine": machine()}
    if limit:
        result["quality"] = quality(names, limit)
        print(json.dumps(result["quality"]), flush=True)
    if speed_spec:
        result["speed"] = {}
        for name in names:
            result["speed"][name] = run_worker(module, [], {"runtime": name, **speed_spec}, label=name)
            print(name, json.dumps(result["speed"][name]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def serve_worker(work) -> int:
    """The worker side of ``run_worker``: ``work(spec from stdin)`` printed as one ``RESULT`` line."""
    print("RESULT " + json.dumps(work(json.loads(sys.stdin.read()))), flush=True)
    return 0


def rounded(result: dict) -> dict:
    """A result for the log: floats to 3 decimals."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


# -- stats -----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def stats(name: str, values: list[float]) -> dict:
    return {f"{name}_p50_ms": statistics.median(values), f"{name}_p95_ms": percentile(values, 0.95)}


# -- reporting -------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    versions = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("sentence-transformers", "sentence_transformers"), ("faiss", "faiss"),
                         ("scipy", "scipy"), ("jieba", "jieba")):
        try:
            versions[name] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[name] = "?"
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 2**20, 1), "versions": versions,
            "threads": f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"}


def write_section(text: str, path: Path, start: str, end: str) -> None:
    """Replace one benchmark's section of BENCHMARKS.md (or append it); other sections stay."""
    section = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + section + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, "utf-8")
    os.replace(tmp, path)
