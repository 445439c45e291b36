"""The database schema, its version, and the steps that bring an older datastore up to date.

Plain SQL that SQLite and PostgreSQL both read: upserts with ``ON CONFLICT``, ``RETURNING`` for
guarded changes. The DDL is written once, in SQLite's spelling; ``postgresql_ddl`` gives
PostgreSQL's (its names for the column types). Both record ``SCHEMA_VERSION`` in ``meta``.
"""

from __future__ import annotations

import re

# 4: hunts record the artifacts their collection was compiled from; 5: a hunt's schedule, error
# limit, archive time and the hunt it was copied from; a collection's artifacts; 6: operators;
# audit records are hash-chained and hold their outcome (allowed or refused); server settings
# and hunts' approvals; 7: a hunt's recruitment budget (its tokens and their time), one for
# every frontend
SCHEMA_VERSION = 7

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    facts TEXT NOT NULL DEFAULT '{}',
    agent_labels TEXT NOT NULL DEFAULT '[]',
    operator_labels TEXT NOT NULL DEFAULT '[]',
    last_hunt_timestamp INTEGER NOT NULL DEFAULT 0,
    revoked REAL
);

CREATE TABLE IF NOT EXISTS flows (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    hunt_id TEXT,
    kind TEXT NOT NULL,
    query TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',
    -- A hunt flow (kind 'hunt') runs the hunt's client-side condition first; with hold, it
    -- waits for the server's judgement. Its stage: 'check', then 'collect' once it may run.
    condition TEXT NOT NULL DEFAULT '',
    hold INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    timeout REAL NOT NULL,
    max_rows INTEGER NOT NULL,
    max_upload_bytes INTEGER NOT NULL,
    max_logs INTEGER NOT NULL DEFAULT 0,
    max_log_bytes INTEGER NOT NULL DEFAULT 0,
    max_uploads INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    rows INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    logs INTEGER NOT NULL DEFAULT 0,
    log_bytes INTEGER NOT NULL DEFAULT 0,
    logs_dropped INTEGER NOT NULL DEFAULT 0,
    uploads INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    -- The artifacts a collection was compiled from, with their parameters (JSON; '' for VQL).
    artifacts TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (client_id, flow_id)
);
CREATE INDEX IF NOT EXISTS flows_by_state ON flows (state);
CREATE INDEX IF NOT EXISTS flows_by_hunt ON flows (hunt_id, client_id);

CREATE TABLE IF NOT EXISTS flow_rows (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (client_id, flow_id, seq)
);

CREATE TABLE IF NOT EXISTS flow_logs (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (client_id, flow_id, seq)
);

CREATE TABLE IF NOT EXISTS hunts (
    hunt_id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL,
    client_condition TEXT NOT NULL,
    server_condition TEXT NOT NULL DEFAULT '',
    rate REAL NOT NULL DEFAULT 0,
    client_limit INTEGER NOT NULL DEFAULT 0,
    expires REAL NOT NULL,
    timeout REAL NOT NULL,
    max_rows INTEGER NOT NULL DEFAULT 0,
    max_upload_bytes INTEGER NOT NULL DEFAULT 0,
    max_logs INTEGER NOT NULL DEFAULT 0,
    max_log_bytes INTEGER NOT NULL DEFAULT 0,
    max_uploads INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    stop_reason TEXT,
    -- 1 while a hunt that stopped recruiting on its own (its client limit) lets the
    -- collections it started finish; an operator's stop clears it and cancels them.
    draining INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    creator TEXT NOT NULL DEFAULT '',
    started REAL,
    start_timestamp INTEGER NOT NULL DEFAULT 0,
    stopped REAL,
    -- The artifacts the collection runs, with their parameters (JSON; '' for raw VQL).
    artifacts TEXT NOT NULL DEFAULT '',
    -- A scheduled hunt starts on its own at start_at (epoch seconds); NULL otherwise.
    start_at REAL,
    -- The hunt pauses itself when this many clients are in errors, or this share (%) of the
    -- clients it recruited (0: no limit).
    max_errors INTEGER NOT NULL DEFAULT 0,
    max_errors_percent REAL NOT NULL DEFAULT 0,
    archived REAL,
    copied_from TEXT NOT NULL DEFAULT ''
);

-- One row per client a hunt has looked at; its queue is the client's place in the hunt, so the
-- hunt's counts are a GROUP BY over this table and cannot drift from it.
CREATE TABLE IF NOT EXISTS hunt_clients (
    hunt_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT 'condition',
    flow_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    condition_flow_id TEXT,
    condition_attempt INTEGER NOT NULL DEFAULT 1,
    -- What the client-side condition returned (msgpack), once it has.
    condition_rows BLOB,
    checked REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT,
    PRIMARY KEY (hunt_id, client_id)
);
CREATE INDEX IF NOT EXISTS hunt_clients_by_queue ON hunt_clients (hunt_id, queue, checked);

CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}',
    -- 'allowed', or 'refused' with the one-line reason
    outcome TEXT NOT NULL DEFAULT 'allowed',
    reason TEXT,
    -- The hash chain (see data/audit.py): the previous record's hash and this one's.
    previous TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT ''
);

-- The people who use the operator API: each has a role and a token, kept only as its SHA-256.
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    creator TEXT NOT NULL
);

-- Server settings an operator changes (approvals, approval_hours, excluded_labels): JSON values.
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Requests to approve a hunt and their decisions; a hunt's newest row is the one that counts.
-- Each is bound to the hunt's specification hash when requested: a hunt whose hash changed since
-- has a void approval.
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hunt_id TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    requester TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    requested REAL NOT NULL,
    decided_by TEXT,
    decided REAL,
    decision TEXT NOT NULL DEFAULT 'pending',
    decision_reason TEXT,
    expires REAL
);
CREATE INDEX IF NOT EXISTS approvals_by_hunt ON approvals (hunt_id, id);

CREATE TABLE IF NOT EXISTS uploads (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    upload_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, flow_id, upload_id)
);

-- Uploaded files still to be removed from disk: a deleted hunt's, written in the transaction that
-- deletes its rows and cleared once the files are gone, so a crash in between leaves a list to
-- finish at the next start rather than files nothing refers to.
CREATE TABLE IF NOT EXISTS upload_removals (
    client_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    upload_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, flow_id, upload_id)
);
"""

# Columns added since version 1, as (table, column, definition): a datastore made by an older
# velotui gains them at its next start.
ADDED_COLUMNS = (
    ("clients", "revoked", "REAL"),
    ("flows", "max_logs", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "max_log_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "max_uploads", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "logs", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "log_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "logs_dropped", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "uploads", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "max_logs", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "max_log_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "max_uploads", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "draining", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "artifacts", "TEXT NOT NULL DEFAULT ''"),
    ("flows", "condition", "TEXT NOT NULL DEFAULT ''"),
    ("flows", "hold", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "stage", "TEXT NOT NULL DEFAULT ''"),
    ("hunt_clients", "condition_rows", "BLOB"),
    ("hunts", "start_at", "REAL"),
    ("hunts", "max_errors", "INTEGER NOT NULL DEFAULT 0"),
    ("hunts", "max_errors_percent", "REAL NOT NULL DEFAULT 0"),
    ("hunts", "archived", "REAL"),
    ("hunts", "copied_from", "TEXT NOT NULL DEFAULT ''"),
    ("flows", "artifacts", "TEXT NOT NULL DEFAULT ''"),
    ("audit", "outcome", "TEXT NOT NULL DEFAULT 'allowed'"),
    ("audit", "reason", "TEXT"),
    ("audit", "previous", "TEXT NOT NULL DEFAULT ''"),
    ("audit", "hash", "TEXT NOT NULL DEFAULT ''"),
    # The hunt's one recruitment budget, shared by every frontend (NULL: full).
    ("hunts", "rate_tokens", "REAL"),
    ("hunts", "rate_refilled", "REAL"),
)


# PostgreSQL reads the same schema with its own names for SQLite's column types: 64-bit integers
# (timestamps in microseconds and byte counts pass 2**31), double precision for REAL (PostgreSQL's
# REAL is 4 bytes), BYTEA for BLOB, identity columns for AUTOINCREMENT, and text compared
# byte-wise (COLLATE "C", SQLite's order) whatever the database's locale, so that pages and
# "who comes before whom" read the same on both.
_POSTGRESQL_TYPES = (
    (r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (r"\bINTEGER\b", "BIGINT"),
    (r"\bREAL\b", "DOUBLE PRECISION"),
    (r"\bBLOB\b", "BYTEA"),
    (r"\bTEXT\b", 'TEXT COLLATE "C"'),
)


def postgresql_ddl(ddl: str) -> str:
    """SQLite DDL of this module (``TABLES``, a column definition of ``ADDED_COLUMNS``) in
    PostgreSQL's spelling."""
    for sqlite_type, postgresql_type in _POSTGRESQL_TYPES:
        ddl = re.sub(sqlite_type, postgresql_type, ddl)
    return ddl


POSTGRESQL_TABLES = postgresql_ddl(TABLES)

# What SQLite has without asking: an export reads stored row batches up to a ``rowid`` taken at
# its start (rows are only ever added), so PostgreSQL's flow_rows gets a column of that name.
POSTGRESQL_EXTRA_COLUMNS = (
    ("flow_rows", "rowid", "BIGINT GENERATED BY DEFAULT AS IDENTITY"),
)
