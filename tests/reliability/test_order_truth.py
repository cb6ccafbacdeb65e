"""Order truth under interleaved scripts and faults: a seeded stateful machine.

``tests/reliability/order_truth.py`` has the machine and what "equal" means. CI runs a
few short examples; ``bench/order_truth.py`` runs the same machine longer. The seed is
printed; ``IBHUB_ORDER_TRUTH_SEED=N`` replays another one.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as use_seed
from hypothesis.stateful import run_state_machine_as_test

from tests.e2e.frontdoor_support import quiet_ib_insync
from tests.reliability.order_truth import OrderTruth, seed_from_env

EXAMPLES = 10
STEPS = 20


@pytest.mark.timeout(600)  # a failure shrinks (many more examples) before it is reported
def test_every_order_agrees_everywhere_after_faults() -> None:
    quiet_ib_insync()
    seed = seed_from_env()
    print(f"order truth seed {seed} ({EXAMPLES} examples of up to {STEPS} steps)")

    class Machine(OrderTruth):
        pass

    Machine.seed = seed
    run_state_machine_as_test(
        use_seed(seed)(Machine),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          database=None, print_blob=True,
                          phases=(Phase.explicit, Phase.generate, Phase.shrink),
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]),
    )  # fmt: skip
