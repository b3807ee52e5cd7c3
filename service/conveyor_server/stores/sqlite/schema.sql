-- The schema of `sqlite:///path`, version 7 (schema.SCHEMA_VERSION); its
-- tables and columns are described in schema.py. Run at every open: every
-- statement is IF NOT EXISTS. A change of a table here needs a new schema
-- version and a migration of the files written by the old one.

CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Rows are keyed by seq (the rowid): a new task's row goes at the end and
-- the rows that change are the newest, so a write touches the same few pages
-- however many tasks the file holds. Versions 1-3 keyed them by the random id,
-- and every new task dirtied a page of a large index at a random place.
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT NOT NULL,
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    state INTEGER NOT NULL,
    payload BLOB NOT NULL,
    result BLOB,
    error_code TEXT,
    error_message TEXT,
    error_exception_type TEXT,
    progress_percent REAL,
    progress_message TEXT,
    progress_current INTEGER,
    progress_total INTEGER,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    labels TEXT,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    update_time REAL NOT NULL,
    scheduled_time REAL NOT NULL,
    timeout REAL,
    idempotency_key TEXT,
    fingerprint BLOB,
    cancel_requested INTEGER NOT NULL,
    version INTEGER NOT NULL,
    -- Added by later versions, last, where ALTER TABLE puts them in a
    -- migrated file: version 2, then version 3, then version 5, then 6.
    claim INTEGER NOT NULL,
    reply_to TEXT,
    concurrency_key TEXT,
    depends_on TEXT,
    waiting INTEGER NOT NULL DEFAULT 0,
    run_on_dependency_failure INTEGER NOT NULL DEFAULT 0,
    traceparent TEXT
);
-- Version 5: the settings of task types, one row per type: the limits its
-- handlers declare, the run-time overrides (JSON: limit name -> value) and
-- the pause.
CREATE TABLE IF NOT EXISTS task_types (
    type TEXT PRIMARY KEY,
    max_running INTEGER NOT NULL,
    max_running_per_key INTEGER NOT NULL,
    max_starts_per_second REAL NOT NULL,
    burst INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    paused INTEGER NOT NULL,
    update_time REAL NOT NULL
);
-- Version 5: schedules, one row per (tenant, id); `spec` is the serialized
-- conveyor.v1.Schedule the service reads.
CREATE TABLE IF NOT EXISTS schedules (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    spec BLOB NOT NULL,
    paused INTEGER NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    fired_until REAL NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- Version 7: the lines handlers wrote through ctx.logger, the latest
-- MAX_LINES_PER_ATTEMPT per attempt of a task (keyed by the task's seq).
CREATE TABLE IF NOT EXISTS task_logs (
    task_seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (task_seq, attempt, sequence)
) WITHOUT ROWID;
