"""Order truth, the long run: the CI test's stateful machine with more examples and steps.

Not a test. Runs ``tests/reliability/order_truth.py``'s machine (SDK and front-door
scripts placing, modifying and cancelling through one hub while the Gateway restarts,
1101s arrive and the hub is killed -9) and prints its figures, the ones in
docs/reliability.md:

    python bench/order_truth.py --examples 20 --steps 40 --seed 1
    python bench/order_truth.py --examples 5 --steps 30 --seed 1 --shrink

By default every example runs to its end and mismatches are counted (by kind, with one
instance of each); ``--shrink`` stops at the first example that has one and lets
hypothesis shrink it to a minimal sequence of steps, printed as a falsifying example.
Exit status 1 when any mismatch was found.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, Verbosity, settings  # noqa: E402
from hypothesis import seed as use_seed  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from tests.e2e.frontdoor_support import quiet_ib_insync  # noqa: E402
from tests.reliability import order_truth as ot  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=10, help="examples (independent runs)")
    ap.add_argument("--steps", type=int, default=40, help="at most this many steps each")
    ap.add_argument("--seed", type=int, default=ot.SEED)
    ap.add_argument("--shrink", action="store_true",
                    help="stop at the first mismatch and shrink it (prints the steps)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every step")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    quiet_ib_insync()
    logging.getLogger(ot.__name__).setLevel(logging.WARNING)  # each mismatch as found

    class Machine(ot.OrderTruth):
        pass

    Machine.seed = args.seed
    Machine.strict = args.shrink
    phases = (Phase.generate, Phase.shrink) if args.shrink else (Phase.generate,)
    print(f"order truth: seed {args.seed}, {args.examples} examples of up to {args.steps} "
          f"steps{', shrinking the first mismatch' if args.shrink else ''}", flush=True)
    started = time.monotonic()
    failure = ""
    try:
        run_state_machine_as_test(
            use_seed(args.seed)(Machine),
            settings=settings(max_examples=args.examples, stateful_step_count=args.steps,
                              deadline=None, database=None, phases=phases,
                              verbosity=Verbosity.verbose if args.verbose else
                              Verbosity.normal,
                              suppress_health_check=list(HealthCheck)),
        )  # fmt: skip
    except AssertionError as exc:
        failure = str(exc)
    wall = time.monotonic() - started
    t = ot.TALLY
    ops = t.operations
    figures = {
        "seed": args.seed,
        "examples": t.examples,
        "operations": sum(ops.values()),
        "operations_by_kind": dict(ops.most_common()),
        "orders": t.orders,
        "fills": t.fills,
        "gateway_restarts": ops["gateway_restart"],
        "connectivity_1101": ops["1101"],
        "hub_kills": ops["hub_kill"],
        "refused": dict(t.refused.most_common()),
        "mismatches": sum(t.mismatches.values()),
        "examples_with_mismatches": t.mismatched_examples,
        "mismatches_by_kind": dict(t.mismatches.most_common()),
        "mismatch_examples": t.examples_of,
        "settle_p50_s": round(statistics.median(t.settle_s), 2) if t.settle_s else None,
        "settle_max_s": round(max(t.settle_s), 2) if t.settle_s else None,
        "wall_s": round(wall, 1),
    }
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    if failure:
        print(f"\nfirst failure (shrunk):\n{failure}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 1 if figures["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
