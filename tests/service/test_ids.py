from __future__ import annotations

from conveyor_server._ids import SAFE_ID, new_task_id


def test_task_ids_are_safe_and_never_read_as_a_command_line_option() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    # One in 64 random ids would start with "-" if nothing prevented it.
    assert not [task_id for task_id in ids if task_id.startswith("-")]
    assert all(len(task_id) == 22 and SAFE_ID.fullmatch(task_id) for task_id in ids)
