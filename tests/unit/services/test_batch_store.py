"""services/batch_store.py on a real SQLite file: what a running job's counts are made of."""

from __future__ import annotations

from bodhi_nb.services.batch_store import BatchRecord, BatchStore


def _line(cid: str) -> dict:
    return {"custom_id": cid, "response": None, "error": None}


def test_add_results_says_how_many_were_new_and_keeps_the_first(tmp_path):
    store = BatchStore(tmp_path)
    store.put_batch(BatchRecord({"id": "batch_1", "created_at": 1, "status": "in_progress"}))
    assert store.add_results("batch_1", [("a", True, _line("a")), ("b", False, _line("b")),
                                         ("c", True, _line("c"))]) == (2, 1)
    # Sent again after a crash: already kept, so nothing is counted twice (and "a" stays a success).
    assert store.add_results("batch_1", [("a", False, _line("a")), ("c", True, _line("c")),
                                         ("d", False, _line("d"))]) == (0, 1)
    assert store.add_results("batch_1", []) == (0, 0)
    assert store.counts("batch_1") == (2, 2)
    assert store.done_ids("batch_1") == {"a", "b", "c", "d"}
