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
from tests.helpers import wait_until
from tests.ibclient import LimitOrder
from tests.reliability.order_truth import OrderTruth, World, seed_from_env, settle_and_compare

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


@pytest.mark.timeout(120)
async def test_front_door_cancel_refused_while_upstream_down_leaves_the_trade_working() -> None:
    """Found by the machine: a cancel the hub refuses (no Gateway session) was sent to the
    ib_insync script as error 10148, which ends its trade as Cancelled, while the order
    works on at the Gateway. The script must be told the cancel failed (a warning) and
    keep its order working; once the Gateway is back the views agree."""
    quiet_ib_insync()
    w = World(seed_from_env())
    try:
        await w.start()
        assert w.ib is not None and w.sim is not None
        price = await w.price("AAPL")
        trade = w.ib.placeOrder(w.contracts["AAPL"], LimitOrder("BUY", 1, round(price * 0.95, 2)))
        w.fd_trades.append((w.fd_session, trade))
        await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "resting")
        await w.sim_call(w.sim.close_port)
        await wait_until(lambda: not w.sdk["alice"].upstream.up, 10.0, "hub sees the Gateway down")
        w.ib.cancelOrder(trade.order)
        await wait_until(lambda: trade.log[-1].status != "PendingCancel"
                         or trade.log[-1].message != "", 10.0, "the cancel answered")
        await w.sim_call(w.sim.open_port)
        assert await settle_and_compare(w) == []
        assert trade.orderStatus.status == "Submitted", trade.log
    finally:
        await w.close()
