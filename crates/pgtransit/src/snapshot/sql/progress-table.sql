-- The copy's own bookkeeping on the target: one row per unit (a table or a ctid range of a
-- split table), planned once and marked done in the same transaction as its rows, so a
-- crash at any moment neither loses nor repeats a unit.
CREATE SCHEMA IF NOT EXISTS pgtransit;
CREATE TABLE IF NOT EXISTS pgtransit.copy_progress (
    task          text    NOT NULL,
    relation      text    NOT NULL,
    chunk         int     NOT NULL,
    chunks        int     NOT NULL,
    target_name   text    NOT NULL,
    columns       text    NOT NULL,
    binary_copy   boolean NOT NULL,   -- COPY (FORMAT binary) is safe for every column
    has_key       boolean NOT NULL,   -- a primary key or identity index: chunks may mix snapshots
    first_page    bigint  NOT NULL,
    end_page      bigint,             -- NULL: to the end of the table
    bytes_planned bigint  NOT NULL,
    done          boolean NOT NULL DEFAULT false,
    snapshot_lsn  pg_lsn,             -- the snapshot the unit was copied in: its slot's position
    snapshot      text,               -- ... and its pg_current_snapshot() (xmin:xmax:xips)
    rows_copied   bigint,
    copied_at     timestamptz,
    PRIMARY KEY (task, relation, chunk)
);
CREATE TABLE IF NOT EXISTS pgtransit.copy_state (
    task            text PRIMARY KEY,
    slot            text NOT NULL,
    consistent_lsn  pg_lsn NOT NULL,  -- where the change stream starts
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
