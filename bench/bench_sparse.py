"""Sparse convolution: the pure-PyTorch backend next to MinkowskiEngine on the same input, CPU.

Input: surface voxels (2 cm) of a synthetic 4 x 4 x 2.5 m room with furniture boxes; "view" is
the part one RGB-D frame sees (what XMask3D runs on), "room" the whole map. Each case runs both
backends with identical weights, one after the other; figures are fastest calls (``timeit``).
"cold" calls build a new sparse tensor per call (kernel maps included, as in a new frame);
"warm" reuses one tensor (maps cached: the cost of each further layer on those coordinates).

Writes bench/results/sparse.md and prints it. Usage: python bench/bench_sparse.py [--quick]
MinkowskiEngine columns are "-" when it is not installed (scripts/build_minkowski.sh).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmask3d_ros.config.model_3d import Backbone3DCfg
from xmask3d_ros.model.minkunet import MinkUNet, convert_state_dict
from xmask3d_ros.model.sparse import BackendUnavailableError, SparseBackend, get_backend

NARROW = Backbone3DCfg(
    arch="custom",
    planes=(16, 32, 32, 64, 32, 32, 16, 16),
    layers=(1, 1, 1, 1, 1, 1, 1, 1),
    init_dim=16,
    out_channels=16,
)


def room_points(n: int = 600_000, seed: int = 0) -> torch.Tensor:
    """(n, 3) points on the floor, four walls and six boxes of a 4 x 4 x 2.5 m room."""
    g = torch.Generator().manual_seed(seed)
    boxes = [
        ((0.5 + 0.55 * i, 0.6 + 0.4 * (i % 3), 0.0), (0.5, 0.4, 0.45 + 0.1 * i)) for i in range(6)
    ]
    # each plane: origin, two spanning vectors
    planes = [
        ((0, 0, 0), (4, 0, 0), (0, 4, 0)),
        ((0, 0, 0), (4, 0, 0), (0, 0, 2.5)),
        ((0, 4, 0), (4, 0, 0), (0, 0, 2.5)),
        ((0, 0, 0), (0, 4, 0), (0, 0, 2.5)),
        ((4, 0, 0), (0, 4, 0), (0, 0, 2.5)),
    ]
    for (x, y, z), (dx, dy, dz) in boxes:
        planes += [
            ((x, y, z + dz), (dx, 0, 0), (0, dy, 0)),
            ((x, y, z), (dx, 0, 0), (0, 0, dz)),
            ((x, y + dy, z), (dx, 0, 0), (0, 0, dz)),
            ((x, y, z), (0, dy, 0), (0, 0, dz)),
            ((x + dx, y, z), (0, dy, 0), (0, 0, dz)),
        ]
    p = torch.tensor(planes, dtype=torch.float32)  # (P, 3, 3)
    area = torch.linalg.cross(p[:, 1], p[:, 2]).norm(dim=1)
    which = torch.multinomial(area, n, replacement=True, generator=g)
    uv = torch.rand(n, 2, generator=g)
    q = p[which]
    return q[:, 0] + uv[:, :1] * q[:, 1] + uv[:, 1:] * q[:, 2]


def timeit(fns: list[Callable[[], Any]], repeat: int) -> list[tuple[float, float]]:
    """Per function, (wall s, process CPU s) of its fastest call over two rounds.

    The fastest call, as Python's timeit advises: on a shared machine other processes only
    ever add time. Backends run one at a time, not interleaved: torch and MinkowskiEngine each
    bring their own OpenMP runtime, whose idle threads spin-wait and steal cores from the
    other. Two rounds in opposite order, a pause before each block.
    """
    best = [(float("inf"), float("inf"))] * len(fns)
    for order in (range(len(fns)), reversed(range(len(fns)))):
        for i in order:
            time.sleep(0.3)
            fns[i]()
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                fns[i]()
                best[i] = min(best[i], (time.perf_counter() - t0, time.process_time() - c0))
    return best


def twins(
    backends: list[SparseBackend], make: Callable[[SparseBackend], torch.nn.Module]
) -> list[Any]:
    mods = [make(b) for b in backends]
    for m in mods[1:]:
        m.load_state_dict(convert_state_dict(mods[0].state_dict(), m))
    return [m.eval() for m in mods]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "sparse.md"
    )
    args = ap.parse_args(argv)
    rep = 3 if args.quick else 5
    torch.manual_seed(0)
    backends: list[SparseBackend] = [get_backend("torch_native")]
    try:
        backends.append(get_backend("minkowski"))
    except BackendUnavailableError as err:
        print(f"MinkowskiEngine unavailable, native only: {err}", file=sys.stderr)

    pts = room_points()
    view = (pts[:, 0] < 2.2) & (pts[:, 1] < 2.6)  # what one camera pose sees
    inputs = {}
    for name, sel in (("view", view), ("room", torch.ones_like(view))):
        coords = get_backend("torch_native").voxelize(pts[sel], pts[sel], 0.02)[0].C
        inputs[name] = coords
    rows: list[tuple[str, int, list[tuple[float, float]]]] = []
    load_before = os.getloadavg()[0]

    def case(
        label: str,
        coords: torch.Tensor,
        make: Callable[[SparseBackend], torch.nn.Module],
        c_in: int,
        cold: bool,
        prep: Callable[[SparseBackend, Any], Any] | None = None,
    ) -> None:
        mods = twins(backends, make)
        feats = torch.randn(coords.shape[0], c_in)
        fns = []
        for b, m in zip(backends, mods, strict=False):
            x = b.make_tensor(coords, feats)
            x = prep(b, x) if prep else x

            def call(b: SparseBackend = b, m: Any = m, x: Any = x) -> Any:
                with torch.no_grad():
                    if cold:
                        y = b.make_tensor(coords, feats)
                        return m(prep(b, y) if prep else y)
                    return m(x)

            fns.append(call)
        rows.append((label, coords.shape[0], timeit(fns, rep)))

    down = lambda b, x: x  # noqa: E731
    for scene in ("view", "room"):
        c = inputs[scene]
        case(f"{scene}: conv k3 s1 32->32, warm", c, lambda b: b.conv(32, 32, 3), 32, False)
        case(f"{scene}: conv k3 s1 32->32, cold", c, lambda b: b.conv(32, 32, 3), 32, True)
        case(f"{scene}: conv k3 s1 96->96, warm", c, lambda b: b.conv(96, 96, 3), 96, False)
        case(f"{scene}: stem conv k5 s1 3->32, cold", c, lambda b: b.conv(3, 32, 5), 3, True)
        case(
            f"{scene}: down conv k2 s2 32->32, cold",
            c,
            lambda b: b.conv(32, 32, 2, 2),
            32,
            True,
            down,
        )
        for arch, cfg in (("narrow", NARROW), ("MinkUNet34C", Backbone3DCfg())):
            if scene == "room" and arch == "MinkUNet34C" and args.quick:
                continue
            case(f"{scene}: {arch} forward, cold", c, lambda b, cfg=cfg: MinkUNet(cfg, b), 3, True)

    names = [b.name for b in backends]
    two = len(names) > 1
    head = "| case | voxels | " + " | ".join(f"{n} ms" for n in names)
    head += " | native / ME (wall) | native / ME (CPU) |" if two else " |"
    head += "\n|---|---:|" + "---:|" * (len(names) + (2 if two else 0))
    lines = []
    for label, n, ts in rows:
        cells = [f"{label}", f"{n:,}", *(f"{w * 1e3:.1f}" for w, _ in ts)]
        if two:
            cells += [f"{ts[0][0] / ts[1][0]:.2f}", f"{ts[0][1] / ts[1][1]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    meta = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
        f"{datetime.date.today()}; fastest of 2 x {rep} calls (wall time), "
        f"float32, eval, no grad. 1-min load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other work on the machine inflates wall times)."
    )
    text = (
        "# Sparse convolution: pure PyTorch vs MinkowskiEngine (CPU)\n\n"
        f"{meta}\n\n{head}\n" + "\n".join(lines) + "\n\n"
        "native / ME < 1 means the pure-PyTorch backend is faster; the CPU column divides the "
        "process CPU time (all threads) of the same calls. cold = new "
        "sparse tensor per call (kernel maps built inside the timing), warm = maps cached. The "
        "UNet rows include building every map of the network. MinkowskiEngine 0.5.4 is the CPU "
        "build from scripts/build_minkowski.sh (OpenBLAS).\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
