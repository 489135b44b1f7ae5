"""The handshake's rules, without any server: what every protocol shows the PLC."""

from __future__ import annotations

from anomalycli.deploy.station import signals
from anomalycli.deploy.station.handshake import Handshake


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ready_handshake(**options) -> Handshake:
    handshake = Handshake(recipe=1, **options)
    handshake.set_ready(True)
    return handshake


def test_a_result_is_shown_whole_and_taken_back_on_the_ack_and_the_next_waits_for_the_ack_to_fall():
    handshake = ready_handshake()
    first, second = handshake.new_result(11, 1, 0.9, True), handshake.new_result(12, 1, 0.1, False)
    handshake.publish(first)
    handshake.publish(second)
    shown = handshake.snapshot()
    assert shown["result_valid"] and shown["ng"] and not shown["ok"] and shown["part_id_echo"] == 11 and shown["result_seq"] == first.seq
    handshake.write("result_ack", True)
    cleared = handshake.snapshot()
    assert not cleared["result_valid"] and not cleared["ng"] and cleared["part_id_echo"] == 0 and cleared["score"] == 0.0
    assert not handshake.snapshot()["result_valid"], "nothing new while the PLC holds its ack high"
    handshake.write("result_ack", False)
    shown = handshake.snapshot()
    assert shown["result_valid"] and shown["ok"] and shown["part_id_echo"] == 12 and shown["result_seq"] == second.seq


def test_results_wait_in_order_up_to_the_queue_then_overrun_until_the_plc_has_taken_them_all():
    handshake = ready_handshake(queue_size=3)
    results = [handshake.new_result(i, 1, 0.2, False) for i in range(6)]
    taken = [handshake.publish(r) for r in results]
    assert taken == [True] * 4 + [False] * 2  # one shown, three waiting
    assert handshake.snapshot()["overrun"]
    seen = []
    for _ in range(4):
        seen.append(handshake.snapshot()["part_id_echo"])
        handshake.write("result_ack", True)
        handshake.write("result_ack", False)
    assert seen == [0, 1, 2, 3] and not handshake.snapshot()["overrun"] and not handshake.snapshot()["result_valid"]


def test_every_trigger_fault_is_an_ng_with_its_error_code_never_silence():
    clock = Clock()
    handshake = Handshake(recipe=1, trigger_timeout=2.0, clock=clock)
    handshake.write("part_id", 7)
    handshake.write("trigger", True)  # not ready yet
    handshake.write("trigger", False)
    handshake.set_ready(True)
    handshake.write("part_id", 8)
    handshake.write("trigger", True)
    handshake.write("trigger", False)
    handshake.write("part_id", 9)
    handshake.write("trigger", True)  # while 8 still waits for its image
    assert handshake.snapshot()["busy"]
    clock.now = 3.0
    made = handshake.tick()
    assert [(r.part_id, r.error_code, r.ng) for r in made] == [
        (7, signals.NOT_READY, True),
        (9, signals.DOUBLE_TRIGGER, True),
        (8, signals.TRIGGER_TIMEOUT, True),
    ]
    assert not handshake.snapshot()["result_valid"], "an error is shown only once the station journaled and published it"


def test_a_trigger_latches_its_part_and_recipe():
    handshake = ready_handshake()
    handshake.write("part_id", 42)
    handshake.write("trigger", True)
    handshake.write("part_id", 43)
    trigger = handshake.claim_trigger()
    assert (trigger.part_id, trigger.recipe) == (42, 1) and handshake.claim_trigger() is None


def test_a_recipe_request_drops_ready_until_switched_and_an_unknown_one_keeps_the_old():
    handshake = ready_handshake()
    handshake.write("recipe_request", 2)
    assert not handshake.snapshot()["ready"] and handshake.recipe_wanted() == 2
    handshake.recipe_switched(2)
    assert handshake.snapshot()["ready"] and handshake.snapshot()["recipe_active"] == 2
    handshake.write("recipe_request", 9)
    handshake.recipe_refused(signals.UNKNOWN_RECIPE)
    state = handshake.snapshot()
    assert state["ready"] and state["recipe_failed"] and state["recipe_error"] == signals.UNKNOWN_RECIPE and state["recipe_active"] == 2


def test_the_heartbeat_toggles_while_the_station_ticks():
    clock = Clock()
    handshake = Handshake(recipe=1, clock=clock)
    beats = []
    for step in range(5):
        clock.now = 1.01 * (step + 1)
        handshake.tick()
        beats.append(handshake.snapshot()["heartbeat"])
    assert beats == [True, False, True, False, True]


def test_a_station_error_holds_ready_low_through_a_recipe_switch_and_ready_returns_with_it_cleared():
    handshake = ready_handshake()
    handshake.set_station_error(signals.CAMERA_DISCONNECTED)
    assert not handshake.snapshot()["ready"] and handshake.snapshot()["station_error"] == signals.CAMERA_DISCONNECTED
    handshake.write("recipe_request", 2)
    handshake.recipe_switched(2)
    handshake.set_ready(True)
    assert not handshake.snapshot()["ready"], "a camera that is gone keeps ready low whatever else happens"
    handshake.set_station_error(0)
    assert handshake.snapshot()["ready"] and handshake.snapshot()["station_error"] == 0 and handshake.snapshot()["recipe_active"] == 2


def test_a_trigger_looked_at_stays_waiting_and_one_given_back_is_the_next_again():
    handshake = ready_handshake()
    handshake.write("part_id", 7)
    handshake.write("trigger", True)
    assert handshake.next_trigger().part_id == 7 and handshake.next_trigger().part_id == 7 and handshake.snapshot()["busy"]
    first = handshake.claim_trigger()
    assert first.part_id == 7 and handshake.next_trigger() is None
    handshake.unclaim_trigger(first)
    assert handshake.next_trigger() is first and handshake.claim_trigger() is first
