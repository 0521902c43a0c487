"""Striped per-chain locks of the audit trail (no database)."""

from __future__ import annotations

import threading

from fhir_server.audit.locks import ChainLocks


def test_a_chain_always_maps_to_the_same_stripe():
    locks = ChainLocks(stripes=8)
    assert locks.stripe("audit-chain:Patient/a") == locks.stripe("audit-chain:Patient/a")
    assert {locks.stripe(f"audit-chain:Patient/{n}") for n in range(200)} == set(range(8))


def test_holding_chains_excludes_others_until_released():
    locks = ChainLocks()
    with locks.holding(["audit-chain:Patient/a", "audit-chain:Patient/a"]):      # the same chain twice
        with locks.briefly("audit-chain:Patient/a", timeout=0) as held:
            assert held is False
    with locks.briefly("audit-chain:Patient/a", timeout=0) as held:
        assert held is True


def test_overlapping_sets_taken_in_opposite_orders_do_not_deadlock():
    locks = ChainLocks(stripes=4)
    keys = [f"audit-chain:Patient/{n}" for n in range(12)]
    done: list[int] = []

    def hold(order: list[str], thread: int) -> None:
        for _ in range(200):
            with locks.holding(order):
                pass
        done.append(thread)

    threads = [threading.Thread(target=hold, args=(keys if t % 2 else keys[::-1], t), daemon=True)
               for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(done) == [0, 1, 2, 3]


def test_briefly_runs_its_body_even_when_the_lock_is_not_obtained():
    locks = ChainLocks()
    ran: list[bool] = []
    with locks.holding(["audit-chain:none"]):
        with locks.briefly("audit-chain:none", timeout=0.01) as held:
            ran.append(held)
    assert ran == [False]
